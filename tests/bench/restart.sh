#!/usr/bin/env bash
# How soon a broker holding a big log serves again: produce SIZE_GIB GiB of 1 KiB records into
# one topic of PARTITIONS partitions (`weir bench produce --api batch`, 64 KiB batches,
# `flush.mode=interval`, retention off), stop the broker (a clean SIGINT, then, for the second
# figure, SIGKILL after a restart and a few seconds of more writes), start it again and time, from
# the start of the process: its listeners up (its "serving" banner), and the first fetch of
# the last partition answered (`weir consume --partition LAST --count 1`).
# Usage: tests/bench/restart.sh [SIZE_GIB] [PARTITIONS] [WEIR_BINARY...]   (default 10 1000)
# BATCH_BYTES sets the batch size (default 65536); more, smaller batches mean more index entries.
# VALUES=random produces values that do not compress (`weir bench produce --values random`;
# the batches then go to segment files), VALUES=repeated (the default) values that do.
# Ports 18520 (QUIC), 18620 (Kafka), 18720 (registry). Needs SIZE_GIB x ~0.1 GB of disk
# (the values compress), or SIZE_GIB GiB with VALUES=random.
set -euo pipefail
size_gib=${1:-10}
partitions=${2:-1000}
shift 2 || true
binaries=("$@")
here=$(cd "$(dirname "$0")/../.." && pwd)
[ ${#binaries[@]} -gt 0 ] || binaries=("$here/target/release/weir")
source "$here/tests/bench/single-lib.sh"
count=$((size_gib * 1024 * 1024))
now() { date +%s.%N; }
start() { # start WEIR: the broker in the background, its pid in $pid and start time in $t0
  t0=$(now)
  "$1" serve --data-dir "$bench_dir/data" --quic-addr 127.0.0.1:18520 --kafka-addr 127.0.0.1:18620 \
    --registry-addr 127.0.0.1:18720 --console-addr 127.0.0.1:18721 >>"$bench_dir/log" 2>&1 &  # the data folder kept
  pid=$!
  disown $!
}
timed_restart() { # timed_restart WEIR LABEL
  local weir=$1 label=$2 up first started
  # Listeners are up when the broker prints its "serving" banner (it binds them first). A client
  # polled before then would lose its first QUIC packet and wait out quinn's 1 s probe timeout,
  # which would round the figure up to whole seconds.
  started=$(grep -c "serving (node" "$bench_dir/log" || true)
  start "$weir"
  for _ in $(seq 1 30000); do
    [ "$(grep -c "serving (node" "$bench_dir/log" || true)" -gt "$started" ] && break
    sleep 0.01
  done
  up=$(now)
  for _ in $(seq 1 6000); do
    timeout 10 "$weir" consume big --partition $((partitions - 1)) --from earliest --count 1 "${connect[@]}" \
      >/dev/null 2>&1 && break
    sleep 0.02
  done
  first=$(now)
  python3 -c "print(f'$(basename "$weir") $label: listeners up {$up - $t0:.2f} s, first fetch of partition $((partitions - 1)) {$first - $t0:.2f} s after start')"
}
for weir in "${binaries[@]}"; do
  start_broker "$weir" 18520
  "$weir" topic create big --partitions "$partitions" --config flush.mode=interval --config retention.ms=-1 \
    "${connect[@]}" >/dev/null
  "$weir" bench produce --topic big --partitions "$partitions" --batch-bytes "${BATCH_BYTES:-65536}" --count "$count" \
    --values "${VALUES:-repeated}" --duration-secs 3600 --acks leader "${connect[@]}" 2>/dev/null | grep '^produce:'
  kill -INT "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  pid=""
  echo "data folder: $(du -sh "$bench_dir/data" | cut -f1)"
  timed_restart "$weir" "after a clean stop"
  # More writes, then SIGKILL: the next start replays the journal.
  "$weir" bench produce --topic big --partitions "$partitions" --batch-bytes "${BATCH_BYTES:-65536}" --count 200000 \
    --values "${VALUES:-repeated}" --acks leader "${connect[@]}" 2>/dev/null | grep '^produce:'
  stop_broker
  sleep 0.5
  timed_restart "$weir" "after SIGKILL"
  stop_broker
done
