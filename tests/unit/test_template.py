"""DC template validation: each row mutates the example and expects a one-line
error naming the file and the field (or line for syntax errors)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ctmanager.dc import manifest, template
from ctmanager.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "templates" / "dc"
EXAMPLE = (EXAMPLE_DIR / "example.toml").read_text()

# (id, old text, new text, expected field/where, expected message part)
BAD = [
    ("malformed-toml", "[network]", "[network", "", "invalid TOML"),
    ("unknown-key", 'hostname_prefix = "hn"', 'hostname_prefx = "hn"', "skus.compute.hostname_prefx", "unknown key"),
    ("unknown-table", "[defaults]", "[defaultz]", "defaultz", "unknown key"),
    ("overlapping-slots", "count = 16\n", "count = 16\n\n[[slots]]\nfirst = 110\ncount = 4\n", "slots[1].first", "overlap"),
    ("slot-outside-supernet", 'supernet = "10.0.0.0/8"', 'supernet = "10.0.0.0/12"', "slots[0].count", "outside supernet"),
    ("supernet-too-small", 'supernet = "10.0.0.0/8"', 'supernet = "10.0.0.0/20"', "network.supernet", "smaller than one rack"),
    ("supernet-host-bits", 'supernet = "10.0.0.0/8"', 'supernet = "10.1.0.0/8"', "network.supernet", "host bits"),
    ("rack-not-a-slot", "slot = 101", "slot = 200", "racks[0].slot", "not a slot of this DC"),
    ("zone-upper-case", 'infra_zone = "uc-inf.net.internal"', 'infra_zone = "UC-inf.net.internal"', "dc.infra_zone", "lower case"),
    ("zone-underscore", 'tenant_zone = "example.net"', 'tenant_zone = "exa_mple.net"', "dc.tenant_zone", "not a DNS label"),
    ("tenant-semicolon", 'name = "acme"', 'name = "acme;reboot"', "tenants[1].name", "not a DNS label"),
    ("tenant-quote", 'name = "acme"', 'name = "ac\\"me"', "tenants[1].name", "not a DNS label"),
    ("tenant-newline", 'name = "acme"', 'name = "ac\\nme"', "tenants[1].name", "not a DNS label"),
    ("tenant-too-long", 'name = "acme"', f'name = "{"a" * 64}"', "tenants[1].name", "longer than 63"),
    ("tenant-space", 'name = "acme"', 'name = "ac me"', "tenants[1].name", "not a DNS label"),
    ("tenant-dot", 'name = "acme"', 'name = "ac.me"', "tenants[1].name", "not a DNS label"),
    ("duplicate-tenant", 'name = "acme"', 'name = "myhost"', "tenants[1].name", "listed twice"),
    ("absurd-memory", 'memory = "4G"', 'memory = "4T"', "tenants[1].memory", "at most 512G"),
    ("negative-memory", 'memory = "4G"', 'memory = "-4G"', "tenants[1].memory", "must be a size"),
    ("zero-cpus", "cpus = 2\ncpuunits", "cpus = 0\ncpuunits", "defaults.cpus", "between 1 and"),
    ("absurd-cpus", "cpus = 2\ncpuunits", "cpus = 100000\ncpuunits", "defaults.cpus", "between 1 and 64"),
    ("ranges-overlap", 'cts = "4.1-255.254"', 'cts = "3.1-255.254"', "network.cts", "overlaps services"),
    ("range-backwards", 'cts = "4.1-255.254"', 'cts = "255.1-4.1"', "network.cts", "ends before it starts"),
    ("gateway-in-range", 'gateway = "0.1"', 'gateway = "1.5"', "network.nodes", "contains the gateway"),
    ("zone-service-in-rack", '"10.0.2.10"', '"10.101.0.10"', "zone_services.ldap[0]", "inside rack slot 101"),
    ("backup-in-rack", 'backup = "10.0.4.10"', 'backup = "10.103.0.9"', "slots[0].backup", "inside rack slot 103"),
    ("backup-not-an-address", 'backup = "10.0.5.10"', 'backup = "backup.example"', "slots[1].backup",
     "not an IPv4 address"),
    ("bad-path", 'data = "/vz/data"', 'data = "/vz/data; rm -rf /"', "paths.data", "absolute path"),
    ("wrong-type", "ttl = 60", 'ttl = "60"', "dc.ttl", "must be an integer"),
    ("sku-role", 'role = "storage"', 'role = "disk"', "skus.storage.role", "must be one of"),
    ("duplicate-route", "[rack_services.socks]\n", '[rack_services.socks]\nroute = "smtp"\n', "rack_services.socks.route", "already used"),
]


def assert_input_error(load, path: Path, where: str, message: str) -> None:
    """`load()` refuses with one line starting `PATH: WHERE` and containing `message`."""
    with pytest.raises(InputError) as err:
        load()
    text = str(err.value)
    assert text.startswith(f"{path}: {where}"), text
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("old,new,where,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_template(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    assert old in EXAMPLE, f"test row does not apply: {old!r}"
    shutil.copytree(EXAMPLE_DIR, tmp_path / "dc")
    path = tmp_path / "dc" / "example.toml"
    path.write_text(EXAMPLE.replace(old, new, 1))
    assert_input_error(lambda: template.load(path), path, where, message)


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[dc]\nname = "dc1"\nbroken = \n')
    with pytest.raises(InputError, match=r"t.toml: invalid TOML: .*line 3"):
        template.load(path)


def test_example_loads() -> None:
    dc = template.load(EXAMPLE_DIR / "example.toml")
    assert dc.name == "dc1"
    assert [r.slot for r in dc.racks] == [101]
    assert {t.name for t in dc.tenants} == {"myhost", "acme", "initech"}
    assert template.rack_network(dc.network.supernet, 101).exploded == "10.101.0.0/16"
    myhost = next(t for t in dc.tenants if t.name == "myhost")
    assert myhost.apps == ("jira", "confluence", "postgresql")
    assert myhost.resources.cpulimit == 400  # follows cpus


MANIFEST_BAD = [
    ("duplicate-serial", 'serial = "CZ3101A002"', 'serial = "CZ3101A001"', "nodes[1].serial", "also used by nodes[0]"),
    ("duplicate-position", "position = 2", "position = 1", "nodes[1].position", "also used"),
    ("unknown-sku", 'sku = "storage"', 'sku = "gpu"', "nodes[3].sku", "unknown SKU"),
    ("no-storage", 'sku = "storage"', 'sku = "compute"', "nodes", "at least one storage node"),
    ("bad-mac", 'mac = "52:54:00:65:01:01"', 'mac = "52:54:00:65:01"', "nodes[0].mac", "MAC address"),
    ("position-beyond-range", "position = 4", "position = 400", "nodes[3].position", "between 1 and 254"),
]


@pytest.mark.parametrize("old,new,where,message", [b[1:] for b in MANIFEST_BAD], ids=[b[0] for b in MANIFEST_BAD])
def test_bad_manifest(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    dc = template.load(EXAMPLE_DIR / "example.toml")
    text = (EXAMPLE_DIR / "manifests" / "rack-101.toml").read_text()
    assert old in text
    path = tmp_path / "m.toml"
    path.write_text(text.replace(old, new, 1))
    assert_input_error(lambda: manifest.load(path, dc), path, where, message)


def test_each_slot_range_names_its_realm_and_backup_node() -> None:
    dc = template.load(EXAMPLE_DIR / "example.toml")
    assert (dc.realm_of(102), dc.backup_of(102)) == ("eu-west", "10.0.4.10")
    assert (dc.realm_of(201), dc.backup_of(201)) == ("us-east", "10.0.5.10")
    assert dc.backup_of(999) == ""
