"""The lab's DNS server: a real BIND 9 on the host, answering on the DC's resolver
addresses (added to the rack bridge, so CTs reach them through their gateway),
serving the zones ctmanager publishes. `up` configures the store to publish
there and syncs; `down` forgets that configuration again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..dc.model import DcTemplate
from ..dnsroutes import bind, sync
from ..files import write_atomic
from ..store import Store, open_store
from ..store import dns as dnsrows
from ..store.db import default_path, is_url
from . import layout
from .shell import LabError, sh


def up(lab: layout.Lab, store: Store, dc: DcTemplate, bridge: str, spawn: Callable[[list[str], Path], int],
       progress: Callable[[str], None], key_at: Path | None = None) -> None:
    """`key_at`: where the publishers find the TSIG key (the same path on each of their
    machines; a copy is put there); default: the lab's own bind folder."""
    resolvers = list(dc.resolvers)
    for ip in resolvers:
        sh("ip", "addr", "replace", f"{ip}/32", "dev", bridge)
    files = bind.render(dc, lab.root / "bind", ",".join(resolvers), 53)
    pid = spawn(["named", "-g", "-c", str(files["named.conf"])], lab.logs / "named.log")
    lab.set_pid("named", pid)
    deadline = time.monotonic() + 20
    while subprocess.run(["dig", f"@{resolvers[0]}", "+short", "+time=1", "+tries=1", "SOA",
                          dc.infra_zone], capture_output=True, timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError(f"named did not answer on {resolvers[0]}:53 (see {lab.logs / 'named.log'})")
        time.sleep(0.1)
    key = files["key"]
    if key_at is not None:
        key_at.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key_at, key.read_bytes(), 0o600)
        key = key_at
    sync.configure(store, f"{resolvers[0]}:53", str(key))
    report = sync.sync(store, sync.require_server(store))
    if report.error:
        raise LabError(f"publishing to the lab's DNS server: {report.error}")
    progress(f"dns: named on {', '.join(resolvers)}:53, {len(report.applied)} record sets published")


def forget(lab: layout.Lab) -> None:
    """Drop the store's DNS configuration if it points at this lab's server."""
    store_path = lab.read_state().get("store")
    if not store_path:
        return
    locator = default_path(store_path)
    if not is_url(locator) and not Path(locator).exists():
        return
    try:
        with open_store(locator) as store:
            dnsrows.forget_if(store, str(lab.root))
    except Exception as exc:  # noqa: BLE001 - a broken store must not stop `lab down`
        sys.stderr.write(f"lab: could not reset the store's DNS settings: {exc}\n")
