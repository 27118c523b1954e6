#!/usr/bin/env bash
# The connectors rows: a generator source writing COUNT records of 1 KiB into a topic, beside
# `weir bench produce` into another topic in the same invocation; then a file sink reading
# that topic into a folder, beside `weir bench consume` of it. One broker, fresh each round;
# the broker's CPU seconds per GB over each invocation come from /proc (the bench's own share,
# the client side, is not the broker's).
# Usage: tests/bench/connectors.sh [ROUNDS] [COUNT]      Ports 18530 (QUIC) and up.
set -euo pipefail
rounds=${1:-3}
count=${2:-200000}
here=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR:-$here/target/release/weir}
source "$here/tests/bench/single-lib.sh"
plugins="$here/target/wasm-plugins/wasm32-wasip2/release"
for package in weir-module-generator weir-module-file-sink; do
  cargo build --quiet --release --locked --target wasm32-wasip2 -p "$package" --target-dir "$here/target/wasm-plugins"
done
gb=$(python3 -c "print($count * 1024 / 1e9)")
for round in $(seq 1 "$rounds"); do
  start_broker "$weir" 18530 --connector-dir-root "${TMPDIR:-/tmp}"
  before=$(cpu "$pid")
  out=$("$weir" bench connectors --topic perf --count "$count" --record-bytes 1024 --batch-bytes 1048576 \
    --source-component "$plugins/weir_module_generator.wasm" --sink-component "$plugins/weir_module_file_sink.wasm" \
    "${connect[@]}" 2>/dev/null)
  after=$(cpu "$pid")
  stop_broker
  echo "$out" | sed "s/^/round $round: /"
  python3 -c "print('round $round: broker CPU over the invocation (2 writes, 2 reads of $gb GB): {:.2f} s per GB moved'.format(($after - $before) / $ticks / ($gb * 4)))"
done
