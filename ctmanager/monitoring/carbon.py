"""Carbon for one rack, rendered from the DC template (Debian graphite-carbon 1.1).

    collectd in every CT --line--> relay :2003 (rules: one rule, two destinations)
        |--pickle--> cache      :2004  whisper at high resolution, on the rack's metrics CT
        '--pickle--> aggregator :2024  per-rack summaries every 60 s, forwarded north
                                       (line protocol) to the DC's top-level store

Metric names are `<dc>.<rack>.<host>.<plugin…>` (collectd's Hostname carries the
first three). A summary is `<dc>.<rack>.summary.<plugin…>`: the average over the
rack's CTs. All three daemons share one carbon.conf, one section each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import validate as v
from ..dc.model import DcTemplate, rack_name
from ..errors import InputError
from ..files import make_dirs, preflight, write_atomic
from ..validate import hostport

_ADDR = re.compile(r"[A-Za-z0-9.-]{1,253}")


@dataclass(frozen=True)
class Ports:
    relay_line: int = 2003
    relay_pickle: int = 2014
    cache_line: int = 2013  # unused by the relay (it speaks pickle), kept off 2003
    cache_pickle: int = 2004
    cache_query: int = 7002
    aggregator_line: int = 2023
    aggregator_pickle: int = 2024


def render(dc: DcTemplate, slot: int, out: Path, top: str, *, listen: str = "0.0.0.0", ports: Ports = Ports(),
           summary_every: int = 60, at: Path | None = None) -> dict[str, Path]:
    """Write carbon.conf and its rule files into `out`; data and logs go under out/storage.
    `top`: HOST:PORT of the DC's top-level store (line protocol). `at`: where the
    daemons will see `out` (a CT's /data/carbon, written from its HN); default `out`."""
    host, port = hostport(top, "the top-level store", names=True)
    if not _ADDR.fullmatch(listen):
        raise InputError(f"the listen address must be an address (got {listen!r})")
    if not 1 <= summary_every <= 3600:
        raise InputError("summary_every must be 1-3600 seconds")
    out = out.resolve()
    seen = at or out
    v.path(str(seen), "the carbon directory")  # goes into carbon.conf as is
    out.mkdir(parents=True, exist_ok=True)
    for d in ("whisper", "log", "lists"):
        make_dirs(out / "storage" / d, under=out)  # a link planted below OUT is refused
    storage = seen / "storage"
    prefix = f"{dc.name}.{rack_name(slot)}"
    p = ports
    common = (f"STORAGE_DIR = {storage}/\nLOCAL_DATA_DIR = {storage}/whisper/\nWHITELISTS_DIR = {storage}/lists/\n"
              f"CONF_DIR = {seen}/\nLOG_DIR = {storage}/log/\nPID_DIR = {storage}/\n"
              "ENABLE_LOGROTATION = False\nUSER =\nLOG_UPDATES = False\nLOG_CACHE_HITS = False\n"
              # every sender connects once a flush: log failures only
              "LOG_LISTENER_CONN_SUCCESS = False\n"
              # no graphite-web tag database here: left on, the cache POSTs every new
              # metric's tags to http://127.0.0.1:80 (seen in the lab: the CT's own httpd)
              "ENABLE_TAGS = False\n")
    conf = f"""# carbon for {rack_name(slot)} of {dc.name}, written by ctmanager
[cache]
{common}LINE_RECEIVER_INTERFACE = {listen}
LINE_RECEIVER_PORT = {p.cache_line}
PICKLE_RECEIVER_INTERFACE = {listen}
PICKLE_RECEIVER_PORT = {p.cache_pickle}
CACHE_QUERY_INTERFACE = {listen}
CACHE_QUERY_PORT = {p.cache_query}
ENABLE_UDP_LISTENER = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 5000
MAX_CREATES_PER_MINUTE = 1000
CACHE_WRITE_STRATEGY = sorted

[relay]
{common}LINE_RECEIVER_INTERFACE = {listen}
LINE_RECEIVER_PORT = {p.relay_line}
PICKLE_RECEIVER_INTERFACE = {listen}
PICKLE_RECEIVER_PORT = {p.relay_pickle}
RELAY_METHOD = rules
DESTINATIONS = 127.0.0.1:{p.cache_pickle}, 127.0.0.1:{p.aggregator_pickle}
MAX_QUEUE_SIZE = 100000
USE_FLOW_CONTROL = True

[aggregator]
{common}LINE_RECEIVER_INTERFACE = {listen}
LINE_RECEIVER_PORT = {p.aggregator_line}
PICKLE_RECEIVER_INTERFACE = {listen}
PICKLE_RECEIVER_PORT = {p.aggregator_pickle}
FORWARD_ALL = False
DESTINATIONS = {host}:{port}
DESTINATION_PROTOCOL = line
MAX_QUEUE_SIZE = 100000
MAX_AGGREGATION_INTERVALS = 5
"""
    files = {
        "carbon.conf": conf,
        # one rule, two destinations: every metric goes to disk here and to the summaries
        "relay-rules.conf": f"[split]\ndefault = true\ndestinations = 127.0.0.1:{p.cache_pickle}, "
                            f"127.0.0.1:{p.aggregator_pickle}\n",
        # <<metric>> matches across dots in the input; the output names it <metric>
        "aggregation-rules.conf": f"{prefix}.summary.<metric> ({summary_every}) = avg {prefix}.*.<<metric>>\n",
        "storage-schemas.conf": "[carbon]\npattern = ^carbon\\.\nretentions = 60s:7d\n\n"
                                "[high_res]\npattern = .*\nretentions = 10s:2d,1m:30d,10m:1y\n",
        "storage-aggregation.conf": "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n",
    }
    for name in files:
        preflight(out / name)  # a link at any name refuses them all before any write
    written = {}
    for name, text in files.items():
        write_atomic(out / name, text.encode(), 0o644)
        written[name] = out / name
    return written
