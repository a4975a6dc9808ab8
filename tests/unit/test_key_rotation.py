"""Rotating a rack's key (wire/keys.py): at every moment of a rotation, done
machine by machine, every report one machine signs is accepted by every other
(nothing forged, so nothing fences); after it, the old key is refused."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from ctmanager.errors import InputError
from ctmanager.wire import keys
from ctmanager.wire.keys import Keyring
from ctmanager.wire.reports import Metrics, Receiver, Report, ReportError, sign, verify

OLD, NEW = bytes(range(32)), bytes(range(100, 132))
STEPS = ("stage", "switch", "retire")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def machine(tmp_path: Path, name: str, key: bytes = OLD) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "rack.key"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def report(hn: str, seq: int = 1) -> Report:
    return Report(101, hn, "b" * 32, seq, 1000.0, False, Metrics(0.0, 0, 0, 0, 0, 0), ())


def step(path: Path, name: str) -> None:
    if name == "stage":
        keys.stage(path, NEW, str(path))
    elif name == "switch":
        keys.switch(path, str(path), expect=keys.key_id(NEW))
    else:
        keys.retire(path, str(path))


def test_every_report_is_accepted_at_every_moment_of_a_rotation(tmp_path: Path) -> None:
    """Three machines; each step done on them in every order (a step everywhere before
    the next begins): after each single machine's step, everyone hears everyone."""
    paths = [machine(tmp_path, f"m{i}") for i in range(3)]
    clock = Clock()
    rings = [Keyring(p, str(p), clock=clock) for p in paths]
    for name, order in zip(STEPS, ((2, 0, 1), (1, 2, 0), (0, 1, 2))):
        for i in order:
            step(paths[i], name)
            clock.t += 1.0  # a second passes: each ring looks at its files again
            for a, b in itertools.product(range(3), repeat=2):
                verify(sign(report(f"hn-{a}"), rings[a]), rings[b], 101)  # raises if forged
    assert all(r.current == NEW and r.next is None and r.prev is None for r in rings)
    with pytest.raises(ReportError, match="bad MAC"):
        verify(sign(report("hn-old"), OLD), rings[0], 101)  # the old key is refused afterwards


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_machines_switch_in_any_order_and_no_report_is_forged(tmp_path: Path, order: tuple[int, ...]) -> None:
    paths = [machine(tmp_path, f"m{i}") for i in range(3)]
    clock = Clock()
    rings = [Keyring(p, str(p), clock=clock) for p in paths]
    receivers = [Receiver(r, 101, window=1e9) for r in rings]
    for p in paths:
        step(p, "stage")
    seq = itertools.count(1)
    for i in order:
        step(paths[i], "switch")
        clock.t += 1.0
        for a, b in itertools.product(range(3), repeat=2):
            assert receivers[b].receive(sign(report(f"hn-{a}", next(seq)), rings[a]), "x", 1000.0) is not None
    assert all(r.drops.get("forged", 0) == 0 for r in receivers)


def test_a_switch_on_this_machine_is_seen_when_signing_without_a_restart(tmp_path: Path) -> None:
    path = machine(tmp_path, "m")
    clock = Clock()
    ring = Keyring(path, "m", clock=clock)
    keys.stage(path, NEW, "m")
    keys.switch(path, "m")
    assert ring.current == OLD  # not looked again yet: within the second
    clock.t += 1.0
    verify(sign(report("hn-1"), ring), NEW, 101)  # signs with the new key now


def test_a_receiver_that_has_not_looked_yet_checks_its_files_on_a_bad_mac(tmp_path: Path) -> None:
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    clock = Clock()
    ring_b = Keyring(b, "b", clock=clock)
    for p in (a, b):
        keys.stage(p, NEW, "x")
    clock.t += 1.0
    keys.switch(a, "a")
    verify(sign(report("hn-a"), NEW), ring_b, 101)  # b accepts a's new key (staged at b)


