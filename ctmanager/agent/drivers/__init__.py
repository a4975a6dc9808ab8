"""Runtime drivers behind one small interface (see base.Driver)."""

from __future__ import annotations

from ..config import AgentConfig
from .base import Driver, DriverError


def driver_for(config: AgentConfig) -> Driver:
    if config.runtime == "openvz":
        from .openvz import OpenVzDriver

        return OpenVzDriver(config.paths)
    from .lxc import LxcDriver

    return LxcDriver(config.lxcpath, config.paths)


__all__ = ["Driver", "DriverError", "driver_for"]
