#!/usr/bin/env bash
# Make sure redis-server and redis-cli are installed (Debian's packages), without leaving the
# packaged service running on 6379: the tests and the demo start their own servers. Also the
# openssl command line, with which tests/tls.rs makes its certificates.
# Sourced by test.sh, demo.sh and bench.sh; exits 2 when it cannot install.
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "${need_apt[*]} missing and not root; install it: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
fi
