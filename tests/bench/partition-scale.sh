#!/usr/bin/env bash
# Many partitions on one broker: for each shape TOPICSxPARTITIONS, a fresh broker, then
# `weir bench produce --api batch --topics T --partitions P` (it creates the topics and prints
# how long that took, then goes round all the partitions with 64 KiB batches of 1 KiB records),
# while a loop times a fresh client's first fetch of one record from an idle topic (`weir consume
# idle --count 1`: process start, QUIC handshake and one fetch), also timed before the load.
# Reports produce MB/s, the broker's CPU s/GB and its RSS (after creating the topics, and
# peak), per partition beyond the 8-partition shape.
# Usage: tests/bench/partition-scale.sh [COUNT] [SHAPE...]   (default 2000000 1x8 100x100)
# Ports 18550 (QUIC), 18650 (Kafka), 18750 (registry).
set -euo pipefail
count=${1:-2000000}
shift || true
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(1x8 100x100)
here=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR:-$here/target/release/weir}
source "$here/tests/bench/single-lib.sh"
rss_kib() { awk "/$2/ {print \$2}" "/proc/$1/status"; }
fetch_ms() { # a fresh client's first fetch of the idle topic, in ms
  local t0 t1
  t0=$(date +%s%N)
  "$weir" consume idle --partition 0 --from earliest --count 1 "${connect[@]}" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
gb=$(python3 -c "print($count * 1024 / 1e9)")
for shape in "${shapes[@]}"; do
  topics=${shape%x*}
  partitions=${shape#*x}
  start_broker "$weir" 18550
  "$weir" topic create idle --partitions 1 "${connect[@]}" >/dev/null
  echo idle | "$weir" produce idle "${connect[@]}" 2>/dev/null
  quiet=$(for _ in 1 2 3 4 5; do fetch_ms; done | sort -n | tr '\n' ' ')
  rss_start=$(rss_kib "$pid" VmRSS)
  "$weir" bench produce --topic s --topics "$topics" --partitions "$partitions" --batch-bytes 65536 \
    --count 0 --duration-secs 3600 "${connect[@]}" 2>/dev/null | grep '^created' || true
  rss_created=$(rss_kib "$pid" VmRSS)
  before=$(cpu "$pid")
  "$weir" bench produce --topic s --topics "$topics" --partitions "$partitions" --batch-bytes 65536 \
    --count "$count" --duration-secs 3600 --acks leader "${connect[@]}" >"$bench_dir/produce" 2>/dev/null &
  producer=$!
  busy=""
  sleep 1
  while kill -0 "$producer" 2>/dev/null; do busy="$busy $(fetch_ms)"; sleep 0.2; done
  wait "$producer"
  after=$(cpu "$pid")
  peak=$(rss_kib "$pid" VmHWM)
  stop_broker
  mbs=$(sed -n 's/^produce:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p' "$bench_dir/produce")
  python3 -c "
import statistics
busy = sorted(int(x) for x in '$busy'.split())
parts = $topics * $partitions
print(f'$shape ({parts} partitions): produce $mbs MB/s, broker {($after - $before) / $ticks / $gb:.2f} CPU s/GB; '
      f'RSS {$rss_start/1024:.0f} MiB at start, {$rss_created/1024:.0f} MiB with the topics ({($rss_created - $rss_start) / parts:.1f} KiB per partition), peak {$peak/1024:.0f} MiB; '
      f'idle-topic first fetch, fresh client: quiet [ $quiet] ms, under load median {statistics.median(busy) if busy else 0} ms max {max(busy) if busy else 0} ms ({len(busy)} tries)')"
done
