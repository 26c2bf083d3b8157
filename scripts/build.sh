#!/usr/bin/env bash
# Install the dependencies and build the release binaries into build/:
# build/sluiced, build/sluice-load, build/sluice-sink, libsluice and examples/device_sender.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo "built: build/sluiced build/sluice-load build/sluice-sink build/device_sender build/libsluice.{a,so}"
