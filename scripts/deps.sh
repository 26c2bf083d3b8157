#!/usr/bin/env bash
# Install what Sluice needs to build, test and benchmark, from Debian 12's
# packages. Idempotent: does nothing when everything is already installed.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config git      # toolchain
  clang libclang-rt-14-dev llvm             # second compiler, sanitizers, libFuzzer, symbolizer
  libmicrohttpd-dev                         # HTTP API
  zlib1g-dev                                # gzip bodies of line protocol writes, and of uplink requests
  libcurl4-openssl-dev libsnappy-dev        # the uplinks: HTTP client, remote write compression
  libmosquitto-dev                          # MQTT: the subscriber and the mqtt:// uplink
  mosquitto mosquitto-clients               # the MQTT tests' and benchmark's broker, mosquitto_pub/_sub
  influxdb-client                           # the InfluxDB 1.x CLI (influx -import) in the line protocol tests
  victoria-metrics                          # the line protocol benchmark's peer (bench/line_http.py); the uplink's upstream, with vmagent
  influxdb                                  # influxd: the uplink tests' InfluxDB 1.x upstream
  python3                                   # integration tests (stdlib only)
  prometheus                                # promtool, to check /metrics; the uplink's remote write upstream
  curl                                      # the README's tour
  gnuplot-nox python3-numpy                 # bench/soak plots; bench/compare's numpy gateway
  python3-dev python3-setuptools python3-wheel  # the sluice Python package's C extension (python/)
  python3-pytest python3-venv python3-pip   # its tests (tests/python), the pip install test
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
