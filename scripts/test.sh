#!/usr/bin/env bash
# Set up, then run the whole test suite (unit + integration). With
# CTMANAGER_REQUIRE_INTEGRATION=1 (the default here) a skipped integration test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash vagrant/host-setup --packages-only   # vagrant, vagrant-lxc, debootstrap: test_vagrant.py
export CTMANAGER_REQUIRE_INTEGRATION="${CTMANAGER_REQUIRE_INTEGRATION:-1}"
exec .venv/bin/python -m pytest -ra "$@" tests
