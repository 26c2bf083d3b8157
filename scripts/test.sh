#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. GCC build (-Werror), every unit and integration test;
#   2. Clang build (-Werror);
#   3. Clang with AddressSanitizer + UndefinedBehaviorSanitizer, every unit
#      and integration test again, plus each libFuzzer target from its seeds
#      for SL_FUZZ_SECONDS (default 20) seconds;
#   4. Clang with ThreadSanitizer: the tests that run the ingest and apply
#      threads (and the HTTP thread) hardest, concurrently.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)
started=$(date +%s)

echo "== gcc: build and test"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j1

echo "== clang: build"
cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build build-clang -j"$jobs"

echo "== clang + ASan + UBSan: build and test, fuzz smoke"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
      -DSL_SANITIZE=ON -DSL_FUZZ=ON >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j1

echo "== clang + TSan: build and the threaded tests"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DSL_TSAN=ON >/dev/null
cmake --build build-tsan -j"$jobs" --target sluiced sluice-load sluice-log test_commit test_series mqtt_device
TSAN_OPTIONS="halt_on_error=1:exitcode=66:suppressions=$PWD/tests/tsan.supp" \
  ctest --test-dir build-tsan --output-on-failure -j1 \
        -R '^test_commit$|^test_series$|integration_test_(crash|native_tcp|native_udp|udp_load|io_faults|log_full|http_api|tcp_hostile|signals|line_write|uplink_faults|uplink_vm|uplink_mqtt|mqtt)$'

echo "== all suites passed in $(( $(date +%s) - started )) s"
