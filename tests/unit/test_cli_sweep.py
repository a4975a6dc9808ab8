"""Every command, every argument, hostile values (issue: hardening): the CLI
answers with an exit code and at most one line of error, never a traceback, and
a refused command (exit 2) changes nothing in the store. In process, so the
sweep of a few thousand invocations takes seconds; the commands that start
daemons, labs or SSH are left to their own tests."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctmanager.cli.main import build_parser, main
from ctmanager.operations import inventory
from ctmanager.store import open_store
from tests.conftest import EXAMPLE, ROOT, dump

SKIP = {"run", "reconcile", "ct exec", "sim run", "sim random", "dns sync", "dns verify"}  # daemons, SSH, DNS servers
HOSTILE = ["", "\n", "x\ny", "-", "../../etc/passwd", "a" * 5000, "\u0663", "\u00b2", "-1", "nan", "1e999",
           "'\";{}$(id)`", "rack-999", "99999999999999999999", " 101", "x" * 64, "UPPER", "a b"]
# not "/": an output folder of / is a valid request (and would write into this machine's root)
GOOD = {"template": str(EXAMPLE), "slot": "102", "manifest": str(ROOT / "templates/dc/manifests/rack-102.toml"),
        "name": "newt", "hostname": "newct", "ct": "myhost", "tenant": "myhost", "service": "smtp",
        "target": "relay-101-2", "outdir": "out", "out": "out", "hn": "hn-101-1", "path": "/x/", "app": "jira",
        "dest": "10.0.0.0/8", "--rack": "101", "--to": "hn-101-2", "--server": "127.0.0.1:53",
        "--key-file": "key", "--config": "manager.toml", "--listen": "127.0.0.1:1080", "--external": "127.0.0.1",
        "--top": "10.100.0.20:2003", "--mailmap": "127.0.0.1:10027", "--tenant": "myhost"}


def commands() -> Iterator[tuple[str, list[argparse.Action]]]:
    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> Iterator[tuple[str, list[argparse.Action]]]:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from walk(sub, [*prefix, name])
                return
        yield " ".join(prefix), [a for a in parser._actions if a.dest not in ("help", "store", "json")]
    yield from walk(build_parser(), [])


CASES = [(cmd, actions) for cmd, actions in commands() if cmd not in SKIP and not cmd.startswith("lab ")]


def argv_for(cmd: str, actions: list[argparse.Action], swap: str | None, value: str) -> list[str]:
    argv = cmd.split()
    for a in actions:
        key = a.option_strings[0] if a.option_strings else a.dest
        if a.nargs == 0:
            continue  # a flag
        if a.option_strings and not a.required and key != swap:
            continue
        argv += ([key] if a.option_strings else []) + [value if key == swap else GOOD.get(key, GOOD.get(a.dest, "x"))]
    return argv


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "ctm.db"
    with open_store(path, create=True) as s, s.transaction():
        inventory.init(s, EXAMPLE)
    return path


@pytest.mark.parametrize("cmd, actions", CASES, ids=[c for c, _ in CASES])
def test_hostile_arguments_never_raise(cmd: str, actions: list[argparse.Action], prepared: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b" / "c"  # ../../ stays inside tmp_path
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    (work / "key").write_text("not a key\n")
    (work / "key").chmod(0o600)
    keys = [a.option_strings[0] if a.option_strings else a.dest for a in actions if a.nargs != 0]
    for swap in keys:
        for value in HOSTILE:
            store = tmp_path / "ctm.db"
            shutil.copyfile(prepared, store)
            before = dump(store)
            argv = ["--store", str(store), *argv_for(cmd, actions, swap, value)]
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 2
            text = err.getvalue()
            assert code in (0, 1, 2), (argv, code, text)
            assert "Traceback" not in text, (argv, text)
            if code:
                assert len(text.strip().splitlines()) == 1, (argv, text)
            if code == 2:
                assert dump(store) == before, (argv, text)
            for leftover in ("out", "x"):
                shutil.rmtree(work / leftover, ignore_errors=True) if (work / leftover).is_dir() else None
    assert os.getcwd() == str(work)
