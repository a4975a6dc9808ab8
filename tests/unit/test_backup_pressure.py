"""When the backup daemon holds off: I/O pressure (captured /proc/pressure/io), else load."""

from __future__ import annotations

from ctmanager.backupnode import pressure

PSI = """some avg10=0.54 avg60=0.80 avg300=1.38 total=140556142
full avg10=0.43 avg60=0.60 avg300=0.63 total=89247745
"""
LOAD = "0.67 1.67 1.46 1/479 6549\n"


def test_io_pressure_decides_where_the_kernel_has_it() -> None:
    assert pressure.io_some_avg10(PSI) == 0.54
    calm = pressure.judge(PSI, "99 99 99 1/1 1", 2, io_limit=30, load_limit=2)
    assert not calm.busy and "io pressure 0.5 %" in calm.why  # the load does not matter then
    busy = pressure.judge(PSI.replace("avg10=0.54", "avg10=55.10"), LOAD, 2, io_limit=30, load_limit=2)
    assert busy.busy and "55.1 %" in busy.why


def test_the_load_per_cpu_decides_without_psi_and_garbage_never_blocks() -> None:
    assert not pressure.judge(None, LOAD, 2, 30, 2).busy
    assert pressure.judge(None, "5.0 1 1 1/1 1", 2, 30, 2).busy
    for junk in ("", "x y z", "some avg10=x"):
        assert pressure.io_some_avg10(junk) is None
        assert not pressure.judge(junk, "", 2, 30, 2).busy
    assert pressure.now(100.0, 1e9).busy is False  # this machine, limits no reading passes
