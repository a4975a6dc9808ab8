#!/usr/bin/env bash
# The DC lab: set up, start a private PostgreSQL cluster (unix socket only, in
# /var/lib/ctmanager-dclab-pg), make the example DC's store in it, install
# rack-102 beside rack-101, and bring both racks up at once: each with its own
# HNs (network namespaces with sshd + ctagent), LXC CTs and manager daemon, all
# on the one store. Ends with `ctmanager status`: every CT of both racks UP | UP.
# Re-running starts afresh (the lab is taken down, the database emptied).
# Stop it with: scripts/dc-lab.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
PG=/var/lib/ctmanager-dclab-pg
LAB=/var/lib/ctmanager-lab
if [ "${1:-}" = "down" ]; then
    ctmanager lab down --dir "$LAB" || true
    python -m ctmanager.lab.pgserver stop "$PG"
    exit 0
fi
ctmanager lab down --dir "$LAB" >/dev/null 2>&1 || true
CTMANAGER_STORE=$(python -m ctmanager.lab.pgserver start "$PG" --database ctmanager)
export CTMANAGER_STORE
echo "store: $CTMANAGER_STORE" >&2

set -x
ctmanager init example
ctmanager rack install rack-102 templates/dc/manifests/rack-102.toml
ctmanager lab up --dir "$LAB" --racks 101,102 --hns 3
ctmanager status
