#!/usr/bin/env bash
# What storing record batches costs the broker, per GB produced through the Kafka listener by a
# librdkafka producer (confluent-kafka; acks=1, 1 MiB batches, linger 5 ms), with compressible
# values (one repeated byte) and incompressible ones (random bytes): MB/s, the broker's CPU
# seconds per GB (utime+stime from /proc) produced and then fetched by kcat from the start to
# the end (and the context switches of its threads per GB produced), and the bytes its data folder holds per GB produced once flushed. For each binary given, in turn, ROUNDS times, each run on a fresh
# broker and data folder (one node, `flush.mode=interval`, 8 partitions, retention off).
# DROP_CACHES=1 (root only) empties the page cache before each run: on this VM, writing into
# page cache that has grown into memory not touched before costs the broker more and more CPU
# as it grows (see tests/bench/storage-growth.sh), which drowns the differences between builds.
# Usage: tests/bench/storage-compression.sh [ROUNDS] [COUNT] WEIR_BINARY...
# (default 3 rounds of 1,000,000 records of 1 KiB). Ports 18500 (QUIC), 18600 (Kafka), 18700.
# Needs python3 with confluent-kafka, and kcat (tests/run-all.sh installs both).
set -euo pipefail
rounds=${1:-3}
count=${2:-1000000}
shift 2
[ $# -gt 0 ] || { echo "name at least one weir binary" >&2; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/tests/bench/single-lib.sh"
gb=$(python3 -c "print($count * 1024 / 1e9)")
for round in $(seq 1 "$rounds"); do
  for weir in "$@"; do
    for values in repeated random; do
      if [ "${DROP_CACHES:-}" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
      start_broker "$weir" 18500
      "$weir" topic create perf --partitions 8 --config flush.mode=interval --config retention.ms=-1 \
        "${connect[@]}" >/dev/null
      before=$(cpu "$pid")
      switches_before=$(switches "$pid")
      out=$(VALUES=$values PRODUCE_ONLY=1 python3 "$here/tests/kafka_clients/librdkafka_perf.py" \
        127.0.0.1:18600 perf "$count" 1024 1048576)
      after=$(cpu "$pid")
      switches_after=$(switches "$pid")
      # Fetch: kcat (C librdkafka) reads the topic from the start to its end.
      fetch_before=$(cpu "$pid")
      kcat -C -b 127.0.0.1:18600 -t perf -o beginning -e -q -f '%R' >/dev/null
      fetch_after=$(cpu "$pid")
      # A clean stop flushes the memtables, so the folder holds what the log costs on disk.
      kill -INT "$pid"
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      pid=""
      bytes=$(du -sb "$bench_dir/data/db" | awk '{print $1}')
      mbs=$(echo "$out" | sed -n 's/.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
      python3 -c "print(f'round $round $(basename "$weir") $values values: $mbs MB/s, broker {($after - $before) / $ticks / $gb:.2f} CPU s/GB produced ({($switches_after - $switches_before) / $gb / 1000:.0f}k context switches per GB), {($fetch_after - $fetch_before) / $ticks / $gb:.2f} fetched (kcat), {$bytes / 1e9 / $gb:.2f} GB on disk per GB')"
    done
  done
done
