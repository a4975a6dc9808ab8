"""Versioned schema, one history for both backends.

The history is migrations.py: `MIGRATIONS[i]` takes a store from version i to
i+1. Versions up to BASELINE_VERSION were written for SQLite only (they upgrade
old store files); a new store, on either backend, is created from BASELINE, the
schema at that version in SQL both read, then takes the migrations after it,
which must be portable too. A test holds the two paths to the same schema.

Portable here means: DOUBLE PRECISION for epoch seconds (PostgreSQL's REAL is
float4), BIGINT for sizes, no column called ctid (a PostgreSQL system column),
and `{serial}` for an id the store assigns (a rowid alias on SQLite, an identity
column on PostgreSQL). On PostgreSQL every TEXT column compares bytewise
(COLLATE "C"), as SQLite does, so lists sort the same on both.
"""

from __future__ import annotations

import re

from .migrations import MIGRATIONS, STEPS, Step

__all__ = ["BASELINE", "BASELINE_VERSION", "MIGRATIONS", "STEPS", "VERSION", "Step", "floor", "statements",
           "upgrade_path"]

BASELINE_VERSION = 10
BASELINE = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE racks (
    slot         INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    network      TEXT NOT NULL UNIQUE,
    manifest     TEXT NOT NULL,
    installed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE nodes (
    hostname TEXT PRIMARY KEY,
    rack     INTEGER NOT NULL REFERENCES racks(slot),
    position INTEGER NOT NULL,
    sku      TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('compute', 'storage')),
    serial   TEXT NOT NULL UNIQUE,
    mac      TEXT NOT NULL UNIQUE,
    ip       TEXT NOT NULL UNIQUE,
    drained  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rack, position)
);
CREATE TABLE tenants (
    name       TEXT PRIMARY KEY,
    rack       INTEGER NOT NULL REFERENCES racks(slot),
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE cts (
    ct_id      INTEGER PRIMARY KEY,
    hostname   TEXT NOT NULL UNIQUE,
    rack       INTEGER NOT NULL REFERENCES racks(slot),
    tenant     TEXT REFERENCES tenants(name),
    service    TEXT,
    env        TEXT NOT NULL,
    ip         TEXT NOT NULL UNIQUE,
    storage    TEXT NOT NULL REFERENCES nodes(hostname),
    admst      TEXT NOT NULL CHECK (admst IN ('UP', 'DOWN')),
    memory     BIGINT NOT NULL,
    swap       BIGINT NOT NULL,
    disk       BIGINT NOT NULL,
    cpus       INTEGER NOT NULL,
    cpuunits   INTEGER NOT NULL,
    cpulimit   INTEGER NOT NULL,
    apps       TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX cts_rack ON cts(rack);
CREATE INDEX cts_tenant ON cts(tenant);
CREATE INDEX cts_storage ON cts(storage);
CREATE TABLE routes (
    tenant  TEXT NOT NULL REFERENCES tenants(name),
    service TEXT NOT NULL,
    target  TEXT NOT NULL,
    PRIMARY KEY (tenant, service)
);
CREATE INDEX routes_target ON routes(target);
CREATE TABLE observed (
    ct_id INTEGER PRIMARY KEY,
    hn    TEXT,
    opst  TEXT NOT NULL CHECK (opst IN ('UP', 'DOWN', 'UNKNOWN')),
    since DOUBLE PRECISION
);
CREATE TABLE events (
    id      {serial},
    at      DOUBLE PRECISION NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE placements (
    ct_id     INTEGER PRIMARY KEY,
    hn        TEXT NOT NULL,
    placed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE rejections (
    ct_id  INTEGER NOT NULL,
    hn     TEXT NOT NULL,
    until  DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (ct_id, hn)
);
CREATE TABLE removed (
    ct_id      INTEGER PRIMARY KEY,
    hostname   TEXT NOT NULL,
    purge      INTEGER NOT NULL DEFAULT 0,
    removed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE hn_reports (
    hn          TEXT PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    body        TEXT NOT NULL
);
CREATE TABLE dns_published (
    name   TEXT NOT NULL,
    rdtype TEXT NOT NULL CHECK (rdtype IN ('A', 'CNAME')),
    ttl    INTEGER NOT NULL,
    vals   TEXT NOT NULL,
    at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, rdtype)
);
CREATE TABLE dns_conflicts (
    name   TEXT PRIMARY KEY,
    rdtype TEXT NOT NULL,
    detail TEXT NOT NULL,
    at     DOUBLE PRECISION NOT NULL
);
CREATE TABLE dns_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE path_routes (
    tenant  TEXT NOT NULL DEFAULT '',
    path    TEXT NOT NULL,
    service TEXT NOT NULL,
    strip   INTEGER NOT NULL DEFAULT 0,
    allow   TEXT NOT NULL DEFAULT '[]',
    deny    TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant, path)
);
CREATE TABLE socks_acls (
    app  TEXT NOT NULL,
    dest TEXT NOT NULL,
    port INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, dest, port)
);
CREATE TABLE journal (
    id          {serial},
    at          DOUBLE PRECISION NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('start', 'stop', 'destroy', 'set')),
    ct_id       INTEGER NOT NULL,
    hn          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    purge       INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'rejected', 'failed')),
    detail      TEXT NOT NULL DEFAULT '',
    finished_at DOUBLE PRECISION
);
CREATE INDEX journal_pending ON journal(state) WHERE state = 'pending';
CREATE TABLE crash_loops (
    ct_id INTEGER PRIMARY KEY,
    since DOUBLE PRECISION NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE ctids_used (
    ct_id    INTEGER PRIMARY KEY,
    hostname TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL
);
"""

SERIAL = {"sqlite": "INTEGER PRIMARY KEY", "postgresql": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"}
SERIAL_COLUMNS = (("events", "id"), ("journal", "id"), ("moves", "id"))  # their sequences follow a copy (store copy)


def statements(script: str, backend: str) -> list[str]:
    """A script's statements in one backend's dialect (executescript would commit
    mid-way; comments go)."""
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    code = code.replace("{serial}", SERIAL[backend])
    if backend == "postgresql":
        code = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', code)
    return [stmt.strip() for stmt in code.split(";") if stmt.strip()]


def upgrade_path(current: int) -> list[tuple[int, str]]:
    """(version after, script) to take a store from `current` to VERSION; a new
    store (0) starts at the baseline."""
    if current == 0:
        return [(BASELINE_VERSION, BASELINE)] + [(i + 1, MIGRATIONS[i]) for i in range(BASELINE_VERSION, VERSION)]
    return [(i + 1, MIGRATIONS[i]) for i in range(current, VERSION)]


def floor(version: int) -> int:
    """The compatibility floor of a store at `version` (at most VERSION): the oldest
    schema whose code still works on it, the largest `compatible_with` of its steps."""
    return max((step.compatible_with for step in STEPS[:version]), default=0)


def tables() -> list[str]:
    """Every table of a new store, in creation order (referenced before referencing)."""
    scripts = [BASELINE, *MIGRATIONS[BASELINE_VERSION:]]
    return [t for script in scripts for t in re.findall(r"CREATE TABLE (\w+)", script)]


VERSION = len(MIGRATIONS)
