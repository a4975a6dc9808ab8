"""The lab's one way to run a command (on the host, or in a node's network
namespace) and its error: every lab module below `rack` uses these, so they
live apart from it."""

from __future__ import annotations

import subprocess

from ..errors import CtmError


class LabError(CtmError):
    pass


def sh(*argv: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    p = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(full)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}")
    return p
