#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs and starts what the
# tests need (OpenBao, PostgreSQL, maturin), then the gates and the suites.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services: OpenBao and PostgreSQL"
bash scripts/services.sh
# shellcheck disable=SC1091
set -a; source target/services.env; set +a

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc

step "Python package"
bash scripts/python.sh
