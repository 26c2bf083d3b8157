#!/usr/bin/env bash
# Install the dependencies and build the release binaries into build/:
<<<<<<< HEAD
# build/sluiced, build/sluice-load, build/sluice-sink, and the sluice Python
# package in build/python (PYTHONPATH=build/python python3 -c 'import sluice').
=======
# build/sluiced, build/sluice-load, build/sluice-sink, libsluice and examples/device_sender.
>>>>>>> main
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
<<<<<<< HEAD
echo "built: build/sluiced build/sluice-load build/sluice-sink build/python (the sluice package)"
=======
echo "built: build/sluiced build/sluice-load build/sluice-sink build/device_sender build/libsluice.{a,so}"
>>>>>>> main
