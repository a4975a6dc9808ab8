"""`ctmanager mail postfix-config`: the edge mail routers' Postfix, answered by ctmailmap."""

from __future__ import annotations

import argparse

from ..proxies import postfix
from .common import Registry, want_json
from .output import emit_json


def register(reg: Registry) -> None:
    cmd, group = reg.cmd, reg.group
    mail = group("mail", "the edge mail routers: Postfix answered by ctmailmap")
    p = cmd(mail, "postfix-config", cmd_postfix_config, "print the main.cf lines that point Postfix at ctmailmap",
            "ctmanager mail postfix-config --mailmap 127.0.0.1:10027 >> /etc/postfix/main.cf")
    p.add_argument("--mailmap", default="127.0.0.1:10027", metavar="IP:PORT", help="where ctmailmap listens")


def cmd_postfix_config(args: argparse.Namespace) -> int:
    text = postfix.main_cf(args.mailmap)
    if want_json(args):
        emit_json({"main.cf": text})
    else:
        print(text, end="")
    return 0
