"""The CT spec: what the manager sends `ctagent apply` on stdin, as JSON.

Built by the manager from the store (`spec_for`), checked again by the agent
(`parse`): the agent runs as root on the HN and renders the spec into runtime
config files, so it trusts nothing it did not validate itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import validate as v
from ..dc import resources as res
from ..dc.model import Ct, DcTemplate
from ..dc.network import rack_context, search_domains
from ..errors import InputError

MAX_SPEC = 64 * 1024
HASH_LEN = 16  # hex chars of a spec hash: 64 bits, plenty to tell one CT's configs apart
FIELDS = ("ctid", "hostname", "rack", "tenant", "service", "env", "ip", "storage", "admst", "resources", "apps",
          "dc", "net", "dns")


@dataclass(frozen=True)
class Spec:
    ct: Ct
    dc: str
    bridge: str
    prefixlen: int
    gateway: str
    nameservers: tuple[str, ...]
    search: tuple[str, ...]


def spec_for(ct: Ct, dc: DcTemplate) -> dict[str, Any]:
    """The JSON-able spec of a configured CT."""
    rack = rack_context(dc, ct.rack)
    return {
        "ctid": ct.ctid, "hostname": ct.hostname, "rack": ct.rack, "tenant": ct.tenant, "service": ct.service,
        "env": ct.env, "ip": ct.ip, "storage": ct.storage, "admst": ct.admst,
        "resources": res.as_dict(ct.resources), "apps": list(ct.apps), "dc": dc.name,
        "net": {"bridge": rack.net.bridge, "prefixlen": rack.net.prefixlen, "gateway": rack.net.gateway},
        "dns": {"nameservers": list(dc.resolvers), "search": list(search_domains(ct, dc, rack))},
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short, stable name for a spec dict (what `spec_for` builds, or the JSON an
    agent stored): sha256 of its canonical JSON (sorted keys, no spaces), first
    HASH_LEN hex chars. The manager hashes the configured spec, the agent the one it
    applied; a difference in a report is configuration drift."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def parse(text: bytes | str, ctid: int) -> Spec:
    """Check a spec; `ctid` is the one on the command line and must match.
    Specs are immutable: one seen before is not checked again (the agent daemon
    reads its CTs' specs each report; the simulator applies the same ones often)."""
    return _parse(text, ctid)


@functools.lru_cache(maxsize=256)
def _parse(text: bytes | str, ctid: int) -> Spec:
    if len(text) > MAX_SPEC:
        raise InputError(f"spec is larger than {MAX_SPEC} bytes")
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"spec is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise InputError("spec is not JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise InputError("spec must be a JSON object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InputError("unknown field", where=f"spec.{unknown[0]}")
    missing = [f for f in FIELDS if f not in raw]
    if missing:
        raise InputError("is required", where=f"spec.{missing[0]}")
    got = v.integer(raw["ctid"], "spec.ctid", minimum=1, maximum=v.MAX_CTID)
    if got != ctid:
        raise InputError(f"spec is for CT {got}, not {ctid}", where="spec.ctid")
    net, dns = _table(raw["net"], "spec.net"), _table(raw["dns"], "spec.dns")
    if raw["admst"] not in ("UP", "DOWN"):
        raise InputError(f"must be UP or DOWN (got {raw['admst']!r})", where="spec.admst")
    ct = Ct(
        ctid=got,
        hostname=v.hostname(raw["hostname"], "spec.hostname"),
        rack=v.slot(raw["rack"], "spec.rack"),
        tenant=None if raw["tenant"] is None else v.label(raw["tenant"], "spec.tenant"),
        service=None if raw["service"] is None else v.label(raw["service"], "spec.service"),
        env=v.label(raw["env"], "spec.env"),
        ip=str(v.ipv4(raw["ip"], "spec.ip")),
        storage=v.label(raw["storage"], "spec.storage"),
        admst=raw["admst"],
        resources=res.parse(_table(raw["resources"], "spec.resources"), None, None, "spec.resources"),
        apps=tuple(v.label(a, f"spec.apps[{i}]") for i, a in enumerate(_list(raw["apps"], "spec.apps"))),
    )
    return Spec(
        ct=ct,
        dc=v.label(raw["dc"], "spec.dc"),
        bridge=v.ifname(net.get("bridge"), "spec.net.bridge"),
        prefixlen=v.integer(net.get("prefixlen"), "spec.net.prefixlen", minimum=8, maximum=30),
        gateway=str(v.ipv4(net.get("gateway"), "spec.net.gateway")),
        nameservers=tuple(str(v.ipv4(a, "spec.dns.nameservers")) for a in _list(dns.get("nameservers"), "spec.dns.nameservers")),
        search=tuple(v.zone(z, "spec.dns.search") for z in _list(dns.get("search"), "spec.dns.search")),
    )


def _table(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InputError("must be an object", where=field)
    return value


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > 64:
        raise InputError("must be a list (at most 64 entries)", where=field)
    return value
