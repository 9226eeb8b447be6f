#!/usr/bin/env bash
# Installs the Debian packages that the tests and benchmarks run against:
# nginx (the reference proxy), wrk (load), chromium (the browser test),
# haproxy (a real sender of the PROXY protocol), nghttp2-client (h2load, the
# HTTP/2 load tool), curl with HTTP/2, openssl (test certificates) and
# systemd (systemd-analyze verify of the unit files), and a C compiler, since
# `pip install uwsgi` (the real uWSGI the tests call) builds it from source.
# Skips apt when all are there.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
