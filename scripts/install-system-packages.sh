#!/usr/bin/env bash
# Installs the Debian packages that the tests and benchmarks run against:
# nginx (the reference proxy), wrk (load), chromium (the browser test) and
# systemd (systemd-analyze verify of the unit files), and a C compiler, since
# `pip install uwsgi` (the real uWSGI the tests call) builds it from source.
# Skips apt when all are there.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
