#!/usr/bin/env bash
# Whether storing gets dearer as the log grows: one broker, one 8-partition topic with retention
# off, and GBS rounds of 1,000,000 x 1 KiB incompressible values (random bytes) produced through
# the Kafka listener by librdkafka (confluent-kafka; acks=1, 1 MiB batches, linger 5 ms). For
# each GB: MB/s, and the broker's CPU seconds (utime+stime from /proc) for that GB, counted up
# to 5 s after the producer's flush so that work the broker does later (memtable flushes,
# compaction) is counted too. Then the bytes on disk per GB stored.
# DROP_CACHES_FROM=N (root only) empties the page cache before GB N and each later one: if the
# cost then stays flat, what grew was the kernel's work of a growing page cache, not the log's.
# SERVE_ARGS adds arguments to `weir serve` (e.g. "--segment-cache-bytes 18446744073709551615",
# which leaves the page cache to the kernel).
# Usage: tests/bench/storage-growth.sh [GBS] WEIR_BINARY...   (default 8 GB; needs GBS GB free)
# Ports 18500 (QUIC), 18600 (Kafka), 18700. Needs python3 with confluent-kafka (tests/run-all.sh
# installs it).
set -euo pipefail
gbs=${1:-8}
shift
[ $# -gt 0 ] || { echo "name at least one weir binary" >&2; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/tests/bench/single-lib.sh"
count=1000000
gb=$(python3 -c "print($count * 1024 / 1e9)")
for weir in "$@"; do
  start_broker "$weir" 18500 ${SERVE_ARGS:-}
  "$weir" topic create grow --partitions 8 --config flush.mode=interval --config retention.ms=-1 \
    "${connect[@]}" >/dev/null
  for g in $(seq 1 "$gbs"); do
    if [ -n "${DROP_CACHES_FROM:-}" ] && [ "$g" -ge "$DROP_CACHES_FROM" ]; then
      sync
      echo 3 >/proc/sys/vm/drop_caches
    fi
    before=$(cpu "$pid")
    out=$(VALUES=random PRODUCE_ONLY=1 python3 "$here/tests/kafka_clients/librdkafka_perf.py" \
      127.0.0.1:18600 grow "$count" 1024 1048576)
    sleep 5
    after=$(cpu "$pid")
    mbs=$(echo "$out" | sed -n 's/.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
    python3 -c "print(f'$(basename "$weir") GB $g: $mbs MB/s, broker {($after - $before) / $ticks / $gb:.2f} CPU s/GB (5 s of settling counted), RSS $(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status") MiB')"
  done
  kill -INT "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  pid=""
  bytes=$(du -sb "$bench_dir/data/db" | awk '{print $1}')
  python3 -c "print(f'$(basename "$weir"): {$bytes / 1e9 / ($gb * $gbs):.2f} GB on disk per GB produced')"
done
