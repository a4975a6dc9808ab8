"""Rows -> typed values, checked again on the way out.

The CLI validates everything it writes, but the store is a file: anything else
(a script with sqlite3, a restored backup, a bug) can write into it. Every value
read here lands in a rendered config, a zone, a spec or a shell command, so each
row passes the same validators as input did; a damaged row is a one-line
StoreError naming it, never a directive in `lxc/<CTID>.config`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from .. import validate as v
from ..dc.model import Ct, Node, Resources, Route
from ..errors import InputError, StoreError
from .db import Row

T = TypeVar("T")
RESOURCE_MAX = {"memory": 1 << 50, "swap": 1 << 50, "disk": 1 << 56, "cpus": 4096, "cpuunits": 500_000,
                "cpulimit": 409_600}


def checked(what: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except (InputError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise StoreError(f"damaged store row: {what}: {_short(exc)} (not written by ctmanager: "
                         "fix the row or restore a backup)") from None


def ct_from_row(row: Row) -> Ct:
    return checked(f"CT {_ident(row['ct_id'])}", lambda: _ct(row))


def placed(row: Row) -> tuple[int, int]:
    """A CT row's (CTID, rack): what file and folder names are made of. Asked for
    every CT on every render, changed or not: the usual row costs two type checks."""
    ctid, rack = row["ct_id"], row["rack"]
    if type(ctid) is int and type(rack) is int and 0 < ctid <= v.MAX_CTID and v.SLOT_MIN <= rack <= v.SLOT_MAX:
        return ctid, rack
    return checked(f"CT {_ident(row['ct_id'])}", lambda: (
        v.integer(row["ct_id"], "ctid", minimum=1, maximum=v.MAX_CTID), v.slot(row["rack"], "rack")))


def node_from_row(row: Row) -> Node:
    return checked(f"node {_ident(row['hostname'])}", lambda: _node(row))


def route_from_row(row: Row) -> Route:
    return checked(f"route {_ident(row[0])}/{_ident(row[1])}", lambda: Route(
        v.label(row[0], "tenant"), v.label(row[1], "service"), v.label(row[2], "target")))


def json_labels(text: object, field: str) -> tuple[str, ...]:
    """A JSON list of labels (a CT's apps)."""
    items = json.loads(str(text))
    if not isinstance(items, list):
        raise InputError("must be a JSON list", where=field)
    return tuple(v.label(a, field) for a in items)


def _ct(row: Row) -> Ct:
    return Ct(
        ctid=v.integer(row["ct_id"], "ctid", minimum=1, maximum=v.MAX_CTID),
        hostname=v.hostname(row["hostname"], "hostname"),
        rack=v.slot(row["rack"], "rack"),
        tenant=_label_or_none(row["tenant"], "tenant"),
        service=_label_or_none(row["service"], "service"),
        env=v.label(row["env"], "env"),
        ip=str(v.ipv4(row["ip"], "ip")),
        storage=v.label(row["storage"], "storage"),
        admst="UP" if _one_of(row["admst"], "admst", ("UP", "DOWN")) == "UP" else "DOWN",
        resources=Resources(**{k: v.integer(row[k], k, minimum=0, maximum=m) for k, m in RESOURCE_MAX.items()}),
        apps=json_labels(row["apps"], "apps"),
    )


def _node(row: Row) -> Node:
    return Node(
        hostname=v.label(row["hostname"], "hostname"),
        rack=v.slot(row["rack"], "rack"),
        position=v.position(row["position"], "position"),
        sku=v.label(row["sku"], "sku"),
        role=_one_of(row["role"], "role", ("compute", "storage")),
        serial=v.serial(row["serial"], "serial"),
        mac=v.mac(row["mac"], "mac"),
        ip=str(v.ipv4(row["ip"], "ip")),
        drained=bool(row["drained"]),
    )


def _label_or_none(value: Any, field: str) -> str | None:
    return None if value is None else v.label(value, field)


def _one_of(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"must be one of {', '.join(allowed)} (got {value!r})", where=field)
    return str(value)


def _ident(value: object) -> str:
    """A row's name for the message, printable whatever it holds."""
    return str(value).encode("unicode_escape").decode("ascii")[:80]


def _short(exc: BaseException) -> str:
    return str(exc).encode("unicode_escape").decode("ascii")[:300] or type(exc).__name__
