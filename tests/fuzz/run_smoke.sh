#!/usr/bin/env bash
# Run a libFuzzer target briefly from its seeds and the spec vectors; the
# fuzz-smoke CTest label calls this for every tests/fuzz/fuzz_*.c.
#
# usage: run_smoke.sh FUZZER CORPUS_DIR SEED_DIR VECTOR_DIR
#   SL_FUZZ_SECONDS   how long to run (default 20)
# Exits with the fuzzer's status: nonzero when it found a crash, leak or timeout.
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 FUZZER CORPUS_DIR SEED_DIR VECTOR_DIR" >&2
    exit 2
fi
fuzzer=$1
corpus=$2
seeds=$3
vectors=$4

mkdir -p "$corpus"
# install -m 0644: the spec vectors are read-only, their corpus copies need not be.
if [[ -d "$seeds" ]]; then
    find "$seeds" -maxdepth 1 -type f -exec install -m 0644 {} "$corpus"/ \;
fi
if [[ -d "$vectors" ]]; then
    find "$vectors" -maxdepth 1 -type f -name '*.bin' -exec install -m 0644 {} "$corpus"/ \;
fi

exec "$fuzzer" -max_total_time="${SL_FUZZ_SECONDS:-20}" -rss_limit_mb=2048 -timeout=10 "$corpus"
