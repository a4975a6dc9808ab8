"""The schema's history: `MIGRATIONS[i]` takes a store from version i to i+1.
Append, never edit, one. Versions up to schema.BASELINE_VERSION were written for
SQLite only (they upgrade old store files); from there on they are portable
(see schema.py for what that means).

Each migration also gets its line in STEPS (at the end): what it does, and
`compatible_with`, the oldest schema version whose code still works on a store
after it: the floor before it for an additive step (a new table, index, or column
with a default, which older code ignores), else the step's own version (a rename,
a changed meaning, values older code cannot read, a rule every writer must keep).
store/versions.py says what code does with a store of another version.
"""

from __future__ import annotations

from typing import NamedTuple

MIGRATIONS: list[str] = [
    # 0 -> 1: configured state, observed state, audit events.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE racks (
        slot         INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        network      TEXT NOT NULL UNIQUE,
        manifest     TEXT NOT NULL,
        installed_at REAL NOT NULL
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
        created_at REAL NOT NULL
    );
    CREATE TABLE cts (
        ctid       INTEGER PRIMARY KEY,
        hostname   TEXT NOT NULL UNIQUE,
        rack       INTEGER NOT NULL REFERENCES racks(slot),
        tenant     TEXT REFERENCES tenants(name),
        service    TEXT,
        env        TEXT NOT NULL,
        ip         TEXT NOT NULL UNIQUE,
        storage    TEXT NOT NULL REFERENCES nodes(hostname),
        admst      TEXT NOT NULL CHECK (admst IN ('UP', 'DOWN')),
        memory     INTEGER NOT NULL,
        swap       INTEGER NOT NULL,
        disk       INTEGER NOT NULL,
        cpus       INTEGER NOT NULL,
        cpuunits   INTEGER NOT NULL,
        cpulimit   INTEGER NOT NULL,
        apps       TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX cts_rack ON cts(rack);
    CREATE INDEX cts_tenant ON cts(tenant);
    CREATE TABLE routes (
        tenant  TEXT NOT NULL REFERENCES tenants(name),
        service TEXT NOT NULL,
        target  TEXT NOT NULL,
        PRIMARY KEY (tenant, service)
    );
    CREATE INDEX routes_target ON routes(target);
    -- Observed state, written by the manager from agent reports (later issues).
    CREATE TABLE observed (
        ctid  INTEGER PRIMARY KEY,
        hn    TEXT,
        opst  TEXT NOT NULL CHECK (opst IN ('UP', 'DOWN', 'UNKNOWN')),
        since REAL
    );
    -- Audit trail: one row per change, newest last.
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      REAL NOT NULL,
        kind    TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail  TEXT NOT NULL DEFAULT ''
    );
    """,
    # v2: picking the least-loaded storage node counts CTs per storage node.
    """
    CREATE INDEX cts_storage ON cts(storage);
    """,
    # v3: the reconcile loop's own state. Placements (where each CT should run),
    # rejections the scheduler remembers, removed-CT tombstones (destroyed on the
    # HNs, then forgotten), the intent journal (written before an action runs, so a
    # restarted manager resumes), and the newest report of every HN.
    """
    CREATE TABLE placements (
        ctid      INTEGER PRIMARY KEY,
        hn        TEXT NOT NULL,
        placed_at REAL NOT NULL
    );
    CREATE TABLE rejections (
        ctid   INTEGER NOT NULL,
        hn     TEXT NOT NULL,
        until  REAL NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (ctid, hn)
    );
    CREATE TABLE removed (
        ctid       INTEGER PRIMARY KEY,
        hostname   TEXT NOT NULL,
        purge      INTEGER NOT NULL DEFAULT 0,
        removed_at REAL NOT NULL
    );
    CREATE TABLE journal (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('start', 'stop', 'destroy')),
        ctid        INTEGER NOT NULL,
        hn          TEXT NOT NULL,
        reason      TEXT NOT NULL,
        purge       INTEGER NOT NULL DEFAULT 0,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'rejected', 'failed')),
        detail      TEXT NOT NULL DEFAULT '',
        finished_at REAL
    );
    CREATE INDEX journal_pending ON journal(state) WHERE state = 'pending';
    CREATE TABLE hn_reports (
        hn          TEXT PRIMARY KEY,
        received_at REAL NOT NULL,
        body        TEXT NOT NULL
    );
    """,
    # v4: DNS. `dns_published` is the ownership registry: the record sets ctmanager
    # created and the server confirmed. Only these names are ever changed or
    # deleted; what the store wants but is not here yet is pending (queued).
    # `dns_conflicts` lists names someone else holds, left alone and reported.
    """
    CREATE TABLE dns_published (
        name   TEXT NOT NULL,
        rdtype TEXT NOT NULL CHECK (rdtype IN ('A', 'CNAME')),
        ttl    INTEGER NOT NULL,
        vals   TEXT NOT NULL,
        at     REAL NOT NULL,
        PRIMARY KEY (name, rdtype)
    );
    CREATE TABLE dns_conflicts (
        name   TEXT PRIMARY KEY,
        rdtype TEXT NOT NULL,
        detail TEXT NOT NULL,
        at     REAL NOT NULL
    );
    CREATE TABLE dns_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v5: the edge proxies' path routes: a URL prefix (for every tenant, or one)
    # sent to a tenant routing name (e.g. /experimental/ -> experiments), with
    # per-location ACLs.
    """
    CREATE TABLE path_routes (
        tenant  TEXT NOT NULL DEFAULT '',
        path    TEXT NOT NULL,
        service TEXT NOT NULL,
        strip   INTEGER NOT NULL DEFAULT 0,
        allow   TEXT NOT NULL DEFAULT '[]',
        deny    TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (tenant, path)
    );
    """,
    # v6: outbound SOCKS ACLs: which application may reach which destinations
    # (every CT running that app, by its address). port 0 = any port.
    """
    CREATE TABLE socks_acls (
        app  TEXT NOT NULL,
        dest TEXT NOT NULL,
        port INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, dest, port)
    );
    """,
    # v7: the journal also records `set` (a running CT's new spec, its limits
    # applied live). SQLite cannot alter a CHECK: the table is rebuilt, rows
    # (ids included) and the index kept.
    """
    CREATE TABLE journal_v7 (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('start', 'stop', 'destroy', 'set')),
        ctid        INTEGER NOT NULL,
        hn          TEXT NOT NULL,
        reason      TEXT NOT NULL,
        purge       INTEGER NOT NULL DEFAULT 0,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'done', 'rejected', 'failed')),
        detail      TEXT NOT NULL DEFAULT '',
        finished_at REAL
    );
    INSERT INTO journal_v7 (id, at, kind, ctid, hn, reason, purge, state, detail, finished_at)
        SELECT id, at, kind, ctid, hn, reason, purge, state, detail, finished_at FROM journal;
    DROP TABLE journal;
    ALTER TABLE journal_v7 RENAME TO journal;
    CREATE INDEX journal_pending ON journal(state) WHERE state = 'pending';
    """,
    # v8: CTs the manager found in a crash loop (`count` crashes within the
    # crash window): left down until ops clear the row (ct reset, ct set --admst up).
    """
    CREATE TABLE crash_loops (
        ctid  INTEGER PRIMARY KEY,
        since REAL NOT NULL,
        count INTEGER NOT NULL
    );
    """,
    # v9: every CTID ever given to a CT, kept after the CT and its tombstone are
    # gone: a CTID is never handed out again (its /data may be kept on the storage
    # node, and render would mount it into the newcomer). Stores from before v9
    # register what they still know of: their CTs and tombstones.
    """
    CREATE TABLE ctids_used (
        ctid     INTEGER PRIMARY KEY,
        hostname TEXT NOT NULL,
        at       REAL NOT NULL
    );
    INSERT INTO ctids_used (ctid, hostname, at) SELECT ctid, hostname, created_at FROM cts;
    INSERT INTO ctids_used (ctid, hostname, at) SELECT ctid, hostname, removed_at FROM removed
        WHERE true ON CONFLICT(ctid) DO NOTHING;
    """,
    # v10: the column `ctid` is `ct_id` (PostgreSQL reserves ctid), the schema
    # BASELINE holds from here on.
    """
    ALTER TABLE cts RENAME COLUMN ctid TO ct_id;
    ALTER TABLE observed RENAME COLUMN ctid TO ct_id;
    ALTER TABLE placements RENAME COLUMN ctid TO ct_id;
    ALTER TABLE rejections RENAME COLUMN ctid TO ct_id;
    ALTER TABLE removed RENAME COLUMN ctid TO ct_id;
    ALTER TABLE journal RENAME COLUMN ctid TO ct_id;
    ALTER TABLE crash_loops RENAME COLUMN ctid TO ct_id;
    ALTER TABLE ctids_used RENAME COLUMN ctid TO ct_id;
    """,
    # v11 (portable, like all from here): rack scope. Every row a rack's manager
    # writes and clears carries its rack, so managers of several racks share one
    # store and each touches only its own (a DNS record set's rack is the rack
    # whose manager publishes it). Rows from before (one rack per store
    # then) get the store's only rack; 0 = not known, left to any manager.
    """
    ALTER TABLE observed ADD COLUMN rack INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE removed ADD COLUMN rack INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN rack INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rejections ADD COLUMN rack INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE dns_published ADD COLUMN rack INTEGER NOT NULL DEFAULT 0;
    UPDATE observed SET rack = (SELECT c.rack FROM cts c WHERE c.ct_id = observed.ct_id)
        WHERE ct_id IN (SELECT ct_id FROM cts);
    UPDATE removed SET rack = (SELECT min(slot) FROM racks) WHERE (SELECT count(*) FROM racks) = 1;
    UPDATE journal SET rack = (SELECT min(slot) FROM racks) WHERE (SELECT count(*) FROM racks) = 1;
    UPDATE rejections SET rack = (SELECT min(slot) FROM racks) WHERE (SELECT count(*) FROM racks) = 1;
    UPDATE dns_published SET rack = (SELECT min(slot) FROM racks) WHERE (SELECT count(*) FROM racks) = 1;
    CREATE INDEX observed_rack ON observed(rack);
    """,
    # v12: when the store took each HN's newest report, on the store's own clock
    # (Store.NOW_SQL): `status` and `hn list` compare it with the store's clock,
    # never a manager's wall clock with a CLI machine's. `received_at` stays the
    # manager's own time (its restart reads it against its own clock).
    """
    ALTER TABLE hn_reports ADD COLUMN stored_at DOUBLE PRECISION NOT NULL DEFAULT 0;
    UPDATE hn_reports SET stored_at = received_at;
    """,
    # v13: who leads each rack. One lease row per rack (its epoch only grows: a
    # release ends the lease, the row stays) and one check-in row per manager,
    # for `ctmanager manager status`. They replace the holder rows in meta. Each
    # intent records the epoch it was decided in (`ct history`).
    """
    CREATE TABLE leases (
        rack     INTEGER PRIMARY KEY,
        holder   TEXT NOT NULL,
        instance TEXT NOT NULL,
        detail   TEXT NOT NULL DEFAULT '',
        epoch    BIGINT NOT NULL,
        acquired DOUBLE PRECISION NOT NULL,
        renewed  DOUBLE PRECISION NOT NULL,
        expires  DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE managers (
        rack   INTEGER NOT NULL,
        name     TEXT NOT NULL,
        instance TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        role   TEXT NOT NULL CHECK (role IN ('leader', 'standby', 'stopped')),
        epoch  BIGINT NOT NULL DEFAULT 0,
        ttl    DOUBLE PRECISION NOT NULL,
        seen   DOUBLE PRECISION NOT NULL,
        heard  DOUBLE PRECISION,
        PRIMARY KEY (rack, name)
    );
    DELETE FROM meta WHERE key LIKE 'holder:rack-%';
    ALTER TABLE journal ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    """,
    # v14: tenant moves between racks (durable workflows, store/moves.py) and the
    # realm a tenant is pinned to ('' = anywhere; a rack's realm is its slot range's,
    # from the DC template). One move row per attempt; at most one unfinished per
    # tenant. `hold` = 1: the tenant's CTs are kept down wherever they are configured
    # (cutover). Each CT of a move has a row with where it was and where it goes.
    """
    ALTER TABLE tenants ADD COLUMN realm TEXT NOT NULL DEFAULT '';
    CREATE TABLE moves (
        id          {serial},
        tenant      TEXT NOT NULL,
        src         INTEGER NOT NULL,
        dst         INTEGER NOT NULL,
        phase       TEXT NOT NULL CHECK (phase IN ('copy', 'cutover', 'online', 'delete', 'done',
                                                   'rollback', 'rolled-back')),
        step        TEXT NOT NULL DEFAULT '',
        hold        INTEGER NOT NULL DEFAULT 0,
        flipped     INTEGER NOT NULL DEFAULT 0,
        precopy     INTEGER NOT NULL DEFAULT 1,
        keep_source INTEGER NOT NULL DEFAULT 0,
        aborting    INTEGER NOT NULL DEFAULT 0,
        bwlimit     BIGINT NOT NULL DEFAULT 0,
        routes      TEXT NOT NULL DEFAULT '{}',
        passes      INTEGER NOT NULL DEFAULT 0,
        bytes       BIGINT NOT NULL DEFAULT 0,
        last_delta  BIGINT NOT NULL DEFAULT 0,
        created_at  DOUBLE PRECISION NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL,
        deadline    DOUBLE PRECISION,
        held_at     DOUBLE PRECISION,
        stopped_at  DOUBLE PRECISION,
        online_at   DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        downtime    DOUBLE PRECISION,
        error       TEXT NOT NULL DEFAULT '',
        log         TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX moves_open ON moves(tenant) WHERE finished_at IS NULL;
    CREATE TABLE move_cts (
        move        BIGINT NOT NULL,
        ct_id       INTEGER NOT NULL,
        hostname    TEXT NOT NULL,
        src_ip      TEXT NOT NULL,
        dst_ip      TEXT NOT NULL,
        src_storage TEXT NOT NULL,
        dst_storage TEXT NOT NULL,
        bytes       BIGINT NOT NULL DEFAULT 0,
        files       BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (move, ct_id)
    );
    """,
    # 14 -> 15: each CT's newest restore point as its rack's leader last read it from the
    # storage node's ctbackup (`status` shows it against the RPO; manager/backups.py)
    """
    CREATE TABLE backup_points (
        ct_id      INTEGER PRIMARY KEY,
        node       TEXT NOT NULL,
        rpo        DOUBLE PRECISION NOT NULL,
        newest     TEXT,
        newest_at  DOUBLE PRECISION,
        checked_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 15 -> 16: tenant moves inside the loop (reconcile/moving.py). `hold_version`: the
    # configuration version from which the hold is visible; `token`: the fencing
    # token (the runner's lease epoch) its storage writes carry; `sealed`: the
    # leaving side's /data is sealed on its storage node. `move_acks`: a rack's leader
    # certifies, under its epoch and the configuration version it acted on, that none
    # of a held tenant's CTs runs (or can run) on any of its HNs (reconcile/release.py).
    """
    ALTER TABLE moves ADD COLUMN hold_version BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE moves ADD COLUMN token BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE moves ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    UPDATE moves SET hold_version = 1 WHERE hold = 1 AND finished_at IS NULL;
    CREATE TABLE move_acks (
        move     BIGINT NOT NULL,
        rack     INTEGER NOT NULL,
        epoch    BIGINT NOT NULL,
        version  BIGINT NOT NULL,
        released INTEGER NOT NULL,
        detail   TEXT NOT NULL DEFAULT '',
        at       DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (move, rack)
    );
    """,
    # 16 -> 17: an address freed by a CT leaving its rack (ct rm, tenant rm, a move's
    # flip) is not handed out again while that CT may still run there: until the
    # rack's HNs all reported it gone (its tombstone in `removed` dropped) or `until`
    # (operations/rules.py: quarantine).
    """
    CREATE TABLE ip_quarantine (
        ip        TEXT PRIMARY KEY,
        rack      INTEGER NOT NULL,
        ct_id     INTEGER NOT NULL,
        hostname  TEXT NOT NULL,
        freed_at  DOUBLE PRECISION NOT NULL,
        until     DOUBLE PRECISION NOT NULL
    );
    """,
    # v18: each manager's software version and the ids of the rack keys it holds, in its
    # check-in (a rolling upgrade and a key rotation can be watched, and checked)
    """
    ALTER TABLE managers ADD COLUMN version TEXT NOT NULL DEFAULT '';
    ALTER TABLE managers ADD COLUMN keys TEXT NOT NULL DEFAULT '';
    """,
]


class Step(NamedTuple):
    what: str  # one line
    compatible_with: int  # the oldest schema version whose code works on a store after this step


STEPS: list[Step] = [  # STEPS[i] describes MIGRATIONS[i] (to version i + 1)
    Step("configured state, observed state, audit events", 1),
    Step("index: CTs per storage node", 1),
    Step("the reconcile loop's rows: placements, rejections, tombstones, intents, HN reports "
         "(a removed CT needs its tombstone)", 3),
    Step("DNS ownership: published record sets, conflicts", 3),
    Step("edge path routes", 3),
    Step("outbound SOCKS ACLs", 3),
    Step("the journal records `set` (a kind older code cannot read)", 7),
    Step("crash loops", 7),
    Step("CTIDs never handed out again (every writer consults ctids_used)", 9),
    Step("column ctid renamed ct_id (the portable baseline)", 10),
    Step("rack scope: the rows a manager writes carry its rack", 11),
    Step("HN reports stamped on the store's clock (stored_at)", 12),
    Step("leases and manager check-ins replace the holder rows in meta", 13),
    Step("tenant moves and realm pins", 14),
    Step("each CT's newest restore point", 14),
    Step("tenant moves in the loop: holds by configuration version, fencing tokens, seals, release "
         "certificates", 16),
    Step("a freed address stays quarantined while its old CT may still run", 17),
    Step("managers check in with their software version and rack key ids (columns older code ignores)", 17),
]

if len(STEPS) != len(MIGRATIONS):  # pragma: no cover - caught by every test run
    raise RuntimeError("store/migrations.py: every migration needs its line in STEPS")
