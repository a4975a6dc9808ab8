"""Tenant moves in the store: each move's durable record, and the writes the
workflow makes (reconcile/movesteps.py decides, manager/workflows.py steps it from the
destination leader's loop; cli/move.py starts, aborts, lists).

A move row says where the workflow is (phase, step), so whichever process runs
it next resumes there: copy -> cutover (stop, seal, final, start) -> online -> delete
-> done, or rollback -> rolled-back. Every change here is check-then-act in the
caller's transaction. `hold` keeps the tenant's CTs down in whichever rack they
are configured (store/loop.configured reads it). Starting a move and its flip
(the CT rows from one rack to the other, both ways) are operations
(operations/moves.py): what they decide is theirs, the rows they write are here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .. import validate as v
from ..dc.model import rack_name
from ..errors import ConflictError, NotFoundError
from ..reconcile import moving
from ..reconcile.moving import Move, MoveCt
from .db import Row, Store
from .rows import checked

OPEN = tuple(p.value for p in moving.OPEN)
PHASES = moving.PHASES
LOG_KEEP = 40  # lines of a move's own log kept in its row
FIELDS = ("phase", "step", "hold", "flipped", "keep_source", "aborting", "passes", "bytes", "last_delta",
          "deadline", "held_at", "stopped_at", "online_at", "finished_at", "downtime", "error", "hold_version",
          "token", "sealed")


# ---- reading -------------------------------------------------------------------
def _move(row: Row, cts: tuple[MoveCt, ...]) -> Move:
    def build() -> Move:
        phase = str(row["phase"])
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r}")
        routes = {v.label(s, "service"): (v.label(a, "target"), v.label(b, "target"))
                  for s, (a, b) in json.loads(row["routes"]).items()}
        return Move(int(row["id"]), v.label(row["tenant"], "tenant"), int(row["src"]), int(row["dst"]), phase,
                    str(row["step"]), bool(row["hold"]), bool(row["flipped"]), bool(row["precopy"]),
                    bool(row["keep_source"]), bool(row["aborting"]), int(row["bwlimit"]), routes,
                    int(row["passes"]), int(row["bytes"]), int(row["last_delta"]), float(row["created_at"]),
                    float(row["updated_at"]), _opt(row["deadline"]), _opt(row["held_at"]), _opt(row["stopped_at"]),
                    _opt(row["online_at"]), _opt(row["finished_at"]), _opt(row["downtime"]), str(row["error"]),
                    tuple(str(x) for x in json.loads(row["log"])), cts, int(row["hold_version"]), int(row["token"]),
                    bool(row["sealed"]))
    return checked(f"move {row['id']}", build)


def _opt(x: Any) -> float | None:
    return None if x is None else float(x)


def _cts(store: Store, move_id: int) -> tuple[MoveCt, ...]:
    rows = store.query("SELECT ct_id, hostname, src_ip, dst_ip, src_storage, dst_storage, bytes, files "
                       "FROM move_cts WHERE move = ? ORDER BY ct_id", (move_id,))
    return tuple(_move_ct(move_id, r) for r in rows)


def _move_ct(move_id: int, r: Row) -> MoveCt:
    def build() -> MoveCt:
        return MoveCt(v.integer(r[0], "ctid", minimum=1, maximum=v.MAX_CTID), v.hostname(r[1], "hostname"),
                      _ip(r[2]), _ip(r[3]) if r[3] else "", v.label(r[4], "storage"), v.label(r[5], "storage"),
                      int(r[6]), int(r[7]))
    return checked(f"move {move_id} CT {r[0]}", build)


def _ip(text: Any) -> str:
    return str(v.ipv4(text, "ip"))


def get(store: Store, move_id: int) -> Move:
    row = store.one("SELECT * FROM moves WHERE id = ?", (move_id,))
    if row is None:
        raise NotFoundError(f"no move {move_id} (see: ctmanager tenant moves)")
    return _move(row, _cts(store, move_id))


def open_of(store: Store, tenant: str) -> Move | None:
    row = store.one("SELECT * FROM moves WHERE tenant = ? AND finished_at IS NULL", (tenant,))
    return None if row is None else _move(row, _cts(store, int(row["id"])))


def listing(store: Store, *, tenant: str | None = None, open_only: bool = False, limit: int = 50) -> list[Move]:
    where, params = [], []  # type: list[str], list[Any]
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if open_only:
        where.append("finished_at IS NULL")
    sql = "SELECT * FROM moves" + (" WHERE " + " AND ".join(where) if where else "")
    rows = store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [_move(r, _cts(store, int(r["id"]))) for r in reversed(rows)]


def to_run(store: Store, rack: int) -> list[Move]:
    """Open moves into `rack`: its leading manager runs them."""
    rows = store.query("SELECT * FROM moves WHERE dst = ? AND finished_at IS NULL ORDER BY id", (rack,))
    return [_move(r, _cts(store, int(r["id"]))) for r in rows]


def held(store: Store) -> set[str]:
    """Tenants whose CTs are kept down now (a cutover between its stop and its flip)."""
    return {str(r[0]) for r in store.query("SELECT tenant FROM moves WHERE hold = 1 AND finished_at IS NULL")}


def reserved_ips(store: Store) -> set[str]:
    """Addresses an open move may still give back to, or give to, a CT."""
    rows = store.query("SELECT c.src_ip, c.dst_ip FROM move_cts c JOIN moves m ON m.id = c.move "
                       "WHERE m.finished_at IS NULL")
    return {ip for r in rows for ip in r if ip}


def refusals(store: Store, ctid: int, rack: int, now: float) -> dict[str, str]:
    """HN -> why it rejected CT `ctid` lately (rack `rack`'s manager remembers)."""
    return {str(r[0]): str(r[1]) for r in store.query(
        "SELECT hn, reason FROM rejections WHERE ct_id = ? AND rack = ? AND until > ?", (ctid, rack, now))}


def open_routes(store: Store) -> list[tuple[int, str, dict[str, tuple[str, str]]]]:
    """(move, tenant, routes: service -> (target at the source, at the destination))
    of every open move."""
    return [(int(r[0]), str(r[1]), {s: (str(a), str(b)) for s, (a, b) in json.loads(r[2]).items()})
            for r in store.query("SELECT id, tenant, routes FROM moves WHERE finished_at IS NULL")]


# ---- starting one ----------------------------------------------------------------
def tenant_realm(store: Store, tenant: str) -> str:
    row = store.one("SELECT realm FROM tenants WHERE name = ?", (tenant,))
    if row is None:
        raise NotFoundError(f"no tenant {tenant!r} (see: ctmanager tenant list)")
    return v.label(row[0], "realm") if row[0] else ""


def insert(store: Store, m: Move, now: float) -> Move:
    """Record move `m` (its id is given here), each of its CTs without an address
    in the destination yet."""
    store.execute("INSERT INTO moves (tenant, src, dst, phase, step, precopy, keep_source, bwlimit, routes, "
                  "created_at, updated_at, log) VALUES (?, ?, ?, 'copy', '', ?, ?, ?, ?, ?, ?, '[]')",
                  (m.tenant, m.src, m.dst, int(m.precopy), int(m.keep_source), m.bwlimit,
                   json.dumps({s: list(t) for s, t in m.routes.items()}), now, now))
    row = store.one("SELECT id FROM moves WHERE tenant = ? AND finished_at IS NULL", (m.tenant,))
    store.executemany("INSERT INTO move_cts (move, ct_id, hostname, src_ip, dst_ip, src_storage, dst_storage) "
                      "VALUES (?, ?, ?, ?, '', ?, ?)",
                      [(row[0], c.ctid, c.hostname, c.src_ip, c.src_storage, c.dst_storage) for c in m.cts])
    store.event("tenant.move", m.tenant, f"move {row[0]}: {rack_name(m.src)} -> {rack_name(m.dst)}")
    return get(store, int(row[0]))


# ---- the workflow's writes -------------------------------------------------------------
def update(store: Store, move: Move, now: float, say: str = "", **changes: Any) -> Move:
    """Write the fields in `changes` (check-then-act: only while the move is open)
    and add `say` to its log."""
    bad = set(changes) - set(FIELDS)
    if bad:
        raise ValueError(f"not a move field: {', '.join(sorted(bad))}")
    cur = store.one("SELECT finished_at, log FROM moves WHERE id = ?", (move.id,))
    if cur is None or (cur[0] is not None and "finished_at" not in changes):
        raise ConflictError(f"move {move.id} is finished")
    log = json.loads(cur[1])
    if say:
        log = (log + [f"{now:.3f} {say}"])[-LOG_KEEP:]
    cols = dict(changes, updated_at=now, log=json.dumps(log))
    store.execute(f"UPDATE moves SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608 - FIELDS
                  (*(int(x) if isinstance(x, bool) else x for x in cols.values()), move.id))
    if say:
        store.event("move." + str(changes.get("phase", move.phase)), move.tenant, f"move {move.id}: {say}")
    return get(store, move.id)


def record_sizes(store: Store, move: Move, sizes: Iterable[tuple[int, int, int]]) -> None:
    """(CTID, bytes, files) of each CT's /data at the last pass."""
    store.executemany("UPDATE move_cts SET bytes = ?, files = ? WHERE move = ? AND ct_id = ?",
                      [(b, f, move.id, c) for c, b, f in sizes])


def ask_abort(store: Store, move: Move, now: float, *, runner_alive: bool = True) -> Move:
    """Ask the move's runner to roll it back. Without one (the destination rack has
    no leading manager) a move that has not flipped is released here and now: the
    source starts the tenant again, and the move ends (its partial copies are left).
    Once a seal may be on the source's /data (its seal or final step), the move
    stays open, rolling back: only the runner's token lifts that seal."""
    if move.phase not in ("copy", "cutover"):
        hint = ""
        if move.phase == "online" and move.keep_source:
            hint = (f"; delete the source copy (ctmanager tenant move {move.tenant} --delete-source), then move it "
                    f"back if you want it there")
        elif move.phase in ("online", "delete"):
            hint = f"; once it is done, move it back: ctmanager tenant move {move.tenant} --to {rack_name(move.src)}"
        raise ConflictError(f"move {move.id} of {move.tenant} is {move.phase}: too late to abort{hint}")
    if not runner_alive and not move.flipped:
        if move.step in ("seal", "final") or move.sealed:  # its /data may be sealed: only the runner unseals it
            return update(store, move, now, f"aborted by ops while {rack_name(move.dst)} has no leading manager: "
                          f"released at the source here; its /data may be sealed until {rack_name(move.dst)}'s "
                          "manager leads again and unseals it", phase="rollback", step="unseal", hold=False,
                          aborting=False, error="aborted by ops")
        nodes = ", ".join(sorted({c.dst_storage for c in move.cts}))
        return update(store, move, now, f"aborted by ops while {rack_name(move.dst)} has no leading manager: "
                      f"released at the source here; a partial copy on {nodes}, if any, is left there",
                      phase="rolled-back", step="", hold=False, aborting=False, error="aborted by ops",
                      finished_at=now)
    return update(store, move, now, "abort requested", aborting=True)


def set_dst_ip(store: Store, move: Move, ctid: int, ip: str) -> None:
    """CT `ctid`'s address in the move's destination."""
    store.execute("UPDATE move_cts SET dst_ip = ? WHERE move = ? AND ct_id = ?", (ip, move.id, ctid))


def overdue(store: Store, rack: int, now: float, grace: float) -> list[int]:
    """Moves out of `rack` holding its tenants down past their deadline + `grace`."""
    return [int(r[0]) for r in store.query("SELECT id FROM moves WHERE src = ? AND hold = 1 AND flipped = 0 "
                                           "AND finished_at IS NULL AND deadline < ?", (rack, now - grace))]


def release_overdue(store: Store, rack: int, now: float, grace: float, led: Callable[[], set[int]]) -> list[Move]:
    """Moves out of `rack` that hold its tenants down past their deadline + `grace`
    while the destination has no leading manager (`led()`: the racks that have
    one): nobody would ever end the hold. Released here, as a rollback that has
    nothing to flip back; the destination's manager, once back, unseals the
    source's /data (a seal may be on) and cleans up."""
    out = []
    ids = overdue(store, rack, now, grace)
    racks_led = led() if ids else set()
    for move_id in ids:
        m = get(store, move_id)
        if m.dst in racks_led:
            continue
        out.append(update(store, m, now, f"held past its deadline while {rack_name(m.dst)} has no leading manager: "
                          f"released by {rack_name(rack)}'s manager", phase="rollback", step="unseal", hold=False,
                          error=f"{rack_name(m.dst)}'s manager was gone mid-cutover", deadline=now + 300.0))
    return out
