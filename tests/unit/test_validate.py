import pytest

from ctmanager import validate as v
from ctmanager.errors import InputError

BAD_LABELS = [
    ("MyHost", "lower case"),
    ("my_host", "not a DNS label"),
    ("a" * 64, "longer than 63"),
    ("my.host", "not a DNS label"),
    ("my host", "not a DNS label"),
    ("my;host", "not a DNS label"),
    ('my"host', "not a DNS label"),
    ("my'host", "not a DNS label"),
    ("my\nhost", "not a DNS label"),
    ("-myhost", "not a DNS label"),
    ("myhost-", "not a DNS label"),
    ("", "not a DNS label"),
    ("$(reboot)", "not a DNS label"),
]


@pytest.mark.parametrize("value,why", BAD_LABELS)
def test_bad_labels_are_refused_with_the_field_named(value: str, why: str) -> None:
    with pytest.raises(InputError) as err:
        v.label(value, "tenant")
    assert err.value.where == "tenant"
    assert why in err.value.message
    assert "\n" not in str(err.value)  # one line, even for a value with a newline


@pytest.mark.parametrize("value", ["myhost", "a", "relay-101-1", "x" * 63, "0day"])
def test_good_labels(value: str) -> None:
    assert v.label(value, "f") == value


@pytest.mark.parametrize(
    "text,nbytes",
    [("512M", 512 << 20), ("2G", 2 << 30), ("1.5G", 3 << 29), ("1T", 1 << 40), ("64k", 64 << 10), (1048576, 1 << 20)],
)
def test_sizes(text: object, nbytes: int) -> None:
    assert v.size(text, "f") == nbytes


@pytest.mark.parametrize("text", ["-1G", "G", "1X", "1 G;", "", True, 1.5, "1e9"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(InputError):
        v.size(text, "f")


@pytest.mark.parametrize("nbytes,text", [(2 << 30, "2G"), (1536 << 20, "1536M"), (1025 << 10, "1025K"), (1000, "1000")])
def test_format_size_is_exact_vzctl_syntax(nbytes: int, text: str) -> None:
    assert v.format_size(nbytes) == text
    assert v.size(text, "f") == nbytes


@pytest.mark.parametrize("value", ["relative/path", "/a/../b", "/a b", "/a;b", '/a"b', "/a\nb", "/a$b"])
def test_bad_paths(value: str) -> None:
    with pytest.raises(InputError):
        v.path(value, "paths.data")


def test_zone_checks_every_label() -> None:
    assert v.zone("uc-inf.net.internal", "z") == "uc-inf.net.internal"
    for bad in ("Example.net", "example..net", "example", "exa_mple.net", "example.net."):
        with pytest.raises(InputError):
            v.zone(bad, "z")
