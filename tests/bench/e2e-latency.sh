#!/usr/bin/env bash
# End-to-end latency at half of peak produce, 1 KiB records, 1 partition, acks=leader, 64 KiB
# batches, linger 1 ms, `flush.mode=interval`: first the peak (`weir bench produce --api record`
# with those settings, since e2e sends record by record), then, at half that rate for 10 s, the
# producer and the consumer in one process (`weir bench e2e`) and in two processes as users run
# them (`--role consume` started first, then `--role produce`). Latency is send to receipt,
# from a wall-clock stamp in each value. A fresh broker per round. DIVISORS="2 10" runs each
# round at peak/2 and then at peak/10 (default: 2 alone), to show what the tail owes to the
# two cores being busy. Each row also says how busy the cores were and how long threads waited
# for one: the broker's and each bench process's time on a CPU and time runnable but waiting,
# per second of the run (from /proc/*/task/*/schedstat).
# Usage: tests/bench/e2e-latency.sh [ROUNDS]   Ports 18540 (QUIC), 18640, 18740.
set -euo pipefail
rounds=${1:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
weir=${WEIR:-$here/target/release/weir}
source "$here/tests/bench/single-lib.sh"
# "BUSY / WAITING" cores of a process between two `sched` readings at two times.
per_second() { python3 -c "
r0, w0 = map(int, '$1'.split()); r1, w1 = map(int, '$2'.split()); t = $4 - $3
print(f'{(r1 - r0) / 1e9 / t:.2f} / {(w1 - w0) / 1e9 / t:.2f}')"; }
# The same from a bench process's own "this process:" line.
busy() { sed -n 's/^this process:.*(\([0-9.]*\) cores busy, \([0-9.]*\) waiting).*/\1 \/ \2/p'; }
for round in $(seq 1 "$rounds"); do
  start_broker "$weir" 18540
  settings=(--partitions 1 --batch-bytes 65536 --linger-ms 1 --acks leader)
  peak=$("$weir" bench produce --topic peak --api record --count 1000000 "${settings[@]}" "${connect[@]}" 2>/dev/null |
    sed -n 's/^produce:.*: \([0-9]*\) records\/s.*/\1/p')
  for divisor in ${DIVISORS:-2}; do
  rate=$((peak / divisor))
  count=$((rate * 10))
  b0=$(sched "$pid"); t0=$(date +%s.%N)
  one_out=$("$weir" bench e2e --topic "one-$divisor" --rate "$rate" --count "$count" --duration-secs 10 "${settings[@]}" \
    "${connect[@]}" 2>/dev/null)
  b1=$(sched "$pid"); t1=$(date +%s.%N)
  one=$(echo "$one_out" | grep 'end-to-end latency')
  one_sched="broker $(per_second "$b0" "$b1" "$t0" "$t1"), bench $(echo "$one_out" | busy)"
  "$weir" bench e2e --role consume --topic "two-$divisor" --rate "$rate" --count "$count" --duration-secs 10 "${settings[@]}" \
    "${connect[@]}" >"$bench_dir/consumer" 2>/dev/null &
  consumer=$!
  for _ in $(seq 1 100); do grep -q following "$bench_dir/consumer" 2>/dev/null && break; sleep 0.1; done
  b0=$(sched "$pid"); t0=$(date +%s.%N)
  "$weir" bench e2e --role produce --topic "two-$divisor" --rate "$rate" --count "$count" --duration-secs 10 "${settings[@]}" \
    "${connect[@]}" >"$bench_dir/producer" 2>/dev/null
  b1=$(sched "$pid"); t1=$(date +%s.%N)
  wait "$consumer"
  two=$(grep 'end-to-end latency' "$bench_dir/consumer")
  two_sched="broker $(per_second "$b0" "$b1" "$t0" "$t1"), consumer $(busy <"$bench_dir/consumer"), producer $(busy <"$bench_dir/producer")"
  echo "round $round: peak $peak records/s, at $rate records/s (1/$divisor): one process: ${one#end-to-end latency: }"
  echo "    cores busy / threads waiting for a core: $one_sched"
  echo "round $round: peak $peak records/s, at $rate records/s (1/$divisor): two processes: ${two#end-to-end latency: }"
  echo "    cores busy / threads waiting for a core: $two_sched"
  done
  stop_broker
done
