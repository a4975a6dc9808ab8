"""ctgate, the manager key's forced command: what the manager runs passes, checked and
rewritten to the gate's own ctagent; anything else is refused with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ctmanager.agent.gate import REFUSED, Refused, check

AGENT = "/usr/bin/ctagent"


@pytest.mark.parametrize("command,argv", [
    ("ctagent observe", [AGENT, "observe"]),
    ("/opt/x/bin/ctagent apply start 1005", [AGENT, "apply", "start", "1005"]),
    ("ctagent apply destroy 1005 --purge-data --epoch 7", [AGENT, "apply", "destroy", "1005", "--purge-data",
                                                          "--epoch", "7"]),
    ("ctagent exec 1005 -- svstat '/data/service/a b'", [AGENT, "exec", "1005", "--", "svstat", "/data/service/a b"]),
    ("ctagent exec 1005 -- sh -c 'id; rm -rf /tmp/x'", [AGENT, "exec", "1005", "--", "sh", "-c", "id; rm -rf /tmp/x"]),
])
def test_what_the_manager_runs_passes_to_the_gates_own_ctagent(command: str, argv: list[str]) -> None:
    assert check(command, AGENT) == argv


@pytest.mark.parametrize("command,why", [
    ("id", "only ctagent"),
    ("", "only ctagent"),
    ("bash -c 'ctagent observe'", "only ctagent"),
    ("ctagent apply start 1005; rm -rf /", "CTID must be"),
    ("ctagent apply start 1005 ; rm -rf /", "does not take ';'"),
    ("ctagent apply reboot 1005", "ACTION one of"),
    ("ctagent apply start 0", "CTID must be"),
    ("ctagent apply start 1005 --purge-data --rm", "does not take '--rm'"),
    ("ctagent apply stop 1005 --epoch x", "does not take '--epoch'"),
    ("ctagent run", "not for the manager's key"),
    ("ctagent observe --all", "not for the manager's key"),
    ("ctagent -c /tmp/evil.toml observe", "config is the gate's"),
    ("ctagent exec 1005 id", "exec CTID -- CMD"),
    ("ctagent exec 1005 --", "exec CTID -- CMD"),
    ("ctagent 'unterminated", "not a command line"),
])
def test_anything_else_is_refused(command: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        check(command, AGENT)


def test_the_gates_config_is_the_only_one_ctagent_gets() -> None:
    conf = "/etc/ctagent/ctagent.toml"
    assert check("ctagent observe", AGENT, conf) == [AGENT, "-c", conf, "observe"]
    assert check(f"ctagent -c {conf} observe", AGENT, conf) == [AGENT, "-c", conf, "observe"]
    with pytest.raises(Refused):
        check("ctagent -c /tmp/other.toml observe", AGENT, conf)


def test_a_refusal_is_one_line_and_exit_126_and_runs_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    p = subprocess.run([sys.executable, "-m", "ctmanager.agent.gate", "--agent", "/bin/touch"],
                       env={**os.environ, "SSH_ORIGINAL_COMMAND": f"touch {marker}"}, capture_output=True, text=True)
    assert p.returncode == REFUSED and not marker.exists()
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("ctgate: refused: only ctagent"), p.stderr