def test_a_bad_key_file_is_logged_and_the_keys_in_hand_are_kept(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = machine(tmp_path, "m")
    clock = Clock()
    ring = Keyring(path, "m", clock=clock)
    nxt = path.with_name("rack.key.next")
    nxt.write_text("zz-not-hex\n")
    nxt.chmod(0o600)
    clock.t += 1.0
    with caplog.at_level(logging.ERROR):
        ring.refresh()
    assert "must be hex" in caplog.text and ring.current == OLD and ring.next is None
    nxt.write_text(NEW.hex())
    nxt.chmod(0o644)  # readable by anyone: refused as a key, never used
    clock.t += 1.0
    ring.refresh()
    assert ring.next is None and caplog.text.count("left as it was") == 2
    nxt.chmod(0o600)  # fixed: only its mode changed (same inode, size and mtime), and it is read now
    clock.t += 1.0
    ring.refresh()
    assert ring.next == NEW


def test_staged_and_previous_keys_are_owned_and_moded_as_the_key(tmp_path: Path) -> None:
    """A manager runs as its own user and reads a root:ctmanager 0640 key: the new files
    must be the same from the moment they have their names."""
    import os

    path = machine(tmp_path, "m")
    os.chown(path, 0, 1)
    path.chmod(0o640)
    keys.stage(path, NEW, "m")
    keys.switch(path, "m")
    for f in (path, path.with_name("rack.key.prev")):
        st = f.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 1, 0o640), f
    assert sorted(p.name for p in path.parent.iterdir()) == ["rack.key", "rack.key.prev"]  # no temp left


def test_a_key_copied_with_another_owner_or_mode_is_refused_before_it_is_used(tmp_path: Path) -> None:
    import os

    path = machine(tmp_path, "m")
    os.chown(path, 0, 1)
    path.chmod(0o640)
    nxt = path.with_name("rack.key.next")
    nxt.write_text(NEW.hex())
    nxt.chmod(0o600)  # scp'd as root:root 0600: the manager's user could not read it
    with pytest.raises(InputError, match="owned or moded unlike .*chown --reference"):
        keys.stage(path, NEW, "m")
    with pytest.raises(InputError, match="owned or moded unlike"):
        keys.switch(path, "m")
    os.chown(nxt, 0, 1)
    nxt.chmod(0o640)
    assert keys.stage(path, NEW, "m")["next"] == keys.key_id(NEW)


def test_each_step_is_idempotent_and_refuses_what_would_break_a_rotation(tmp_path: Path) -> None:
    path = machine(tmp_path, "m")
    assert keys.stage(path, NEW, "m") == keys.stage(path, NEW, "m")  # again: nothing changes
    with pytest.raises(InputError, match="another key .* is staged"):
        keys.stage(path, bytes(range(50, 82)), "m")
    with pytest.raises(InputError, match="switch first"):
        keys.retire(path, "m")
    with pytest.raises(InputError, match="the staged key is"):
        keys.switch(path, "m", expect="000000000000")
    ids = keys.switch(path, "m", expect=keys.key_id(NEW))
    assert ids == {"current": keys.key_id(NEW), "prev": keys.key_id(OLD)}
    assert keys.switch(path, "m", expect=keys.key_id(NEW)) == ids  # done already: nothing changes
    with pytest.raises(InputError, match="retire it first"):
        keys.stage(path, bytes(range(50, 82)), "m")
    assert keys.retire(path, "m") == {"current": keys.key_id(NEW)} == keys.retire(path, "m")
    with pytest.raises(InputError, match="already the current key"):
        keys.stage(path, NEW, "m")
    assert path.stat().st_mode & 0o777 == 0o600


def test_key_ids_name_a_key_without_telling_it() -> None:
    assert keys.key_id(OLD) != keys.key_id(NEW) and len(keys.key_id(OLD)) == 12
    assert OLD.hex()[:12] != keys.key_id(OLD)
