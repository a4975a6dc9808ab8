"""An IPsec peering's rendered swanctl.conf, loaded by the real strongSwan (charon in a
namespace of its own, so nothing of the host's IPsec state is touched)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labrack import wait_for

from ctmanager.dc import template
from ctmanager.peering import files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "templates" / "dc"
NS = "ctm-test-swan"


@pytest.fixture
def charon(tmp_path: Path) -> Iterator[Path]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    log = tmp_path / "charon.log"
    proc = subprocess.Popen(["ip", "netns", "exec", NS, "/usr/sbin/charon-systemd"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    try:
        wait_for("charon's vici socket", lambda: subprocess.run(
            ["ip", "netns", "exec", NS, "swanctl", "--stats"], capture_output=True).returncode == 0, timeout=20)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_charon_loads_the_rendered_ipsec_peering_and_its_secret(tmp_path: Path, charon: Path) -> None:
    secret = tmp_path / "gce-vpn.secrets"
    secret.write_text('ike-gce-vpn {\n  id = 203.0.113.7\n  secret = "not-printed"\n}\n')
    secret.chmod(0o600)
    shutil.copytree(EXAMPLE_DIR, tmp_path / "dc")
    path = tmp_path / "dc" / "example.toml"
    path.write_text((EXAMPLE_DIR / "example.toml").read_text() + f'''
[[peerings]]
name = "gce-vpn"
kind = "ipsec"
border = "border-1"
interface = "eth3"
tunnel_id = 7
gateway = "203.0.113.7"
local_gateway = "198.51.100.1"
secret_file = "{secret}"
local = "169.254.40.1/31"
remote = "169.254.40.0"
asn = 64512
peer_asn = 16550
accept = ["192.168.128.0/20"]
racks = ["rack-101"]
''')
    dc = template.load(path)
    conf = tmp_path / "swanctl.conf"
    text = files.border_files(dc, dc.borders[0])["swanctl.conf"]
    assert "not-printed" not in text
    conf.write_text(text)
    p = subprocess.run(["ip", "netns", "exec", NS, "swanctl", "--load-all", "--file", str(conf)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "loaded connection 'gce-vpn'" in p.stdout and "loaded ike secret 'ike-gce-vpn'" in p.stdout, p.stdout
    listed = subprocess.run(["ip", "netns", "exec", NS, "swanctl", "--list-conns"], capture_output=True, text=True)
    assert "gce-vpn: IKEv2" in listed.stdout and "203.0.113.7" in listed.stdout, listed.stdout
