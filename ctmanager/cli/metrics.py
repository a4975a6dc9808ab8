"""`ctmanager metrics carbon-config`: a rack's carbon relay, cache and aggregator."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CtmError, InputError
from ..store import queries
from .common import Registry, integer_in, out_path, parse_rack, store_of, want_json
from .output import emit_json


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    metrics = group("metrics", "the per-rack metrics store (carbon) that every CT's collectd writes to")
    p = cmd(metrics, "carbon-config", cmd_carbon_config,
            "write carbon-relay/cache/aggregator configs for a rack: full resolution on disk, summaries north",
            "ctmanager metrics carbon-config /etc/carbon/rack-101 --rack rack-101 --top 10.100.0.20:2003")
    p.add_argument("out", type=out_path)
    p.add_argument("--rack", required=True, help="e.g. rack-101")
    p.add_argument("--top", required=True, metavar="HOST:PORT", help="the DC's top-level store (line protocol)")
    p.add_argument("--listen", default="0.0.0.0", help="address the daemons listen on (default 0.0.0.0)")
    p.add_argument("--summary-every", type=integer_in(1, 86400), default=60, help="seconds per summary (default 60)")


def cmd_carbon_config(args: argparse.Namespace) -> int:
    from ..monitoring import carbon
    slot = parse_rack(args.rack, "--rack")
    with store_of(args) as store:
        dc = queries.dc_template(store)
        if slot not in {r["slot"] for r in queries.racks(store)}:
            raise InputError(f"rack-{slot} is not installed (see: ctmanager rack list)", where="--rack")
    try:
        files = carbon.render(dc, slot, Path(args.out), args.top, listen=args.listen,
                              summary_every=args.summary_every)
    except OSError as exc:
        raise CtmError(f"{args.out}: {exc.strerror}") from None
    if want_json(args):
        emit_json({k: str(v) for k, v in files.items()})
    else:
        conf = files["carbon.conf"]
        print(f"wrote {', '.join(sorted(files))} in {conf.parent}\nrun: carbon-cache|carbon-aggregator|carbon-relay "
              f"--config={conf} --nodaemon start")
    return 0
