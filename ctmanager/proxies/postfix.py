"""The Postfix main.cf lines of an edge mail router: every table it needs is
answered by ctmailmap (tcp_table), so the router keeps no per-tenant state."""

from __future__ import annotations

import argparse
from typing import Any

from ..agent.config import hostport
from ..cli.commands import _json
from ..cli.output import emit_json


def main_cf(mailmap: str) -> str:
    host, port = hostport(mailmap, "--mailmap")
    table = f"tcp:{host}:{port}"
    return f"""# Edge mail router, written by ctmanager: tenants and mailboxes come from ctmailmap.
# Postfix warns that tcp_table is not secure: ctmailmap must listen on loopback or a trusted net.
relay_domains = {table}
transport_maps = {table}
# the domain's own answer never decides for unknown mailboxes: ctmailmap answers
# every address of a known tenant itself (its mailbox, or discard:)
parent_domain_matches_subdomains =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
"""


def register(sub: argparse._SubParsersAction, helpers: dict[str, Any]) -> None:
    cmd, group = helpers["cmd"], helpers["group"]
    mail = group("mail", "the edge mail routers: Postfix answered by ctmailmap")
    p = cmd(mail, "postfix-config", cmd_postfix_config, "print the main.cf lines that point Postfix at ctmailmap",
            "ctmanager mail postfix-config --mailmap 127.0.0.1:10027 >> /etc/postfix/main.cf")
    p.add_argument("--mailmap", default="127.0.0.1:10027", metavar="IP:PORT", help="where ctmailmap listens")


def cmd_postfix_config(args: argparse.Namespace) -> int:
    text = main_cf(args.mailmap)
    if _json(args):
        emit_json({"main.cf": text})
    else:
        print(text, end="")
    return 0
