#!/usr/bin/env bash
# The main job: set up, then build the local lab DC from the example template:
# init (rack-101 + tenants), install rack-102 from its delivery manifest, add a
# tenant there, move a route, render every config into lab/render, print status.
# Re-running starts the lab store afresh; rendering only rewrites what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export CTMANAGER_STORE="$PWD/lab/ctmanager.db"
mkdir -p lab
rm -f lab/ctmanager.db lab/ctmanager.db-wal lab/ctmanager.db-shm

set -x
ctmanager init example
ctmanager rack install rack-102 templates/dc/manifests/rack-102.toml
ctmanager tenant add bigco --rack rack-102 --apps jira,confluence,postgresql --memory 16G --disk 100G --cpus 8
ctmanager route set myhost smtp relay-101-2
ctmanager render lab/render
ctmanager status
