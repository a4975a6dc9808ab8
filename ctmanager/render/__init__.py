"""Config rendering: CT files (OpenVZ, LXC, resolv.conf) and storage exports."""

from .engine import Engine
from .tree import RenderReport, render_tree

__all__ = ["Engine", "RenderReport", "render_tree"]
