#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/storescp ] || [ ! -x /usr/bin/echoscu ]; then
    echo "== installing DCMTK (Debian package dcmtk)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dcmtk >/dev/null
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "== installing PostgreSQL (Debian package postgresql; the index tests start their own server)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi

echo "== installing aionetdicom with its test extra"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
python3 -c "import aionetdicom, pytest, hypothesis, trio, pynetdicom, sqlalchemy, aiosqlite, asyncpg, trustme, fastapi, uvicorn, httpx, aiohttp" >/dev/null

echo "== ruff"
python3 -m ruff check .
python3 -m ruff format --check .

echo "== mypy --strict src/"
python3 -m mypy --strict src/aionetdicom

echo "== docs (Sphinx; warnings are errors)"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r docs/requirements.txt
python3 -m sphinx -W --keep-going -q -b html docs docs/_build/html

echo "== pytest"
python3 -m pytest -q -p no:cacheprovider "$@"
