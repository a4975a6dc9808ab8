"""Cloud peerings in the DC template: each bad row is refused in one line naming the
file and field; the rendered border files match the golden ones, and the real BIRD
parses the rendered config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ctmanager.dc import template
from ctmanager.errors import InputError
from ctmanager.peering import bird, files, status

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "templates" / "dc"
EXAMPLE = (EXAMPLE_DIR / "example.toml").read_text()
GOLDEN = ROOT / "tests" / "golden" / "peering"
A_LINK = 'local = "169.254.30.1/30" # our link address and prefix (/30 or /31)\nremote = "169.254.30.2"'
B_LINK = 'local = "169.254.30.5/30"\nremote = "169.254.30.6"'
IPSEC = '''
[[peerings]]
name = "gce-vpn"
kind = "ipsec"
border = "border-1"
interface = "eth3"
tunnel_id = 7
gateway = "203.0.113.7"
local_gateway = "198.51.100.1"
secret_file = "/etc/ctmanager/ipsec/gce-vpn.secrets"
local = "169.254.40.1/31"
remote = "169.254.40.0"
asn = 64512
peer_asn = 16550
accept = ["192.168.128.0/20"]
racks = ["rack-101"]
'''

# (id, old text, new text, expected field, expected message part)
BAD = [
    ("link-in-supernet", A_LINK, 'local = "10.200.0.1/30"\nremote = "10.200.0.2"', "peerings[0].local",
     "inside the DC's supernet"),
    ("link-too-wide", "169.254.30.1/30", "169.254.30.1/29", "peerings[0].local", "a /30 or a /31"),
    ("link-not-an-interface", "169.254.30.1/30", "169.254.30.1", "peerings[0].local", "a /30 or a /31"),
    ("link-garbage", "169.254.30.1/30", "169.254.30.1/30; reboot", "peerings[0].local", "must be our link address"),
    ("remote-off-link", 'remote = "169.254.30.2"', 'remote = "169.254.31.2"', "peerings[0].remote",
     "not a host address of the link"),
    ("remote-is-us", 'remote = "169.254.30.2"', 'remote = "169.254.30.1"', "peerings[0].remote", "our own"),
    ("links-overlap", B_LINK, 'local = "169.254.30.2/31"\nremote = "169.254.30.3"', "peerings[1].local",
     "overlaps peering 'aws-vpc1-a'"),
    ("duplicate-vlan", "vlan = 302", "vlan = 301", "peerings[1].vlan", "already peering 'aws-vpc1-a'"),
    ("vlan-out-of-range", "vlan = 301", "vlan = 4095", "peerings[0].vlan", "between 1 and 4094"),
    ("asn-reserved", "peer_asn = 64600          #", "peer_asn = 23456          #", "peerings[0].peer_asn",
     "reserved"),
    ("asn-zero", "asn = 64512               #", "asn = 0               #", "peerings[0].asn", "between 1"),
    ("asn-same", "peer_asn = 64600          #", "peer_asn = 64512          #", "peerings[0].peer_asn",
     "external BGP"),
    ("asn-text", "asn = 64512               #", 'asn = "64512"               #', "peerings[0].asn",
     "must be an integer"),
    ("accept-default", 'accept = ["172.31.0.0/16"]  #', 'accept = ["0.0.0.0/0"]  #', "peerings[0].accept[0]",
     "default route"),
    ("accept-dc-space", 'accept = ["172.31.0.0/16"]  #', 'accept = ["10.0.0.0/16"]  #', "peerings[0].accept[0]",
     "the DC already routes it"),
    ("accept-longer-of-ours", 'accept = ["172.31.0.0/16"]  #', 'accept = ["10.101.7.0/24"]  #',
     "peerings[0].accept[0]", "the DC already routes it"),
    ("accept-host-bits", 'accept = ["172.31.0.0/16"]  #', 'accept = ["172.31.0.1/16"]  #', "peerings[0].accept[0]",
     "host bits"),
    ("accept-empty", 'accept = ["172.31.0.0/16"]  #', "accept = []  #", "peerings[0].accept", "at least one"),
    ("accept-partly-another", 'accept = ["172.31.0.0/16"]\nracks', 'accept = ["172.31.0.0/17"]\nracks',
     "peerings[1].accept", "overlaps peering 'aws-vpc1-a'"),
    ("rack-unknown", 'racks = ["rack-101", "rack-102"]  #', 'racks = ["rack-999"]  #', "peerings[0].racks[0]",
     "not a slot of this DC"),
    ("rack-garbage", 'racks = ["rack-101", "rack-102"]  #', 'racks = ["rack-1;x"]  #', "peerings[0].racks[0]",
     "not a rack"),
    ("rack-twice", 'racks = ["rack-101", "rack-102"]  #', 'racks = ["rack-101", "101"]  #',
     "peerings[0].racks[1]", "listed twice"),
    ("border-unknown", 'border = "border-1"\nvlan = 301', 'border = "border-9"\nvlan = 301', "peerings[0].border",
     "no border router 'border-9'"),
    ("border-in-rack", 'address = "10.0.6.1"', 'address = "10.101.0.1"', "borders.border-1.address",
     "inside rack slot 101"),
    ("border-on-a-zone-service", 'address = "10.0.6.1"', 'address = "10.0.0.53"', "borders.border-1.address",
     "zone service resolvers"),
    ("service-outside-cloud", 's3 = "172.31.0.10" }             #', 's3 = "10.0.0.10" }             #',
     "peerings[0].services.s3", "none of the peering's accepted CIDRs"),
    ("service-is-a-route", 'services = { s3 = "172.31.0.10" }             #',
     'services = { smtp = "172.31.0.10" }             #', "peerings[0].services.smtp", "rack service 'relay'"),
    ("service-bad-name", 'services = { s3 = "172.31.0.10" }             #',
     'services = { "s3;x" = "172.31.0.10" }             #', "peerings[0].services.s3;x", "not a DNS label"),
    ("service-other-address", 'services = { s3 = "172.31.0.10" }\n', 'services = { s3 = "172.31.0.11" }\n',
     "peerings[1].services", "another address"),
    ("bfd-too-fast", "interval_ms = 100", "interval_ms = 1", "peerings[0].bfd.interval_ms", "between 10"),
    ("bfd-unknown-key", "multiplier = 3 }", "multiplyer = 3 }", "peerings[0].bfd.multiplyer", "unknown key"),
    ("kind-unknown", 'kind = "vlan"             #', 'kind = "gre"             #', "peerings[0].kind",
     "must be vlan or ipsec"),
    ("name-injection", 'name = "aws-vpc1-a"', 'name = "aws\\"; reboot"', "peerings[0].name", "not a DNS label"),
    ("name-twice", 'name = "aws-vpc1-b"', 'name = "aws-vpc1-a"', "peerings[1].name", "defined twice"),
    ("interface-injection", 'interface = "eth1"', 'interface = "eth1\\"; }"', "peerings[0].interface",
     "not a network interface name"),
    ("ipsec-without-tunnel", 'kind = "vlan"             #', 'kind = "ipsec"             #',
     "peerings[0].tunnel_id", "is required"),
]


@pytest.mark.parametrize("old,new,where,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_peering(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    assert old in EXAMPLE, f"test row does not apply: {old!r}"
    shutil.copytree(EXAMPLE_DIR, tmp_path / "dc")
    path = tmp_path / "dc" / "example.toml"
    path.write_text(EXAMPLE.replace(old, new, 1))
    with pytest.raises(InputError) as err:
        template.load(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {where}"), text
    assert message in text and "\n" not in text, text


def _dc(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    shutil.copytree(EXAMPLE_DIR, tmp_path / "dc")
    path = tmp_path / "dc" / "example.toml"
    path.write_text(EXAMPLE + extra)
    return template.load(path)


def test_the_rendered_border_files_match_the_golden_ones(tmp_path: Path) -> None:
    dc = _dc(tmp_path, IPSEC)
    got = files.border_files(dc, dc.borders[0])
    assert sorted(got) == ["bird.conf", "network/10-ctm-eth1.network", "network/10-ctm-eth2.network",
                           "network/10-ctm-eth3.network", "network/20-ctm-vl301.netdev",
                           "network/20-ctm-vl301.network", "network/20-ctm-vl302.netdev",
                           "network/20-ctm-vl302.network", "network/20-ctm-xf7.netdev", "network/20-ctm-xf7.network",
                           "swanctl.conf"]
    for rel, text in got.items():
        golden = GOLDEN / "border-1" / rel
        if os.environ.get("CTMANAGER_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), f"{rel} differs from {golden} (CTMANAGER_UPDATE_GOLDEN=1 to accept)"


def test_filters_refuse_defaults_and_the_dcs_space_and_export_only_the_racks_that_use_it(tmp_path: Path) -> None:
    dc = _dc(tmp_path, IPSEC)
    conf = bird.render(dc, dc.borders[0])
    assert "define DC_SPACE = [ 10.0.0.0/8+ ];" in conf
    assert "if net ~ [ 192.168.128.0/20{20,28} ] then accept;" in conf
    gce = conf[conf.index("filter p_gce_vpn_out"):]
    assert 'net ~ [ 10.101.0.0/16 ] then accept' in gce.split("}")[0]  # rack-101 only, not rack-102
    assert "bfd on" not in conf[conf.index("protocol bgp p_gce_vpn"):]
    assert "secret" not in files.border_files(dc, dc.borders[0])["swanctl.conf"].split("secrets {")[0]


def test_the_real_bird_parses_the_rendered_config(tmp_path: Path) -> None:
    dc = _dc(tmp_path, IPSEC)
    conf = tmp_path / "bird.conf"
    conf.write_text(bird.render(dc, dc.borders[0]))
    p = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_service_names_go_to_the_racks_that_use_the_peering(tmp_path: Path) -> None:
    dc = _dc(tmp_path)
    assert [p.name for p in dc.peerings_of(101)] == ["aws-vpc1-a", "aws-vpc1-b"]
    assert dc.peerings_of(103) == ()


FACTS = Path(__file__).resolve().parent / "facts"


def test_birds_own_word_on_two_links_and_on_one_cut() -> None:
    """Captured from the lab: both sessions up with three hostile routes refused; then one
    link cut silently (BFD took the session down)."""
    both = status.parse((FACTS / "bird-protocols-all.txt").read_text())
    assert sorted(both) == ["p_aws_vpc1_a", "p_aws_vpc1_b"]  # device, static, kernel, bfd: not sessions
    a = status.of(both, "aws-vpc1-a")
    assert a is not None and a.up and (a.imported, a.exported, a.received, a.filtered) == (2, 2, 5, 3)
    cut = status.parse((FACTS / "bird-protocols-all-cut.txt").read_text())
    down = status.of(cut, "aws-vpc1-a")
    assert down is not None and not down.up and down.bgp_state == "Active"
    assert down.info == "Error: BFD session down" and down.imported == 0
    assert status.of(cut, "aws-vpc1-b").up  # type: ignore[union-attr]
    assert status.of(cut, "nope") is None


def test_each_rack_gateway_gets_routes_to_the_clouds_of_its_peerings_only(tmp_path: Path) -> None:
    dc = _dc(tmp_path, IPSEC)  # gce-vpn is rack-101's alone
    routes = files.rack_routes(dc)
    assert sorted(routes) == ["routes/rack-101.txt", "routes/rack-102.txt"]
    assert routes["routes/rack-101.txt"].splitlines()[1:] == [
        "172.31.0.0/16 via 10.0.6.1  # peering aws-vpc1-a, aws-vpc1-b", "192.168.128.0/20 via 10.0.6.1  # peering gce-vpn"]
    assert routes["routes/rack-102.txt"].splitlines()[1:] == [
        "172.31.0.0/16 via 10.0.6.1  # peering aws-vpc1-a, aws-vpc1-b"]
