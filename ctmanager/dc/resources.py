"""CT resource requests: parsed once, bounded by the largest compute SKU.

"Absurd" has a concrete meaning here: a CT can never be placed if it asks for
more than one compute server has, so such a request is refused at the boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .. import validate as v
from ..errors import InputError
from .model import Resources, Sku

KEYS = ("memory", "swap", "disk", "cpus", "cpuunits", "cpulimit")
MIN_MEMORY = 64 << 20
MIN_DISK = 256 << 20


def parse(values: Mapping[str, Any], base: Resources | None, limit: Sku | None, field: str) -> Resources:
    """Build Resources from `values` (absent keys come from `base`).

    `limit` is the largest compute SKU; `field` prefixes error locations.
    """
    unknown = [k for k in values if k not in KEYS]
    if unknown:
        raise InputError("unknown resource", where=f"{field}.{unknown[0]}")

    def get(key: str) -> Any:
        if key in values and values[key] is not None:
            return values[key]
        if base is None:
            if key == "cpulimit":
                return None
            raise InputError("is required", where=f"{field}.{key}")
        return getattr(base, key)

    mem_max = limit.memory if limit else None
    disk_max = limit.disk if limit else None
    cpu_max = limit.cpus if limit else 4096
    memory = v.size(get("memory"), f"{field}.memory", minimum=MIN_MEMORY, maximum=mem_max)
    swap = v.size(get("swap"), f"{field}.swap", minimum=0, maximum=mem_max)
    disk = v.size(get("disk"), f"{field}.disk", minimum=MIN_DISK, maximum=disk_max)
    cpus = v.integer(get("cpus"), f"{field}.cpus", minimum=1, maximum=cpu_max)
    cpuunits = v.integer(get("cpuunits"), f"{field}.cpuunits", minimum=8, maximum=500000)
    raw_limit = get("cpulimit")
    # A CPU limit follows the CPU count unless set explicitly.
    if raw_limit is None or ("cpus" in values and "cpulimit" not in values):
        raw_limit = cpus * 100
    cpulimit = v.integer(raw_limit, f"{field}.cpulimit", minimum=1, maximum=cpu_max * 100)
    return Resources(memory, swap, disk, cpus, cpuunits, cpulimit)


def with_overrides(base: Resources, limit: Sku, overrides: Mapping[str, Any], field: str) -> Resources:
    given = {k: val for k, val in overrides.items() if val is not None}
    if not given:
        return base
    return parse(given, base, limit, field)


def as_dict(res: Resources) -> dict[str, int]:
    return {k: getattr(res, k) for k in KEYS}


class Fields(Protocol):
    """Values by column name: a mapping, or a store row (sqlite3.Row is no Mapping)."""

    def __getitem__(self, key: str, /) -> Any: ...


def from_row(row: Fields) -> Resources:
    return Resources(**{k: row[k] for k in KEYS})

