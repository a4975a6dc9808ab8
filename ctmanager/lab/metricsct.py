"""The rack's metrics CT in the lab: carbon's relay, cache and aggregator as
daemontools services on its /data, so every CT's collectd, the agents and the
manager have a real carbon to write to.

    /data/carbon/carbon.conf (+ rules)   `ctmanager metrics carbon-config`'s files
    /data/carbon/storage/whisper/        the rack's metrics, at full resolution
    /data/service/carbon-{relay,cache,aggregator}/run

The lab has no DC-level store: the aggregator's summaries (`<dc>.<rack>.summary.*`)
go north into this same cache's line port instead, every 10 s (60 s in production),
so a test sees one within a minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..dc.model import Ct, DcTemplate
from ..monitoring import carbon
from ..monitoring.provision import PATH, write_service

SERVICE = "metrics"  # the rack service whose CT runs carbon
DAEMONS = ("cache", "aggregator", "relay")
SUMMARY_EVERY = 10
CT_DIR = Path("/data/carbon")  # as the daemons see it, inside the CT


def seed(data: Path, dc: DcTemplate, ct: Ct) -> None:
    """Write the carbon configs and run scripts into a metrics CT's /data (`data`, on the host)."""
    ports = carbon.Ports()
    carbon.render(dc, ct.rack, data / "carbon", f"127.0.0.1:{ports.cache_line}", summary_every=SUMMARY_EVERY,
                  at=CT_DIR)
    for kind in DAEMONS:
        pid = CT_DIR / "storage" / f"carbon-{kind}.pid"
        # supervise runs one at a time: a pid file left by a killed CT is stale, and
        # twistd refuses to start if that PID happens to be taken in the new CT
        run = (f"#!/bin/sh\n# carbon-{kind} of the rack (ctmanager lab)\n{PATH}rm -f {pid}\n"
               f"exec carbon-{kind} --config={CT_DIR}/carbon.conf --debug --pidfile={pid} start 2>&1\n")
        write_service(data, f"carbon-{kind}", run)


def relay(cts: Iterable[Ct]) -> str:
    """HOST:PORT of the rack's carbon relay (the metrics CT), or "" if the rack has none."""
    found = sorted((ct.ctid, ct.ip) for ct in cts if ct.service == SERVICE)
    return f"{found[0][1]}:{carbon.Ports().relay_line}" if found else ""
