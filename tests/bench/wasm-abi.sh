#!/usr/bin/env bash
# The Wasm call and the transform pipeline with the identity plugin as this tree builds it
# beside the same plugin as commit REV built it, in the same criterion runs: the host is this
# tree's in both, so the difference is the contract and the guest SDK of each. REV's identity is
# built in a temporary git worktree, into target/wasm-rev, for wasm32-wasip2.
# Usage: tests/bench/wasm-abi.sh REV [ROUNDS]   (e.g. e7fa006, the last commit on weir:plugin@0.2.1)
set -euo pipefail
rev=${1:?usage: $0 REV [ROUNDS]}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
tree=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$tree"' EXIT
git -C "$here" worktree add --detach --force "$tree" "$rev" >/dev/null
(cd "$tree" && CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --quiet --release --locked --target wasm32-wasip2 -p weir-module-identity --target-dir "$here/target/wasm-rev")
export WEIR_BENCH_IDENTITY_WASM=$here/target/wasm-rev/wasm32-wasip2/release/weir_module_identity.wasm
cd "$here"
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  cargo bench --quiet -p weir-runtime --bench call -- 'identity_call/(wasm|wasm_file|wasm_v0_2|native)/(100|1000)$' 2>&1 |
    grep -E '^identity_call|time:' | grep -v '%'
  cargo bench --quiet -p weir-broker --bench transform_pipeline -- \
    'transform_pipeline(_with_log)?_1KiB/(no_module|identity_wasm|identity_wasm_file)$' 2>&1 |
    grep -E '^transform_pipeline|time:' | grep -v '%'
done
