#!/usr/bin/env bash
# Run each atheris fuzz target of aionetdicom for a fixed time (not part of CI).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, targets pdu dimse
#
# Installs atheris with pip when it is missing, seeds fuzz/corpus/<target>/ with
# fuzz/make_corpus.py, and keeps what libFuzzer adds there for the next run. Crashing
# inputs land in fuzz/artifacts/<target>/. Exit status: 0 when no target crashed.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
SECONDS_PER_TARGET="${1:-60}"
shift $(( $# > 0 ? 1 : 0 ))
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(pdu dimse)
fi

case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 64 ;;
esac

if ! "$PYTHON" -c "import atheris" 2>/dev/null; then
    echo "atheris is not installed; trying: $PYTHON -m pip install atheris" >&2
    if ! "$PYTHON" -m pip install atheris; then
        cat >&2 <<'MSG'

ERROR: atheris could not be installed on this machine, so the fuzz targets cannot run.
atheris ships binary wheels for common Linux/macOS CPython versions; elsewhere pip
builds it from source, which needs clang with libFuzzer (see the atheris README).
The hypothesis fuzz tests (tests/unit/test_fuzz_decoders.py) do not need atheris.
MSG
        exit 2
    fi
fi

cd "$ROOT" || exit 1
"$PYTHON" "$HERE/make_corpus.py" || exit 1

status=0
for target in "${TARGETS[@]}"; do
    script="$HERE/fuzz_$target.py"
    if [ ! -f "$script" ]; then
        echo "no such target: $target (expected $script)" >&2
        status=1
        continue
    fi
    corpus="$HERE/corpus/$target"
    artifacts="$HERE/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "=== fuzz_$target: ${SECONDS_PER_TARGET}s, corpus $corpus" >&2
    "$PYTHON" "$script" "$corpus" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -max_len=16384 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/"
    code=$?
    if [ $code -ne 0 ]; then
        echo "=== fuzz_$target exited with $code: see $artifacts/" >&2
        status=1
    fi
done
exit $status
