"""Where templates are found, in order (first hit wins per file):

1. $CTMANAGER_TEMPLATES (os.pathsep-separated folders): site overrides;
2. the source checkout's `templates/` (running from a clone or an editable install);
3. `<prefix>/share/ctmanager/templates` of the running Python (a plain `pip install .`),
   the user base, /usr/local and /usr.
"""

from __future__ import annotations

import os
import site
import sysconfig
from pathlib import Path

from .errors import InputError

ENV_VAR = "CTMANAGER_TEMPLATES"
_SHARE = Path("share") / "ctmanager" / "templates"


def template_dirs() -> list[Path]:
    candidates: list[Path] = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    candidates.append(Path(__file__).resolve().parent.parent / "templates")
    candidates.append(Path(sysconfig.get_path("data")) / _SHARE)
    candidates.append(Path(site.getuserbase()) / _SHARE)
    candidates += [Path("/usr/local") / _SHARE, Path("/usr") / _SHARE]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c not in seen:
            seen.append(c)
    return seen


def find_dc_template(ref: str) -> Path:
    """A DC template by path, or by name on the search path (`example` -> dc/example.toml)."""
    path = Path(ref)
    if path.is_file():
        return path
    if "/" not in ref and not ref.endswith(".toml"):
        for d in template_dirs():
            hit = d / "dc" / f"{ref}.toml"
            if hit.is_file():
                return hit
    searched = ", ".join(str(d / "dc") for d in template_dirs()) or "(no template folders found)"
    raise InputError(f"no DC template {ref!r}: not a file, and not a name found in {searched}")
