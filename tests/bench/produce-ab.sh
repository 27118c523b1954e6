#!/usr/bin/env bash
# Native QUIC produce, 1 KiB records, acks=leader, for one or more builds taken in turn in each
# round (so a noisy machine hits them alike): each run creates a topic of PARTITIONS partitions
# on a fresh broker and `weir bench produce` sends COUNT records round the partitions in
# BATCH_BYTES batches. Prints MB/s, the ack p99, and the CPU seconds per GB produced of the
# broker (utime+stime from /proc) and of the producing client (its process's own, read as the
# script's waited-for children's time).
# Usage: tests/bench/produce-ab.sh ROUNDS COUNT PARTITIONS BATCH_BYTES WEIR [WEIR...]
# API=record: `Producer::send` per record (default batch: `Producer::send_batch`).
# VALUES=random: values nothing compresses (default repeated).
# TOPIC_CONFIG: more `--config k=v` for the topic (default: none, so flush.mode=always).
# Ports 18560 (QUIC), 18660 (Kafka), 18760 (registry), 18860 (console).
set -euo pipefail
rounds=${1:?rounds}
count=${2:?count}
partitions=${3:?partitions}
batch=${4:?batch bytes}
shift 4
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS COUNT PARTITIONS BATCH_BYTES WEIR [WEIR...]" >&2; exit 2; }
source "$(dirname "$0")/single-lib.sh"
gb=$(python3 -c "print($count * 1024 / 1e9)")
children() { awk '{print $16 + $17}' "/proc/$$/stat"; }
for round in $(seq 1 "$rounds"); do
  for weir in "$@"; do
    start_broker "$weir" 18560
    # shellcheck disable=SC2086 # TOPIC_CONFIG is a list of words
    "$weir" topic create perf --partitions "$partitions" --config retention.ms=-1 ${TOPIC_CONFIG:-} "${connect[@]}" >/dev/null
    broker0=$(cpu "$pid")
    client0=$(children)
    out=$("$weir" bench produce --topic perf --partitions "$partitions" --batch-bytes "$batch" --count "$count" \
      --duration-secs 300 --values "${VALUES:-repeated}" --acks leader --api "${API:-batch}" "${connect[@]}" 2>/dev/null)
    client1=$(children)
    broker1=$(cpu "$pid")
    stop_broker
    rate=$(echo "$out" | sed -n 's/^produce:.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
    p99=$(echo "$out" | sed -n 's/^produce ack.*p99 \([0-9.]*\) ms .*/\1/p')
    python3 -c "
print(f'round $round $(basename "$weir") partitions $partitions batch $batch: {$rate} MB/s, ack p99 $p99 ms, broker {($broker1 - $broker0) / $ticks / $gb:.2f} CPU s/GB, client {($client1 - $client0) / $ticks / $gb:.2f} CPU s/GB')"
  done
done
