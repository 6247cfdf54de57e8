#!/usr/bin/env bash
# System packages the test suite drives for real: Docker Engine (+ debootstrap for a base image
# built here, since no registry is reachable), headless Chromium for the MLflow UI test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/apt-install.sh" docker.io docker-registry debootstrap chromium ca-certificates iptables openssl
