#!/usr/bin/env bash
# The two entry points of the README:
#   ./run.sh demo   set everything up, then run the demo (kernel arping/ping the stack in every mode)
#   ./run.sh test   set everything up, then lint (ruff, import contracts, mypy) and run the
#                   whole test suite
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
case "${1:-demo}" in
  demo) shift || true; exec .venv/bin/anp demo "$@" ;;
  test)
    shift || true
    .venv/bin/ruff check .
    .venv/bin/lint-imports --no-cache   # the layering contracts in pyproject.toml
    .venv/bin/mypy                      # type check of anp_async/ ([tool.mypy])
    exec .venv/bin/python -m pytest -p no:cacheprovider "$@" ;;
  *) echo "usage: ./run.sh demo|test [args]" >&2; exit 2 ;;
esac
