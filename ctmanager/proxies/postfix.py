"""The Postfix main.cf lines of an edge mail router: every table it needs is
answered by ctmailmap (tcp_table), so the router keeps no per-tenant state."""

from __future__ import annotations

from ..validate import hostport


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
