"""Build-time only (scripts/build-deb): write into a package root what is made
from the code rather than kept beside it, so it cannot drift from it:

- a man page per console script, from its argparse parser (argparse-manpage);
- bash and zsh completion per script (shtab: static scripts, so TAB costs no
  Python start-up and no import);
- /etc/ctmanager/*.example, from the example block of each config module's
  docstring (the block tests/unit/test_deb_docs.py loads as a real config).

Usage: python docs.py ROOT   (ctmanager importable: PYTHONPATH=<venv site-packages>)
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import sys
import textwrap
from pathlib import Path

# console script -> module with build_parser(); ctgate (an SSH forced command),
# ctautolink and ctmailmap take no subcommands worth completing but get pages too
PARSERS = {
    "ctmanager": "ctmanager.cli.main",
    "ctagent": "ctmanager.agent.cli",
    "ctstorage": "ctmanager.storagenode.cli",
    "ctbackup": "ctmanager.backupnode.cli",
}
# config module -> the example's name under /etc/ctmanager
EXAMPLES = {
    "ctmanager.manager.config": "manager.toml.example",
    "ctmanager.backupnode.config": "ctbackup.toml.example",
}


def example_block(doc: str) -> str:
    """The first indented block of a module docstring: the config example."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    ") and line.strip())
    end = start
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    return textwrap.dedent("\n".join(lines[start:end])).strip() + "\n"


def parser_of(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(module).build_parser()  # type: ignore[no-any-return]


def man_page(parser: argparse.ArgumentParser, version: str) -> str:
    from argparse_manpage.manpage import Manpage

    data = {"project_name": "ctmanager", "version": version, "manual_title": "ctmanager manual",
            "manual_section": "1", "description": (parser.description or "").split("\n")[0]}
    return str(Manpage(parser, _data=data, format="single-commands-section"))


def main(argv: list[str]) -> int:
    import shtab

    from ctmanager import __version__

    root = Path(argv[1])
    man = root / "usr/share/man/man1"
    bash = root / "usr/share/bash-completion/completions"
    zsh = root / "usr/share/zsh/vendor-completions"
    for folder in (man, bash, zsh, root / "etc/ctmanager"):
        folder.mkdir(parents=True, exist_ok=True)
    for name, module in PARSERS.items():
        parser = parser_of(module)
        parser.prog = name
        (man / f"{name}.1.gz").write_bytes(gzip.compress(man_page(parser, __version__).encode(), mtime=0))
        (bash / name).write_text(shtab.complete(parser, shell="bash"))
        (zsh / f"_{name}").write_text(shtab.complete(parser, shell="zsh"))
    for module, example in EXAMPLES.items():
        doc = importlib.import_module(module).__doc__ or ""
        (root / "etc/ctmanager" / example).write_text(example_block(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
