"""Debian mirrors for the arm64 userland, read from this machine's own apt configuration.

No host name is written into the repository: the check fetches from whichever Debian mirror
the machine (or CI runner) is already configured for, found in /etc/apt/sources.list and
/etc/apt/sources.list.d/ (one-line ``.list`` and deb822 ``.sources`` files). A machine whose
apt does not point at Debian (an Ubuntu runner, say) names its mirrors in the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Raspberry Pi OS 64-bit is based on Debian bookworm: the userland is bookworm's, whatever the
# host runs. QEMU comes from bookworm-backports (bookworm's own 7.2 crashes onnxruntime).
TARGET_SUITE = "bookworm"
MIRROR_ENV = "ARM64_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "ARM64_DEBIAN_SECURITY_MIRROR"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class MirrorError(RuntimeError):
    """The apt configuration names no usable Debian mirror."""


@dataclass(frozen=True)
class SourceEntry:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    signed_by: str | None = None


@dataclass(frozen=True)
class DebianMirrors:
    archive: str
    security: str
    keyring: str

    def arm64_sources(self) -> str:
        """sources.list lines of the bookworm arm64 userland (main, updates, security)."""
        opts = f"[arch=arm64 signed-by={self.keyring}]"
        s = TARGET_SUITE
        return (f"deb {opts} {self.archive} {s} {s}-updates main\n"
                f"deb {opts} {self.security} {s}-security main\n")

    def backports_sources(self, host_arch: str) -> str:
        """sources.list line of bookworm-backports for the host's own architecture (QEMU)."""
        return (f"deb [arch={host_arch} signed-by={self.keyring}] {self.archive} "
                f"{TARGET_SUITE}-backports main\n")


def parse_one_line(text: str) -> list[SourceEntry]:
    """``deb [options] URI suite component...`` lines of a sources.list file."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if match:
            kind, opts, rest = match.groups()
            options = dict(o.split("=", 1) for o in opts.split() if "=" in o)
        else:
            kind, _, rest = line.partition(" ")
        fields = rest.split()
        if len(fields) < 2:
            continue
        entries.append(SourceEntry((kind,), (fields[0],), (fields[1],),
                                   options.get("signed-by")))
    return entries


def parse_deb822(text: str) -> list[SourceEntry]:
    """Stanzas of a deb822 ``.sources`` file; ``Enabled: no`` stanzas are skipped."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key is not None:  # continuation line (e.g. inline keys)
                fields[key] += "\n" + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "uris" not in fields or "suites" not in fields:
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        signed_by = fields.get("signed-by")
        if signed_by and "\n" in signed_by:  # an inline key block: not a file path
            signed_by = None
        entries.append(SourceEntry(tuple(fields.get("types", "deb").split()),
                                   tuple(fields["uris"].split()),
                                   tuple(fields["suites"].split()), signed_by))
    return entries


def read_host_sources(etc_apt: Path = Path("/etc/apt")) -> list[SourceEntry]:
    """Every enabled entry of the machine's apt sources (files apt itself would read)."""
    entries: list[SourceEntry] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        entries += parse_one_line(main.read_text())
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line(path.read_text())
            elif path.suffix == ".sources":
                entries += parse_deb822(path.read_text())
    return entries


def find_debian_mirrors(entries: list[SourceEntry], codename: str,
                        env: dict[str, str] | None = None) -> DebianMirrors:
    """The archive and security mirrors among ``entries``, for a Debian host of ``codename``.

    The archive is the entry serving the release itself (``bookworm``), security the one
    serving ``bookworm-security``; any release works, since the suites are rewritten to
    bookworm. The environment variables win over the configuration.
    """
    env = dict(os.environ if env is None else env)
    debs = [e for e in entries if "deb" in e.types]
    archive = next((e for e in debs for s in e.suites if s == codename), None)
    security = next((e for e in debs for s in e.suites
                     if s in (f"{codename}-security", f"{codename}/updates")), None)
    archive_uri = env.get(MIRROR_ENV) or (archive.uris[0] if archive else None)
    if not archive_uri:
        raise MirrorError(
            f"no Debian mirror for '{codename}' in /etc/apt/sources.list or "
            f"/etc/apt/sources.list.d/; this check needs Debian's arm64 packages. Set "
            f"{MIRROR_ENV} (and {SECURITY_MIRROR_ENV}) to the Debian and Debian-security "
            "mirror URIs this machine may use")
    security_uri = env.get(SECURITY_MIRROR_ENV) or (security.uris[0] if security else None)
    if not security_uri:
        raise MirrorError(
            f"no Debian security mirror for '{codename}-security' in the apt sources; set "
            f"{SECURITY_MIRROR_ENV} to the Debian-security mirror URI this machine may use")
    keyring = (archive.signed_by if archive and archive.signed_by else str(DEFAULT_KEYRING))
    if not Path(keyring).is_file():
        raise MirrorError(f"the Debian archive keyring {keyring} is missing; install the "
                          "debian-archive-keyring package")
    return DebianMirrors(archive_uri.rstrip("/"), security_uri.rstrip("/"), keyring)


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """VERSION_CODENAME of the host (``bookworm`` on this project's machines)."""
    if os_release.is_file():
        for line in os_release.read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return TARGET_SUITE
