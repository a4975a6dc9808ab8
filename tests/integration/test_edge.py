"""The nginx edge against real nginx and BIND: tenants by Host, backends by DNS,
path routes following `route set`, unknown and hostile Host headers refused,
and `nginx -t` on the config for the example DC and for 10,000 tenants."""

from __future__ import annotations

import http.client
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindserver import Bind, free_port
from labrack import wait_for

from ctmanager.proxies import nginx
from tests.conftest import Cli


@pytest.fixture(autouse=True)
def needs_nginx() -> None:
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.skip("needs nginx (bash scripts/setup.sh)")


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
                          capture_output=True, text=True, timeout=120)


def test_nginx_accepts_the_example_dc_s_edge_with_tls(example_store: Cli, tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=*.example.net", "-keyout", str(tmp_path / "edge.key"), "-out", str(tmp_path / "edge.crt")],
                   check=True, capture_output=True)
    example_store("edge", "path", "set", "/experimental/", "experiments", "--strip", "--allow", "10.0.0.0/8")
    example_store("edge", "path", "set", "/wiki/", "confluence", "--tenant", "myhost")
    conf = tmp_path / "edge.conf"
    example_store("edge", "config", str(conf), "--cert", str(tmp_path / "edge.crt"), "--key",
                  str(tmp_path / "edge.key"), "--prefix", str(tmp_path / "prefix"))
    p = nginx_test(conf, tmp_path / "prefix")
    assert p.returncode == 0, p.stderr
    text = conf.read_text()
    assert "myhost.example.net myhost;" in text and "rewrite ^/experimental/(.*)$ /$1 break;" in text


def test_nginx_accepts_the_edge_for_ten_thousand_tenants(tmp_path: Path) -> None:
    tenants = tuple(f"t{i:05d}" for i in range(10_000))
    routes = (nginx.path_route("/experimental/", "experiments", strip=True),) + tuple(
        nginx.path_route("/wiki/", "confluence", tenant=t) for t in tenants[:100])
    conf = tmp_path / "edge.conf"
    conf.write_text(nginx.render(nginx.Edge("example.net", ("10.0.0.53",), tenants, routes,
                                            prefix=str(tmp_path / "prefix"), listen_http=free_port())))
    p = nginx_test(conf, tmp_path / "prefix")
    assert p.returncode == 0, p.stderr


class Backend(http.server.ThreadingHTTPServer):
    """A CT's web server: answers with its name and the path it got."""

    def __init__(self, name: str, ip: str, port: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = f"{name} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__((ip, port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class EdgeLab:
    """BIND publishing the store, the CTs' addresses pointed at loopback backends
    (an `nsupdate` stands in for the rack network), and nginx in front."""

    def __init__(self, cli: Cli, tmp: Path) -> None:
        self.cli, self.tmp = cli, tmp
        self.dns_port, self.http_port, self.backend_port = free_port(), free_port(), free_port()
        cli("dns", "bind-config", str(tmp / "bind"), "--port", str(self.dns_port))
        self.bind = Bind(tmp / "bind", self.dns_port)
        self.conf, self.prefix = tmp / "edge.conf", tmp / "prefix"
        self.prefix.mkdir()

    def start(self) -> None:
        self.bind.start()
        self.cli("dns", "configure", "--server", f"127.0.0.1:{self.dns_port}", "--key-file",
                 str(self.tmp / "bind" / "tsig.key"))
        self.cli("dns", "sync")
        key = (self.tmp / "bind" / "tsig.key").read_text().split('secret "')[1].split('"')[0]
        script = "".join(f"update delete {h}.rack-101.uc-inf.net.internal. A\n"
                         f"update add {h}.rack-101.uc-inf.net.internal. 5 A {ip}\n"
                         for h, ip in (("myhost", "127.0.0.1"), ("relay-101-1", "127.0.0.2"),
                                       ("relay-101-2", "127.0.0.3")))
        subprocess.run(["nsupdate", "-y", f"hmac-sha256:ctmanager:{key}"],
                       input=f"server 127.0.0.1 {self.dns_port}\n{script}send\n", check=True, capture_output=True,
                       text=True)
        self.backends = [Backend(name, ip, self.backend_port) for name, ip in
                         (("myhost", "127.0.0.1"), ("relay-101-1", "127.0.0.2"), ("relay-101-2", "127.0.0.3"))]
        self.render()
        self.nginx = subprocess.Popen(["nginx", "-c", str(self.conf), "-p", str(self.prefix), "-e",
                                       str(self.prefix / "error.log"), "-g", "daemon off;"])
        wait_for("nginx", lambda: _get(self.http_port, "myhost.example.net", "/")[0] == 200, timeout=20)

    def render(self) -> None:
        self.cli("edge", "config", str(self.conf), "--prefix", str(self.prefix), "--http-port", str(self.http_port),
                 "--resolver-port", str(self.dns_port), "--backend-port", str(self.backend_port))
        # the DC's resolvers are not here: the test's BIND stands in for them
        text = self.conf.read_text()
        self.conf.write_text(text.replace("resolver 10.0.0.53:", "resolver 127.0.0.1:").replace(" 10.0.1.53:", " 127.0.0.1:"))

    def reload(self) -> None:
        self.render()
        subprocess.run(["nginx", "-s", "reload", "-c", str(self.conf), "-p", str(self.prefix), "-e",
                        str(self.prefix / "error.log")], check=True, capture_output=True)

    def stop(self) -> None:
        if getattr(self, "nginx", None):
            self.nginx.terminate()
            self.nginx.wait(10)
        for b in getattr(self, "backends", []):
            b.shutdown()
        self.bind.stop()


@pytest.fixture
def edge(example_store: Cli, tmp_path: Path) -> Iterator[EdgeLab]:
    lab = EdgeLab(example_store, tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def _get(port: int, host: str, path: str) -> tuple[int, str]:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode()
    except OSError:
        return 0, ""


def test_a_tenant_host_reaches_its_core_ct_and_unknown_hosts_are_refused(edge: EdgeLab) -> None:
    port = edge.http_port
    assert _get(port, "myhost.example.net", "/browse/X-1") == (200, "myhost /browse/X-1")
    for hostile in ("evil.example.net", "myhost.example.net.attacker.org", "relay-101-1.rack-101.uc-inf.net",
                    "127.0.0.1", "acme.example.net/../myhost"):
        assert _get(port, hostile, "/")[0] in (400, 421), hostile


def test_a_path_route_goes_where_its_route_points_and_follows_route_set(edge: EdgeLab) -> None:
    edge.cli("route", "set", "myhost", "experiments", "relay-101-1")
    edge.cli("edge", "path", "set", "/experimental/", "experiments", "--strip")
    edge.reload()  # a new path route is a new location: the file changes
    port = edge.http_port
    wait_for("the path route", lambda: _get(port, "myhost.example.net", "/experimental/x?y=1")
             == (200, "relay-101-1 /x?y=1"), timeout=20)
    assert _get(port, "myhost.example.net", "/other") == (200, "myhost /other")
    edge.cli("route", "set", "myhost", "experiments", "relay-101-2")  # DNS only: no reload
    wait_for("traffic following the route (resolver valid=5s)",
             lambda: _get(port, "myhost.example.net", "/experimental/x") == (200, "relay-101-2 /x"), timeout=20)
