"""Strict, path-tracking reader over parsed TOML.

tomllib gives plain dicts without positions, so every error names the file and
the field path (e.g. `example.toml: skus.compute.memory: ...`). Unknown keys are
errors: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import builtins
import difflib
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError

T = TypeVar("T")


def load(path: Path) -> Table:
    """Parse a TOML file. Syntax errors keep tomllib's `(at line L, column C)`."""
    try:
        if not path.is_file():  # a FIFO or a device would block or never end
            raise InputError("is not a regular file" if path.exists() else "no such file", where=str(path))
        with open(path, "rb") as f:
            raw = f.read(MAX_TOML + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=str(path)) from None
    if len(raw) > MAX_TOML:
        raise InputError(f"is larger than {MAX_TOML >> 20} MiB: not a configuration file", where=str(path))
    return parse(raw, str(path))


def parse(raw: bytes, file: str) -> Table:
    path = file
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML: {exc}", where=str(path)) from None
    except RecursionError:
        raise InputError("invalid TOML: nested too deeply", where=str(path)) from None
    return Table(data, file=path, path="")


MAX_TOML = 8 << 20  # bytes: a DC template of many racks is well under 1 MiB


class Table:
    """A TOML table being read. Call `done()` once all known keys are taken."""

    def __init__(self, data: dict[str, Any], *, file: str, path: str) -> None:
        self._data = data
        self._seen: set[str] = set()
        self.file = file
        self.path = path

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def where(self, key: str | None = None) -> str:
        name = self.field(key) if key else (self.path or "(top level)")
        return f"{self.file}: {name}"

    def error(self, key: str | None, message: str) -> InputError:
        return InputError(message, where=self.where(key))

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def is_bool(self, key: str) -> bool:
        """Whether `key` holds true or false (for a key that is a switch or a table)."""
        return isinstance(self._data.get(key), bool)

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], what: str, secret: bool = False) -> Any:
        self._seen.add(key)
        if key not in self._data:
            if default is _REQUIRED:
                typo = difflib.get_close_matches(key, [k for k in self._data if k not in self._seen], n=1, cutoff=0.8)
                if typo:  # report the misspelt key the user wrote, not the one they meant
                    raise self.error(typo[0], f"unknown key (did you mean {key!r}?)")
                raise self.error(key, "is required")
            return default
        value = self._data[key]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.error(key, f"must be {what} ({_shown(value, secret)})")
        return value

    def str(self, key: str, default: Any = ...) -> Any:
        return self._get(key, _REQUIRED if default is ... else default, (str,), "a string")

    def int(self, key: builtins.str, default: Any = ...) -> Any:
        return self._get(key, _REQUIRED if default is ... else default, (int,), "an integer")

    def bool(self, key: builtins.str, default: Any = ...) -> Any:
        return self._get(key, _REQUIRED if default is ... else default, (bool,), "true or false")

    def number(self, key: builtins.str, default: Any = ...) -> Any:
        return self._get(key, _REQUIRED if default is ... else default, (int, float), "a number")

    def scalar(self, key: builtins.str, default: Any = ...) -> Any:
        """A string or integer (sizes may be written either way)."""
        return self._get(key, _REQUIRED if default is ... else default, (str, int), "a string or integer")

    def strs(self, key: builtins.str, default: Any = ..., *, secret: builtins.bool = False) -> list[builtins.str]:
        """`secret`: the value may hold a password (a fence command): errors never show it."""
        value = self._get(key, _REQUIRED if default is ... else default, (list,), "a list of strings", secret)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"must be a string ({_shown(item, secret)})")
        return list(value)

    def table(self, key: builtins.str, *, required: builtins.bool = True) -> Table:
        value = self._get(key, _REQUIRED if required else {}, (dict,), "a table")
        return Table(value, file=self.file, path=self.field(key))

    def tables(self, key: builtins.str, *, required: builtins.bool = False) -> list[Table]:
        """An array of tables (`[[key]]`)."""
        value = self._get(key, _REQUIRED if required else [], (list,), "an array of tables")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{i}]", "must be a table")
            out.append(Table(item, file=self.file, path=f"{self.field(key)}[{i}]"))
        return out

    def subtables(self) -> Iterator[tuple[builtins.str, Table]]:
        """Every key of this table as a named sub-table (`[parent.NAME]`)."""
        for key in list(self._data):
            yield key, self.table(key)

    def any(self, key: builtins.str) -> Any:
        """A present value of any scalar type (sizes: `512M` or bytes)."""
        return self._get(key, None, (str, int), "a size or integer")

    def take(self, keys: tuple[builtins.str, ...]) -> Table:
        """The subset of this table's keys named in `keys`, as its own Table
        (same path); those keys count as read here."""
        sub = {k: self._data[k] for k in self._data if k in keys}
        self._seen.update(sub)
        return Table(sub, file=self.file, path=self.path)

    def check(self, key: builtins.str, fn: Callable[[Any, builtins.str], T], value: Any) -> T:
        """Run a validate.* function, reporting errors against this file."""
        try:
            return fn(value, self.field(key))
        except InputError as exc:
            raise InputError(exc.message, where=f"{self.file}: {exc.where}") from None

    def done(self) -> None:
        unknown = [k for k in self._data if k not in self._seen]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(self._seen), n=1)
            raise self.error(unknown[0], "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


class _Required:
    pass


_REQUIRED = _Required()


def _shown(value: Any, secret: bool) -> str:
    if secret:
        return f"got a {type(value).__name__}; the value is not shown: it may hold a password"
    return f"got {value!r}"
