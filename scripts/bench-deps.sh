#!/usr/bin/env bash
# Installs what `make bench` needs beyond the test suite's packages, when
# missing: wrk (the HTTP load generator behind the web rows of the bench).
set -euo pipefail

want=()
command -v wrk >/dev/null 2>&1 || want+=(wrk)

if [ ${#want[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "Installing Debian packages: ${want[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
