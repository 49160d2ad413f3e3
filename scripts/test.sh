#!/usr/bin/env bash
# Set up everything the suite needs, then run the whole test suite twice: on SQLite, then
# the tests that use a database again on PostgreSQL (a throwaway cluster from Debian's
# postgresql, migrated with Alembic; see tests/conftest.py). Arguments go to both runs.
# Both passes run (unless the first is interrupted); the script fails if either fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .  # one formatter, applied once (issue 15)
.venv/bin/mypy  # strict on loa/, controller/, scheduler/ ([tool.mypy] in pyproject.toml)

PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
sqlite_status=0
"${PYTEST[@]}" "$@" || sqlite_status=$?
if ((sqlite_status == 2 || sqlite_status == 4)); then  # interrupted, or a usage error
  exit "$sqlite_status"
fi

echo "== Lượt PostgreSQL: các kiểm thử có dùng cơ sở dữ liệu =="
postgresql_status=0
LOA_TEST_DATABASE=postgresql "${PYTEST[@]}" "$@" || postgresql_status=$?
# 5 = nothing collected: the arguments chose only tests without a database.
if ((postgresql_status == 5)); then
  postgresql_status=0
fi

if ((sqlite_status != 0 || postgresql_status != 0)); then
  echo "Kiểm thử thất bại: SQLite=$sqlite_status, PostgreSQL=$postgresql_status" >&2
  exit $((sqlite_status != 0 ? sqlite_status : postgresql_status))
fi
