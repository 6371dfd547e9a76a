"""Build the emulated Raspberry Pi environment once, in an ignored folder (``.arm64/``).

Three parts, each rebuilt only when what it was built from changes (a stamp file holds the key):

- ``qemu/``: QEMU user-mode >= 8.1 from bookworm-backports (bookworm's 7.2 passes the host's
  /proc/cpuinfo through and ``import onnxruntime`` segfaults). Its static ``qemu-aarch64``
  runs as is: no binfmt, no chroot, nothing installed on the system.
- ``rootfs/``: bookworm's arm64 Python 3.11 and the C/C++ runtime libraries, unpacked with
  ``dpkg -x``. apt runs with a private APT_CONFIG and private state and cache folders, so the
  system's apt is never touched.
- ``site/``: the aarch64 wheels of ``brainedge[edge]`` (and pytest), pinned by constraints.txt,
  installed by the host's pip for the target platform. Rebuilt when constraints.txt or the
  requirements in pyproject.toml change.

The repository itself goes on PYTHONPATH, so the code under test is the working tree's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import tomllib
from arm64_apt import DebianMirrors, find_debian_mirrors, host_codename, read_host_sources

# Bump to rebuild qemu/ and rootfs/ everywhere (e.g. after changing the package list).
BUILD_VERSION = "1"
ROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1")
QEMU_PACKAGE = "qemu-user"
MIN_QEMU = (8, 1)
PYTHON_VERSION = "3.11"
PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                 "manylinux_2_28_aarch64")
# Of the dev extra, only what runs the arm64 test subset (no ruff, no selenium).
DEV_PACKAGES_NEEDED = ("pytest", "pytest-timeout")
# Host network settings (proxy, retries, date checks) are kept; hooks and sources are not.
_ACQUIRE_KEPT = re.compile(r"^Acquire::(?!IndexTargets|Changelogs|cdrom)\S+ ")


@dataclass(frozen=True)
class Layout:
    base: Path

    @property
    def qemu(self) -> Path:
        return self.base / "qemu" / "qemu-aarch64"

    @property
    def rootfs(self) -> Path:
        return self.base / "rootfs"

    @property
    def python(self) -> Path:
        return self.rootfs / "usr" / "bin" / f"python{PYTHON_VERSION}"

    @property
    def site(self) -> Path:
        return self.base / "site"

    @property
    def pycache(self) -> Path:
        """Bytecode of the emulated runs, kept out of the working tree's __pycache__."""
        return self.base / "pycache"


class BuildError(RuntimeError):
    """A part of the environment could not be built; the message says what failed."""


