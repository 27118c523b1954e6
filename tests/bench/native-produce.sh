#!/usr/bin/env bash
# The native QUIC produce and consume table: 1 KiB records, acks=leader, `flush.mode=interval`,
# for 1 and 8 partitions and 16 KiB and 1 MiB batches, each row with its baselines (bare quinn
# transfer, bare fjall inserts) in the same `weir bench produce --baseline` invocation, then
# `weir bench consume` of the same topic. Each run is on a fresh broker and data folder; the
# broker's CPU seconds per GB produced and per GB fetched and its peak RSS come from /proc.
# Usage: tests/bench/native-produce.sh [ROUNDS] [COUNT] [API...]   (API: batch, record)
# VALUES=random: record values nothing compresses (default: repeated, which Weir compresses).
# Ports 18510 (QUIC), 18610 (Kafka), 18710 (registry).
set -euo pipefail
rounds=${1:-3}
count=${2:-1000000}
shift 2 || true
apis=("$@")
[ ${#apis[@]} -gt 0 ] || apis=(batch record)
here=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR:-$here/target/release/weir}
source "$here/tests/bench/single-lib.sh"
gb=$(python3 -c "print($count * 1024 / 1e9)")
for round in $(seq 1 "$rounds"); do
  for api in "${apis[@]}"; do
    for partitions in 1 8; do
      for batch in 16384 1048576; do
        start_broker "$weir" 18510
        # The baselines run first in the same invocation; the broker's CPU is read around the
        # whole invocation and the baselines' share is not the broker's (they run in the bench).
        before=$(cpu "$pid")
        out=$("$weir" bench produce --topic perf --partitions $partitions --batch-bytes $batch --count "$count" --values "${VALUES:-repeated}" \
          --acks leader --api "$api" --baseline "${connect[@]}" 2>/dev/null)
        after=$(cpu "$pid")
        fetch_before=$(cpu "$pid")
        cons=$("$weir" bench consume --topic perf --count "$count" "${connect[@]}" 2>/dev/null)
        fetch_after=$(cpu "$pid")
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        stop_broker
        quinn=$(echo "$out" | sed -n 's/.*bare quinn transfer:.*= \([0-9.]*\) MB\/s.*/\1/p')
        fjall=$(echo "$out" | sed -n 's/.*bare fjall inserts: *\([0-9.]*\) MB\/s.*/\1/p')
        prod=$(echo "$out" | sed -n 's/^produce:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
        p99=$(echo "$out" | sed -n 's/^produce ack.*p99 \([0-9.]*\) ms .*/\1/p')
        con=$(echo "$cons" | sed -n 's/^consume:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
        python3 -c "
q, f, p, c = $quinn, $fjall, $prod, $con
print(f'round $round api $api partitions $partitions batch $batch: quinn {q} fjall {f} produce {p} ({p/q:.2f} of quinn) consume {c} ({c/p:.2f}x produce) ack p99 $p99 ms, broker {($after - $before) / $ticks / $gb:.2f} CPU s/GB produced, {($fetch_after - $fetch_before) / $ticks / $gb:.2f} fetched, peak RSS {$rss / 1024:.0f} MiB')"
      done
    done
  done
done
