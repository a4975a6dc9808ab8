"""`ctautolink`: keep a CT's collectd plugins in step with its services.

Watches the services dir with inotify (create, delete, rename in and out; a
queue overflow means a full resync) and, after a burst of events settles
(`--debounce`, 20 ms), resyncs: the plugins tagged for the present services are
linked, the rest of our links removed, regular files left alone. A plugin that
fails `collectd -T` is skipped and reported, never linked. collectd is restarted
(`--restart-cmd`, default `svc -t /data/service/sys_collectd`) once per resync
that changed something. Runs as a daemontools service in every CT.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from ..wire import validate as v
from . import autolink
from .collectd import MISSING, Checker

log = logging.getLogger("ctautolink")


class Linker:
    def __init__(self, services: Path, repo: Path, conf: Path, restart: list[str] | None, check: bool = True) -> None:
        self.services, self.repo, self.conf, self.restart = services, repo, conf, restart
        self.checker = Checker(conf.parent) if check else None  # next to the conf dir: writable in a CT
        self._reported: set[str] = set()
        self.restarts = 0

    def _once(self, what: str) -> None:
        """Log a standing problem once, not at every resync."""
        if what not in self._reported:
            self._reported.add(what)
            log.warning("%s", what)

    def resync(self) -> autolink.LinkPlan:
        repo = autolink.read_repo(self.repo)
        for name in repo.untagged:
            self._once(f"{name}: no '#service_tag:' line; ignored")
        services, odd = autolink.read_services(self.services)
        for name in odd:
            self._once(f"service {name!r}: not a name ctautolink acts on; ignored")
        links = autolink.read_links(self.conf, self.repo)
        broken: set[str] = set()
        if self.checker:
            for plugin in repo.plugins.values():
                if plugin.tags & services:
                    errors = self.checker.errors(plugin.path)
                    if errors == [MISSING]:
                        self._once("collectd is not installed here: plugins are linked unchecked")
                    elif errors:
                        broken.add(plugin.name)
                        self._once(f"{plugin.name}: collectd rejects it ({errors[0]}); not linked")
        p = autolink.plan(repo, services, links, autolink.conf_files(self.conf, links), broken)
        if p.empty:
            return p
        autolink.apply(self.conf, p)
        for name in sorted(p.link):
            log.info("linked %s", name)
        for name in p.unlink:
            log.info("unlinked %s", name)
        if self.restart:
            self.restarts += 1
            r = subprocess.run(self.restart, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                log.error("restart command failed (exit %d): %s", r.returncode, (r.stderr or r.stdout).strip()[:200])
        return p

    def watch(self, debounce: float) -> None:
        import pyinotify

        mask = pyinotify.IN_CREATE | pyinotify.IN_DELETE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM
        wm = pyinotify.WatchManager()
        self.services.mkdir(parents=True, exist_ok=True)
        wm.add_watch(str(self.services), mask)
        if self.repo.is_dir():
            wm.add_watch(str(self.repo), mask | pyinotify.IN_CLOSE_WRITE)
        events: list[object] = []
        notifier = pyinotify.Notifier(wm, lambda e: events.append(e), timeout=None)
        self.resync()  # whatever happened while we were not watching
        log.info("watching %s; repo %s; links in %s", self.services, self.repo, self.conf)
        while True:
            notifier.check_events(timeout=None)
            # a burst: keep reading until it has been quiet for `debounce`
            while True:
                notifier.read_events()
                notifier.process_events()
                if not notifier.check_events(timeout=int(debounce * 1000)):
                    break
            events.clear()  # an overflow is one more event: the resync reads everything anyway
            self.resync()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ctautolink", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", default="/data/service", help="daemontools services dir (default /data/service)")
    ap.add_argument("--repo", default="/sw/collectd/plugins/repo", help="tagged plugin repo")
    ap.add_argument("--conf", default="/data/sys_collectd/conf", help="collectd's include dir for the links")
    ap.add_argument("--restart-cmd", default="svc -t /data/service/sys_collectd",
                    help="run after links changed ('' for none)")
    ap.add_argument("--once", action="store_true", help="resync once and exit")
    ap.add_argument("--debounce", type=v.seconds_arg(0, 60), default=0.02, help="seconds of quiet that end a burst (default 0.02)")
    ap.add_argument("--no-check", action="store_true", help="link without running plugins through collectd -T")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ctautolink %(levelname)s %(message)s")
    if not 0 <= args.debounce <= 10:
        ap.error("--debounce must be between 0 and 10 seconds")
    try:
        restart = shlex.split(args.restart_cmd) if args.restart_cmd else None
    except ValueError as exc:
        ap.error(f"--restart-cmd: {exc}")
    linker = Linker(Path(args.services), Path(args.repo), Path(args.conf), restart, check=not args.no_check)
    if args.once:
        p = linker.resync()
        print(f"linked {len(p.link)}, unlinked {len(p.unlink)}")
        return 0
    try:
        linker.watch(args.debounce)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
