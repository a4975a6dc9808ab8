"""Jinja2 environment over the template search path, with StrictUndefined and
errors that name the template file and line."""

from __future__ import annotations

import hashlib
import shlex
import traceback
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from .. import validate as v
from ..errors import RenderError
from ..paths import template_dirs


class Engine:
    def __init__(self, dirs: list[Path] | None = None) -> None:
        self.dirs = dirs if dirs is not None else template_dirs()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # config files, not HTML; values were validated at the boundary
        )
        self.env.filters["shq"] = lambda s: shlex.quote(str(s))
        self.env.filters["size"] = v.format_size
        self.env.filters["vzsize"] = v.vz_size
        self._cache: dict[str, jinja2.Template] = {}

    def template(self, name: str) -> jinja2.Template:
        tpl = self._cache.get(name)
        if tpl is None:
            try:
                tpl = self._cache[name] = self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise RenderError(f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}") from None
            except jinja2.TemplateNotFound:
                raise RenderError(f"template {name} not found in {', '.join(map(str, self.dirs))}") from None
        return tpl

    def context(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The variables merged with the environment's globals once, so that
        several templates can share one context (see `render`)."""
        return {**self.env.globals, **variables}

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render `name` with a context made by `context()`.

        Template.render() copies globals and variables into a fresh dict on every
        call; with 50,000 files that copy was a third of the time, so the merged
        context is made once per CT and passed as shared.
        """
        tpl = self.template(name)
        try:
            try:
                return self.env.concat(tpl.root_render_func(tpl.new_context(context, shared=True)))
            except Exception:
                self.env.handle_exception()  # re-raises with template line numbers, as Template.render does
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{_template_line(exc, tpl)}: {exc.message}") from None
        except Exception as exc:  # a filter or expression failed: still one line, still nothing written
            raise RenderError(f"{_template_line(exc, tpl)}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def fingerprint(self, names: list[str]) -> str:
        """Hash of the template sources in use (and our version): any change re-renders.

        Reads the sources without compiling them: a run with nothing to render
        never compiles a template.
        """
        h = hashlib.blake2b(__version__.encode(), digest_size=16)
        for name in names:
            try:
                source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            except jinja2.TemplateNotFound:
                raise RenderError(f"template {name} not found in {', '.join(map(str, self.dirs))}") from None
            h.update(name.encode() + b"\0" + source.encode())
        return h.hexdigest()


def _template_line(exc: BaseException, tpl: jinja2.Template) -> str:
    """`file:line` of the innermost template frame of a rendering error."""
    where = tpl.filename or tpl.name or "template"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return f"{frame.filename}:{frame.lineno}"
    return str(where)
