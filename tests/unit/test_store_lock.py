"""Store.lock: one holder across processes (the DNS publisher's lock), a bounded
wait, re-entrant within one Store, and the same on a private in-memory store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ctmanager.store import open_store
from ctmanager.store.db import Store

HOLD = """
import sys
from ctmanager.store import default_path, open_store
with open_store(default_path(sys.argv[1])) as store, store.lock("dns") as held:
    print("held" if held else "not held", flush=True)
    sys.stdin.readline()  # hold it until the test says
"""


def test_a_lock_held_by_another_process_is_waited_for_then_given_up(example_store, store_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(store_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with open_store(store_path) as store:
            with store.lock("dns", wait=0.2) as held:
                assert held is False
            with store.lock("other", wait=0.2) as held:  # another name is another lock
                assert held is True
            assert other.stdin is not None
            other.stdin.write("\n")
            other.stdin.flush()
            assert other.wait(10) == 0
            with store.lock("dns", wait=5) as held:
                assert held is True
                with store.lock("dns", wait=0) as again:  # re-entrant: the holder may take it again
                    assert again is True
                with store.transaction():  # held across transactions
                    store.set_meta("probe", "1")
    finally:
        other.kill()
        other.wait()


def test_a_private_store_has_the_same_lock() -> None:
    store = Store.memory()
    with store.lock("dns") as held:
        assert held is True
    with store.lock("dns", wait=0) as held:  # released on leaving
        assert held is True
