#!/usr/bin/env bash
# Install the dependencies and build the release binaries into build/:
# build/sluiced, build/sluice-load, build/sluice-sink, libsluice
# (build/libsluice.{a,so}), build/device_sender, and the sluice Python
# package in build/python (PYTHONPATH=build/python python3 -c 'import sluice').
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo "built: build/sluiced build/sluice-load build/sluice-sink build/device_sender build/libsluice.{a,so} build/python (the sluice package)"
