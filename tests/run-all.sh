#!/usr/bin/env bash
# Runs every check of the project: formatting, clippy (warnings are errors), unit tests and
# end-to-end tests. Installs what the tests need when it is missing, so it works on a fresh
# machine; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

log "toolchain and targets from rust-toolchain.toml"
rustup toolchain install >/dev/null
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build the weir binary the end-to-end tests run"
cargo build --workspace --bins --locked

log "cargo test"
cargo test --workspace --locked -- --show-output
