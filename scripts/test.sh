#!/usr/bin/env bash
# Set up, check (ruff, mypy, lint-imports: any finding fails), then run the whole test suite (unit + integration). With
# CTMANAGER_REQUIRE_INTEGRATION=1 (the default here) a skipped integration test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash vagrant/host-setup --packages-only   # vagrant, vagrant-lxc, debootstrap: test_vagrant.py
export CTMANAGER_REQUIRE_INTEGRATION="${CTMANAGER_REQUIRE_INTEGRATION:-1}"
# The house rules first (config: pyproject.toml, .importlinter); any finding fails the run
echo "test: ruff" >&2
.venv/bin/ruff check ctmanager tests bench
echo "test: mypy" >&2
.venv/bin/mypy ctmanager
echo "test: lint-imports" >&2
.venv/bin/lint-imports
# A private PostgreSQL cluster for the run (unix socket only): every test that
# touches the store runs on SQLite and on it
pg="${CTMANAGER_TEST_PG:-/tmp/ctmanager-test-pg}"
echo "test: PostgreSQL in $pg" >&2
.venv/bin/python -m ctmanager.lab.pgserver start "$pg"
trap '.venv/bin/python -m ctmanager.lab.pgserver stop "$pg" || true' EXIT
CTMANAGER_TEST_PG="$pg" .venv/bin/python -m pytest -ra "$@" tests