def log(message: str) -> None:
    print(f"[arm64-env] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``, failing with its output and the command line when it fails."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"command failed ({result.returncode}): {' '.join(cmd)}\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def key_of(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def ensure(folder: Path, key: str, build: Callable[[Path], None]) -> bool:
    """Build ``folder`` unless its stamp holds ``key``; True if it was (re)built.

    Built into a sibling ``.partial`` folder and renamed into place with the stamp last, so an
    interrupted build is never taken for a finished one.
    """
    stamp = folder / ".stamp"
    if stamp.is_file() and stamp.read_text() == key:
        return False
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.monotonic()
    build(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    stamp.write_text(key)
    log(f"built {folder.name}/ in {time.monotonic() - start:.0f} s")
    return True


# --- apt, privately -----------------------------------------------------------------------------

def host_acquire_settings() -> str:
    """The machine's ``Acquire::`` settings (proxies and the like), as apt.conf lines."""
    dump = run(["apt-config", "dump"]).stdout
    return "".join(line + "\n" for line in dump.splitlines() if _ACQUIRE_KEPT.match(line))


def private_apt(folder: Path, arch: str, sources: str) -> dict[str, str]:
    """An apt that reads only ``sources`` and keeps its state under ``folder``: its env."""
    for sub in ("sources.list.d", "apt.conf.d", "preferences.d", "state/lists/partial",
                "cache/archives/partial"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "sources.list").write_text(sources)
    (folder / "state" / "status").touch()
    (folder / "apt.conf.d" / "00host-network").write_text(host_acquire_settings())
    conf = folder / "apt.conf"
    conf.write_text("\n".join([
        f'Dir::Etc::main "{conf}";',
        f'Dir::Etc::parts "{folder / "apt.conf.d"}";',
        f'Dir::Etc::sourcelist "{folder / "sources.list"}";',
        f'Dir::Etc::sourceparts "{folder / "sources.list.d"}";',
        f'Dir::Etc::preferences "{folder / "preferences"}";',
        f'Dir::Etc::preferencesparts "{folder / "preferences.d"}";',
        f'Dir::State "{folder / "state"}";',
        f'Dir::State::status "{folder / "state" / "status"}";',
        f'Dir::Cache "{folder / "cache"}";',
        f'APT::Architecture "{arch}";',
        f'APT::Architectures {{ "{arch}"; }};',
        'APT::Install-Recommends "false";',
        'APT::Sandbox::User "root";',  # the private folders belong to us, not to _apt
        'Acquire::Languages "none";',
        "",
    ]))
    return {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}


def apt_get(env: dict[str, str], *args: str, cwd: Path | None = None) -> None:
    run(["apt-get", "-q", "-y", *args], env=env, cwd=cwd)


def unpack(debs: Iterable[Path], target: Path) -> int:
    count = 0
    for deb in sorted(debs):
        run(["dpkg-deb", "-x", str(deb), str(target)])
        count += 1
    return count


# --- the three parts ----------------------------------------------------------------------------

def qemu_version(qemu: Path) -> tuple[int, int]:
    out = run([str(qemu), "--version"]).stdout
    match = re.search(r"version (\d+)\.(\d+)", out)
    if not match:
        raise BuildError(f"{qemu} --version printed no version: {out!r}")
    return int(match.group(1)), int(match.group(2))


def build_qemu(target: Path, mirrors: DebianMirrors, work: Path) -> None:
    host_arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    env = private_apt(work / "apt-host", host_arch, mirrors.backports_sources(host_arch))
    log(f"QEMU: {QEMU_PACKAGE} from bookworm-backports ({host_arch})")
    apt_get(env, "update")
    debs = work / "qemu-debs"
    debs.mkdir(parents=True, exist_ok=True)
    apt_get(env, "download", QEMU_PACKAGE, cwd=debs)
    unpacked = work / "qemu-unpacked"
    unpack(debs.glob("*.deb"), unpacked)
    static = unpacked / "usr" / "bin" / "qemu-aarch64"
    if not static.is_file():
        raise BuildError(f"{QEMU_PACKAGE} has no usr/bin/qemu-aarch64; the package layout "
                           "changed, see deploy/arm64-check/arm64_env.py")
    # Only the aarch64 emulator (14 MB) is kept; the package holds every other target too.
    qemu = target / "qemu-aarch64"
    shutil.copy2(static, qemu)
    if qemu_version(qemu) < MIN_QEMU:
        raise BuildError(f"{qemu} is QEMU {qemu_version(qemu)}, older than {MIN_QEMU}: "
                           "import onnxruntime crashes under it")


def build_rootfs(target: Path, mirrors: DebianMirrors, work: Path) -> None:
    env = private_apt(work / "apt-arm64", "arm64", mirrors.arm64_sources())
    log(f"rootfs: bookworm arm64 {' '.join(ROOT_PACKAGES)} and their dependencies")
    apt_get(env, "update")
    apt_get(env, "install", "--download-only", *ROOT_PACKAGES)
    count = unpack((work / "apt-arm64" / "cache" / "archives").glob("*.deb"), target)
    python = target / "usr" / "bin" / f"python{PYTHON_VERSION}"
    if not python.is_file():
        raise BuildError(f"the arm64 packages unpacked without {python}")
    log(f"rootfs: {count} packages unpacked")


def requirements(pyproject: Path) -> list[str]:
    """brainedge[edge]'s requirements and the test runner's, from pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    dev = [r for r in extras.get("dev", [])
           if re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] in DEV_PACKAGES_NEEDED]
    return [*project["dependencies"], *extras.get("edge", []), *dev]


def build_site(target: Path, repo: Path) -> None:
    reqs = requirements(repo / "pyproject.toml")
    log(f"site: {len(reqs)} requirements as aarch64 wheels under constraints.txt")
    platforms = [arg for p in PIP_PLATFORMS for arg in ("--platform", p)]
    # The machine's pip configuration (index, mirrors, certificates) applies as it is.
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target",
         str(target), "--only-binary=:all:", "--python-version", PYTHON_VERSION,
         "--implementation", "cp", *platforms, "-c", str(repo / "constraints.txt"), *reqs])
    if (target / "tensorflow").exists():
        raise BuildError("TensorFlow ended up in the arm64 site; the edge extra must not "
                           "depend on it")


def precompile(layout: Layout, folders: list[Path]) -> None:
    """Compile bytecode natively into the emulated runs' cache: the same 3.11 bytecode, made in
    seconds instead of the minutes it takes under emulation. Up-to-date files are skipped."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(layout.pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run([sys.executable, "-m", "compileall", "-q", "-j", "0",
         *(str(f) for f in folders if f.is_dir())], env=env)


def build(base: Path, repo: Path) -> Layout:
    """Make sure every part of the environment is there and current; return where it is."""
    layout = Layout(base)
    work = base / "work"
    mirrors: DebianMirrors | None = None

    def debian() -> DebianMirrors:
        nonlocal mirrors
        if mirrors is None:
            mirrors = find_debian_mirrors(read_host_sources(), host_codename())
        return mirrors

    try:
        ensure(base / "qemu", key_of(BUILD_VERSION, QEMU_PACKAGE),
               lambda t: build_qemu(t, debian(), work))
        ensure(layout.rootfs, key_of(BUILD_VERSION, *ROOT_PACKAGES),
               lambda t: build_rootfs(t, debian(), work))
        # What the site is built from: the pins and the requirements pyproject.toml names
        # (not the whole file, which changes for reasons that do not touch the wheels).
        site_key = key_of(BUILD_VERSION, *PIP_PLATFORMS, (repo / "constraints.txt").read_bytes(),
                          *requirements(repo / "pyproject.toml"))
        if ensure(layout.site, site_key, lambda t: build_site(t, repo)):
            shutil.rmtree(layout.pycache, ignore_errors=True)
        packages = [p for p in repo.iterdir() if (p / "__init__.py").is_file()]
        precompile(layout, [layout.site, *packages, repo / "deploy"])
    finally:
        shutil.rmtree(work, ignore_errors=True)  # apt lists and .deb files: not needed again
    return layout


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    print(build(root / ".arm64", root))
