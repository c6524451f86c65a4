#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs and starts what the
# tests need (OpenBao, PostgreSQL, maturin), then the gates, the suites, the docs and
# the packages as crates.io and PyPI would get them.
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

step "API docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked

step "Rust tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc

step "crates: each library and castle-cli packaged and built alone from its .crate"
# --allow-dirty: this checks what packaging makes of the tree, committed or not.
# Cargo verifies against a temporary registry of the packaged crates. It unpacks
# them under $CARGO_HOME/registry/src/-<hash>/, keyed by the registry's path, and
# takes a registry crate of the same version as unchanged: neither unpacked nor
# compiled again. A run from the same checkout path after a change (the version
# stays 0.1.0) would verify the earlier tree. So the unpacked copies and the
# compiled castle crates go first; only this workspace's crates are named castle-*.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/castle-* \
  "${CARGO_TARGET_DIR:-target}"/debug/.fingerprint/castle-*
cargo package --workspace --exclude castle-py --exclude castle-tests --locked --allow-dirty

step "Python package: the wheel, installed in a fresh venv, and its tests"
bash scripts/python.sh
