"""Property tests of the two grammars an operator types most (issue 35: locators,
output paths): a store locator is a plain file path or a postgresql:// URL, and
anything with another scheme is refused in one line without its password; an
output path with a control character never reaches a file."""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ctmanager.cli.common import out_path
from ctmanager.errors import InputError
from ctmanager.store.db import parse_locator

SCHEME = st.text(string.ascii_letters + string.digits + "+.-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalpha())
SECRET = st.text(string.ascii_letters + string.digits + "/@!", min_size=6, max_size=20)


@given(SCHEME, SECRET, st.text(string.ascii_lowercase + "/._-", max_size=20))
def test_a_locator_of_another_scheme_is_refused_and_never_shows_its_password(scheme: str, secret: str,
                                                                               rest: str) -> None:
    assume(secret not in f"{scheme}user host/{rest}")  # (shown as the scheme or the path, it is no leak)
    text = f"{scheme}://user:{secret}@host/{rest}"
    if scheme in ("postgresql", "postgres"):
        assert parse_locator(text) == text  # the supported ones, exactly so
        return
    with pytest.raises(InputError) as exc:
        parse_locator(text)
    said = str(exc.value)
    assert "\n" not in said and "unsupported store locator" in said and secret not in said


@given(st.text(min_size=1, max_size=40))
def test_a_locator_is_a_path_a_url_or_one_line_of_refusal(text: str) -> None:
    try:
        got = parse_locator(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert text.isprintable() and text == text.strip()  # never a file named with a control character or a space
    assert isinstance(got, Path) or got.startswith(("postgresql://", "postgres://"))


@given(st.text(min_size=1, max_size=30), st.sampled_from(["\n", "\r", "\x1b", "\x00", "\u202e", "\u2028", "\x85"]),
       st.text(max_size=10))
def test_an_output_path_with_a_control_character_is_refused(head: str, bad: str, tail: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="without control characters"):
        out_path(head + bad + tail)


def test_an_empty_output_path_is_refused_as_empty() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="got an empty one"):
        out_path("")
