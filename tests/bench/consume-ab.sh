#!/usr/bin/env bash
# Native QUIC consume of 1 KiB records in 1 MiB batches, for one or more broker builds taken in
# turn in each round (so a noisy machine hits them alike): each run produces COUNT records into
# a fresh broker (1 and 8 partitions), then `weir bench consume` reads them; prints the consume
# rate and the CPU seconds per GB fetched of the broker (utime+stime from /proc) and of the
# consuming client (its process's own, read as the script's waited-for children's time).
# Usage: tests/bench/consume-ab.sh ROUNDS COUNT WEIR [WEIR...]
# VALUES=random: values nothing compresses, stored as they are (default repeated: stored LZ4
# compressed, so the broker inflates every batch it sends).
# Ports 18510 (QUIC), 18610 (Kafka), 18710 (registry), 18810 (console).
set -euo pipefail
rounds=${1:?rounds}
count=${2:?count}
shift 2
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS COUNT WEIR [WEIR...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/tests/bench/single-lib.sh"
gb=$(python3 -c "print($count * 1024 / 1e9)")
children() { awk '{print $16 + $17}' "/proc/$$/stat"; }
for round in $(seq 1 "$rounds"); do
  for weir in "$@"; do
    for partitions in 1 8; do
      start_broker "$weir" 18510
      "$weir" bench produce --topic perf --partitions "$partitions" --batch-bytes 1048576 --count "$count" \
        --values "${VALUES:-repeated}" --acks leader "${connect[@]}" >/dev/null 2>&1
      before=$(cpu "$pid")
      client0=$(children)
      out=$("$weir" bench consume --topic perf --count "$count" "${connect[@]}" 2>/dev/null)
      client1=$(children)
      after=$(cpu "$pid")
      stop_broker
      rate=$(echo "$out" | sed -n 's/^consume:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
      python3 -c "print(f'round $round $weir partitions $partitions: consume $rate MB/s, broker {($after - $before) / $ticks / $gb:.2f}, client {($client1 - $client0) / $ticks / $gb:.2f} CPU s/GB fetched')"
    done
  done
done
