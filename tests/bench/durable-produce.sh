#!/usr/bin/env bash
# Durable produce: `flush.mode=always` (fsync before the acknowledgement), 1 KiB records,
# acks=leader, 8 partitions, BATCH-byte batches, with 1, 8 and 64 concurrent producers; each row
# with `weir bench produce --baseline`, whose baseline here is a plain file append of BATCH bytes
# followed by fdatasync, of the same bytes, in the same invocation (plus bare quinn). A fresh
# broker and data folder per row; the broker's CPU seconds per GB produced from /proc.
# Usage: tests/bench/durable-produce.sh [ROUNDS] [COUNT] [BATCH]   (default 3 300000 16384)
# Ports 18530 (QUIC), 18630 (Kafka), 18730 (registry).
set -euo pipefail
rounds=${1:-3}
count=${2:-300000}
batch=${3:-16384}
here=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR:-$here/target/release/weir}
source "$here/tests/bench/single-lib.sh"
gb=$(python3 -c "print($count * 1024 / 1e9)")
for round in $(seq 1 "$rounds"); do
  for producers in 1 8 64; do
    start_broker "$weir" 18530
    before=$(cpu "$pid")
    out=$("$weir" bench produce --topic durable --partitions 8 --flush always --batch-bytes "$batch" \
      --count "$count" --producers "$producers" --acks leader --baseline "${connect[@]}" 2>/dev/null)
    after=$(cpu "$pid")
    stop_broker
    fsync=$(echo "$out" | sed -n 's/.*append + fdatasync: \([0-9.]*\) MB\/s.*/\1/p')
    prod=$(echo "$out" | sed -n 's/^produce:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
    python3 -c "
f, p = $fsync, $prod
print(f'round $round producers $producers: append+fdatasync {f} MB/s, produce {p} MB/s ({p/f:.2f} of it), broker {($after - $before) / $ticks / $gb:.2f} CPU s/GB')"
  done
done
