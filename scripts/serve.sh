#!/usr/bin/env bash
# Install aionetdicom with its server extra and run qrscp, the Storage + Query/Retrieve
# SCP on an embedded SQLite index: port $PORT (11112), AE title $AE_TITLE (QRSCP),
# instances and index under $STORAGE_DIR (./qrscp-storage). Extra arguments go to qrscp
# (e.g. --destination VIEWER=10.0.0.7:11112, --database postgresql://..., --config F).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[server]'
exec python3 -m aionetdicom qrscp --aetitle "${AE_TITLE:-QRSCP}" \
    -od "${STORAGE_DIR:-./qrscp-storage}" -v "${PORT:-11112}" "$@"
