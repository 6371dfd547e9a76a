"""Embed ``summary.md`` in the README between two markers, so its figures come from a command.

Everything between ``<!-- results:begin -->`` and ``<!-- results:end -->`` belongs to
``brainedge results --readme README.md``; the rest of the README is left as it is. Links in
the summary are rewritten to point into the results folder, as seen from the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from brainedge.errors import ConfigError
from brainedge.manifest import atomic_path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
_LINK = re.compile(r"\]\((?!https?://|/|#)([^)]+)\)")


def embed_summary(readme: Path, summary: str, results_dir: Path, provenance: str) -> None:
    """Replace what is between the markers with ``provenance`` followed by ``summary``."""
    text = Path(readme).read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"{readme} needs exactly one {BEGIN} followed by one {END} line "
                          "where the results summary goes")
    prefix = Path(os.path.relpath(results_dir, Path(readme).parent)).as_posix()
    body = _LINK.sub(lambda m: f"]({prefix}/{m.group(1)})",
                     provenance + "\n\n" + _demote_headings(summary).strip())
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with atomic_path(Path(readme)) as tmp:
        tmp.write_text(f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}", encoding="utf-8")


def _demote_headings(markdown: str) -> str:
    """The summary's ``#`` title and ``##`` sections sit under a README ``##`` section."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("# "):
            continue
        lines.append("#" + line if line.startswith("#") else line)
    return "\n".join(lines)
