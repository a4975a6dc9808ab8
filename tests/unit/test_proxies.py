"""Nothing a name or path can carry reaches the nginx or Dante config."""

from __future__ import annotations

import pytest

from ctmanager.errors import InputError
from ctmanager.proxies import dante, nginx
from ctmanager.proxies.mailmap import Index, encode


@pytest.mark.parametrize("tenant", ["evil;}", "a b", "x\nserver {", "UPPER", "-x"])
def test_a_tenant_name_that_could_inject_is_refused(tenant: str) -> None:
    with pytest.raises(InputError, match="not a DNS label"):
        nginx.render(nginx.Edge("example.net", ("10.0.0.53",), (tenant,)))


@pytest.mark.parametrize("path", ["/x;}/", "/a b/", "x/", "/x", "/$host/", "/../"])
def test_a_path_that_could_inject_is_refused(path: str) -> None:
    with pytest.raises(InputError):
        nginx.path_route(path, "svc")


def test_acl_values_are_checked() -> None:
    with pytest.raises(InputError, match="CIDR"):
        nginx.path_route("/x/", "svc", allow=["10.0.0.0/8; deny all"])
    with pytest.raises(InputError, match="app name"):
        dante.acl("jira }", "10.0.0.0/8")
    assert dante.acl("jira", "10.1.2.3/8").dest == "10.0.0.0/8"


def test_mail_lookups() -> None:
    idx = Index("example.net", {"myhost": frozenset({"jira"})})
    lmtp = "lmtp:inet:mailstore.myhost.example.net.internal:24"
    assert idx.lookup("jira@myhost.example.net") == (200, lmtp)
    assert idx.lookup("bob@myhost.example.net") == (200, "discard:")
    assert idx.lookup("myhost.example.net") == (200, lmtp)
    assert idx.lookup("jira@other.example.net")[0] == 500
    assert idx.lookup("@@")[0] == 500
    assert encode("a b%c") == "a%20b%25c"
