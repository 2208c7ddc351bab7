#!/usr/bin/env bash
# Install aionetdicom and run its most useful server: a Verification SCP on port 11112.
# (The Storage + Query/Retrieve server `qrscp` takes its place once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e .
exec python3 -m aionetdicom echoscp --aetitle ANY-SCP -v "${PORT:-11112}" "$@"
