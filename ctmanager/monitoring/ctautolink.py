"""`ctautolink`: keep a CT's collectd plugins in step with its services.

Watches the services dir with inotify (create, delete, rename in and out; a
queue overflow means a full resync) and, after a burst of events settles
(`--debounce`, 20 ms), resyncs: the plugins tagged for the present services are
linked, the rest of our links removed, regular files left alone. Only regular
files in the repo named NAME.conf (ASCII letters, digits, '_', '-') are
plugins: symlinks, FIFOs, devices, directories, unreadable files and odd names
are skipped and reported, never linked. A plugin that fails `collectd -T` is
skipped and reported, never linked. collectd is restarted (`--restart-cmd`,
default `svc -t /data/service/sys_collectd`) once per resync that changed
something. Problems are logged one escaped line each, once while they stand (again
after an hour). `--once` exits 2 if a path names no directory, 1 if the job
could not be done otherwise, with one line on stderr. Runs as a daemontools
service in every CT.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import add_version_flag
from .. import validate as v
from ..errors import CtmError, InputError
from . import autolink
from .autolink import esc
from .collectd import MISSING, Checker

log = logging.getLogger("ctautolink")


class Reporter:
    """Rate-limited problem lines: each distinct line once while it stands, again
    after `every` seconds at the soonest; at most `most` new lines a call, then a
    count. Remembers at most `cap` lines (the oldest are forgotten first)."""

    def __init__(self, every: float = 3600.0, most: int = 20, cap: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.most, self.cap, self.clock = every, most, cap, clock
        self._logged: dict[str, float] = {}  # line -> when; insertion order is time order

    def __call__(self, level: int, lines: Iterable[str]) -> None:
        now = self.clock()
        while self._logged:
            line, when = next(iter(self._logged.items()))
            if now - when < self.every and len(self._logged) <= self.cap:
                break
            del self._logged[line]
        fresh = [line for line in dict.fromkeys(lines) if line not in self._logged]
        for line in fresh[:self.most]:
            log.log(level, "%s", line)
            self._logged[line] = now
        if len(fresh) > self.most:
            log.log(level, "%d more problems, not shown now", len(fresh) - self.most)


@dataclass
class Outcome:
    plan: autolink.LinkPlan = field(default_factory=lambda: autolink.LinkPlan({}, ()))
    failed: list[CtmError] = field(default_factory=list)  # the job was not (fully) done


class Linker:
    def __init__(self, services: Path, repo: Path, conf: Path, restart: list[str] | None, check: bool = True,
                 report: Reporter | None = None) -> None:
        self.services, self.repo, self.conf, self.restart = services, repo, conf, restart
        self.checker = Checker(conf.parent) if check else None  # next to the conf dir: writable in a CT
        self.report = report or Reporter()
        self.restarts = 0

    def _check(self, repo: autolink.Repo, services: set[str], problems: list[str]) -> tuple[set[str], set[str]]:
        """(plugins collectd rejects, plugins that could not be checked now)."""
        broken: set[str] = set()
        keep: set[str] = set()
        if not self.checker:
            return broken, keep
        for plugin in repo.plugins.values():
            if not plugin.tags & services:
                continue
            try:
                errors = self.checker.errors(plugin.path)
            except (OSError, subprocess.SubprocessError) as exc:
                keep.add(plugin.name)
                problems.append(f"plugin {esc(plugin.name)}: could not be checked ({esc(str(exc))}); left as it is")
                continue
            if errors == [MISSING]:
                problems.append("collectd is not installed here: plugins are linked unchecked")
            elif errors:
                broken.add(plugin.name)
                problems.append(f"{esc(plugin.name)}: collectd rejects it ({esc(errors[0])}); not linked")
        return broken, keep

    def resync(self) -> Outcome:
        """One resync; problems with the input are reported (rate-limited), what kept
        it from doing its job is returned (not logged: the caller decides)."""
        problems: list[str] = []
        try:
            repo = autolink.read_repo(self.repo)
            services, odd = autolink.read_services(self.services)
            conf = autolink.read_conf(self.conf, repo)
        except CtmError as exc:
            return Outcome(failed=[exc])  # nothing is known for sure: every link is left as it is
        problems += [f"plugin {esc(n)}: no '#service_tag:' line; ignored" for n in repo.untagged]
        problems += [f"plugin {esc(n)}: {why}; not linked" for n, why in repo.refused.items()]
        problems += [f"service {esc(n)}: not a name ctautolink acts on; ignored" for n in odd]
        problems += [f"conf dir: {esc(n)} is {why}; left alone" for n, why in conf.odd.items()]
        broken, keep = self._check(repo, services, problems)
        wanted = {p.name for p in repo.plugins.values() if p.tags & services}
        for name in sorted((set(conf.others) & wanted) - set(conf.odd)):
            problems.append(f"conf dir: {esc(name)} is {conf.others[name]}, not a link of ours; left alone "
                            "(the plugin is not linked)")
        self.report(logging.WARNING, problems)
        p = autolink.plan(repo, services, conf.ours, set(conf.others), broken, keep)
        if p.empty:
            return Outcome(p)
        failed = autolink.apply(self.conf, p)
        done = [n for n in [*sorted(p.link), *p.unlink] if n not in failed and "" not in failed]
        for name in done:
            log.info("%s %s", "linked" if name in p.link else "unlinked", esc(name))
        out = Outcome(p, list(failed.values()))
        if self.restart and done:
            self.restarts += 1
            out.failed += self._restart(self.restart)
        return out

    @staticmethod
    def _restart(cmd: list[str]) -> list[CtmError]:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return [CtmError(f"restart command {esc(cmd[0])} failed: {esc(str(exc))}")]
        if r.returncode != 0:
            out = esc((r.stderr or r.stdout).strip()[:200])
            return [CtmError(f"restart command failed (exit {r.returncode}): {out}")]
        return []

    def _safe_resync(self) -> None:
        """The daemon's resync: whatever goes wrong is one line, and it goes on."""
        try:
            failed = self.resync().failed
        except Exception as exc:  # a daemon must not die of one bad resync
            failed = [CtmError(f"resync failed: {type(exc).__name__}: {esc(str(exc))}")]
        self.report(logging.ERROR, [str(f) for f in failed])

    def watch(self, debounce: float) -> None:
        try:
            import pyinotify
        except ImportError:
            raise CtmError("pyinotify is not installed: only --once works") from None

        mask = pyinotify.IN_CREATE | pyinotify.IN_DELETE | pyinotify.IN_MOVED_TO | pyinotify.IN_MOVED_FROM
        repo_mask = mask | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_ATTRIB  # a chmod may make a plugin unreadable
        wm = pyinotify.WatchManager()
        try:
            self.services.mkdir(parents=True, exist_ok=True)
            wm.add_watch(str(self.services), mask, quiet=False)
        except FileExistsError:
            raise InputError(f"services dir {esc(str(self.services))}: not a directory") from None
        except (OSError, pyinotify.WatchManagerError) as exc:
            raise CtmError(f"cannot watch the services dir {esc(str(self.services))}: {esc(str(exc))}") from None
        watching_repo = False
        events: list[object] = []
        notifier = pyinotify.Notifier(wm, lambda e: events.append(e), timeout=None)
        self._safe_resync()  # whatever happened while we were not watching
        log.info("watching %s; repo %s; links in %s", esc(str(self.services)), esc(str(self.repo)),
                 esc(str(self.conf)))
        while True:
            if not watching_repo and self.repo.is_dir():  # a repo that comes later is watched from then on
                try:
                    wm.add_watch(str(self.repo), repo_mask, quiet=False)
                    watching_repo = True
                except pyinotify.WatchManagerError as exc:
                    self.report(logging.ERROR, [f"cannot watch the repo: {esc(str(exc))}"])
            notifier.check_events(timeout=None)
            # a burst: keep reading until it has been quiet for `debounce`
            while True:
                notifier.read_events()
                notifier.process_events()
                if not notifier.check_events(timeout=int(debounce * 1000)):
                    break
            events.clear()  # an overflow is one more event: the resync reads everything anyway
            self._safe_resync()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ctautolink", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(ap)
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
        try:
            out = linker.resync()
        except Exception as exc:  # one line, never a traceback
            out = Outcome(failed=[CtmError(f"resync failed: {type(exc).__name__}: {esc(str(exc))}")])
        print(f"linked {len(out.plan.link)}, unlinked {len(out.plan.unlink)}")
        if out.failed:
            more = f" (and {len(out.failed) - 1} more)" if len(out.failed) > 1 else ""
            print(f"ctautolink: {out.failed[0]}{more}", file=sys.stderr)
            return out.failed[0].exit_code
        return 0
    try:
        linker.watch(args.debounce)
    except KeyboardInterrupt:
        return 0
    except CtmError as exc:
        print(f"ctautolink: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
