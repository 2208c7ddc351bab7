#!/usr/bin/env bash
# Install aionetdicom and run its most useful server today: a Storage + Verification
# SCP (storescp) on port $PORT (11112), AE title ANY-SCP, files into $STORAGE_DIR
# (./incoming). The Storage + Query/Retrieve server `qrscp` takes its place once it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e .
storage="${STORAGE_DIR:-./incoming}"
mkdir -p "$storage"
exec python3 -m aionetdicom storescp --aetitle ANY-SCP -od "$storage" +xa -v "${PORT:-11112}" "$@"
