"""The loop's doorbell (manager/ports.Doorbell, Mailbox): a result a background
thread leaves wakes the loop's wait at once instead of at its next poll."""

from __future__ import annotations

import select
import threading
import time

from ctmanager.manager.ports import Doorbell, Mailbox


def test_an_append_from_another_thread_wakes_the_wait_before_its_timeout() -> None:
    bell = Doorbell()
    fd = bell.open()
    box = Mailbox(bell)
    try:
        threading.Timer(0.05, box.append, ("result",)).start()
        started = time.monotonic()
        ready, _, _ = select.select([fd], [], [], 10.0)
        assert ready == [fd] and time.monotonic() - started < 5.0
        bell.clear()
        assert select.select([fd], [], [], 0)[0] == []  # cleared: the next wait sleeps again
        assert box.popleft() == "result"
    finally:
        bell.close()


def test_many_rings_do_not_block_and_one_clear_takes_them_all() -> None:
    bell = Doorbell()
    fd = bell.open()
    box = Mailbox(bell)
    try:
        for i in range(100_000):  # more than a pipe holds: a full pipe rings already, the append goes on
            box.append(i)
        assert len(box) == 100_000
        bell.clear()
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        bell.close()


def test_a_bell_never_opened_is_silent() -> None:
    box = Mailbox(Doorbell())  # the simulator's: it steps the loop itself
    box.append(1)
    assert list(box) == [1]
