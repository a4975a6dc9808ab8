"""ctmanager — container-platform manager for templated racks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__version__ = "0.2.0"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """`--version` on a console script: every one says the same version (a rolling upgrade is watched by it)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
