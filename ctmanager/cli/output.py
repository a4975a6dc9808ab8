"""CLI output: aligned tables for humans, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: Any = None) -> None:
    out = out or sys.stdout
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            if len(c) > widths[i]:
                widths[i] = len(c)
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in cells]
    out.write("\n".join(lines) + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return str(value)


def when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def age(seconds: float | None) -> str | None:
    """A report age for humans: 0.4s, 12s, 5m, 3h."""
    if seconds is None:
        return None
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def emit_json(data: Any) -> None:
    sys.stdout.write(json_text(data) + "\n")


def json_text(data: Any, level: int = 0) -> str:
    """Objects indented, and each element of a list on one line (a CT, a route,
    an event: greppable, and encoded by json's C encoder; `indent=` would send
    10,000 rows through its pure-Python one, most of `status --json`'s time)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(data, dict) and data:
        body = ",\n".join(f"{inner}{json.dumps(str(k))}: {json_text(v, level + 1)}" for k, v in data.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(data, (list, tuple)) and data:
        return "[\n" + ",\n".join(inner + json.dumps(item) for item in data) + "\n" + pad + "]"
    return json.dumps(data)
