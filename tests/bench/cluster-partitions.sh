#!/usr/bin/env bash
# A three-broker cluster with one topic of 1,000 partitions, replication factor 3: produce
# COUNT x 1 KiB records round all partitions (`weir bench produce --api batch`, 16 KiB
# batches, acks=leader) and report MB/s and the three brokers' CPU seconds per GB together
# (from /proc), for each binary given in turn, ROUNDS times. A fresh cluster per run.
# Usage: tests/bench/cluster-partitions.sh [ROUNDS] [COUNT] WEIR_BINARY...   Ports 174xx..177xx.
set -euo pipefail
rounds=${1:-2}
count=${2:-300000}
shift 2
[ $# -gt 0 ] || { echo "name at least one weir binary" >&2; exit 1; }
source "$(dirname "$0")/cluster-lib.sh"
pids=()
dir=""
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; [ -z "$dir" ] || rm -rf "$dir"; }
trap cleanup EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
gb=$(python3 -c "print($count * 1024 / 1e9)")
for round in $(seq 1 "$rounds"); do
  for weir in "$@"; do
    dir=$(mktemp -d)
    start_cluster "$dir"
    connect=(--bootstrap 127.0.0.1:17501 --data-dir "$dir/d1")
    # Every broker must have registered before an RF3 topic can be placed.
    for _ in $(seq 1 100); do
      "$weir" topic create big --partitions 1000 --replication-factor 3 --config flush.mode=interval \
        --config retention.ms=-1 "${connect[@]}" >/dev/null 2>&1 && break
      sleep 0.2
    done
    sleep 3
    before=0; for p in "${pids[@]}"; do before=$((before + $(cpu "$p"))); done
    out=$("$weir" bench produce --topic big --partitions 1000 --batch-bytes 16384 --count "$count" --acks leader \
      "${connect[@]}" 2>/dev/null | grep '^produce:')
    after=0; for p in "${pids[@]}"; do after=$((after + $(cpu "$p"))); done
    mbs=$(echo "$out" | sed 's/.*records\/s, \([0-9.]*\) MB\/s.*/\1/')
    python3 -c "print(f'round $round $(basename "$weir"): $mbs MB/s, brokers {($after - $before) / $ticks / $gb:.2f} CPU s/GB')"
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    pids=()
    rm -rf "$dir"
    dir=""
  done
done
