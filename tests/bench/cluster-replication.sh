#!/usr/bin/env bash
# Replication on a three-broker cluster, in one run:
#  1. produce with acks=all to a topic of replication factor 1 and to one of replication
#     factor 3 (min.insync.replicas=2), alternating, client on the partition's leader: MB/s,
#     produce-ack p50/p99, each broker's CPU seconds per GB produced (from /proc); with the
#     bare quinn and fjall baselines `weir bench --baseline` prints;
#  2. failover: SIGKILL the leader of a replication-factor-3 partition while a confluent-kafka
#     producer writes to it with acks=all; the time from the kill to the first acknowledgement
#     after it, over FAILOVERS runs (the killed broker is restarted and back in the ISR before
#     the next);
#  3. catch-up: a follower is SIGKILLed, CATCHUP_MB of records are written without it, it is
#     restarted, and the time until its log ends where the leader's does gives its catch-up rate.
# Usage: tests/bench/cluster-replication.sh [ROUNDS] [COUNT] [FAILOVERS] [CATCHUP_MB] [WEIR_BINARY]
# (default 3 rounds of 200,000 records of 1 KiB, 10 failovers, 1024 MB, target/release/weir;
# 0 skips a part). SESSION_MS sets the brokers' broker_session_timeout_ms (default 9000): a
# SIGKILLed leader is replaced once the controller fences it, so failover takes about that.
# Ports 174xx..177xx. Needs python3 with confluent-kafka (tests/run-all.sh installs it).
# BATCH_BYTES sets the produce rounds' batch size (the bench's default otherwise, 256 KiB).
# PERF_DIR=DIR records a CPU profile of the leader during each replication-factor-3 round
# (perf record, DWARF call graphs) into DIR/rf3-ROUND.data and prints the top of it.
set -euo pipefail
rounds=${1:-3}
count=${2:-200000}
failovers=${3:-10}
catchup_mb=${4:-1024}
weir=${5:-target/release/weir}
[ -x "$weir" ] || { echo "build it first: cargo build --release -p weir-cli --bin weir" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP_LOGS:-}" ] && mkdir -p "$KEEP_LOGS" && cp "$dir"/log* "$KEEP_LOGS"/
  rm -rf "$dir"
}
trap cleanup EXIT
source "$(dirname "$0")/cluster-lib.sh"
serve_args=()
[ -n "${SESSION_MS:-}" ] && serve_args=(--broker-session-timeout-ms "$SESSION_MS")
start_cluster "$dir"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, in clock ticks
ticks=$(getconf CLK_TCK)
on() { local n=$1; shift; "$weir" "$@" --bootstrap 127.0.0.1:1750$n --data-dir "$dir/d$n"; }
describe() {  # partition 0 of topic $2 as node $1 describes it: leader replicas isr hw log-end
  on "$1" topic describe "$2" | awk '$1 == "0" {print $2, $3, $4, $6, $7}'
}
restart() {  # node $1 again, same ports, data and flags
  local i=$1 voters=1@127.0.0.1:17401,2@127.0.0.1:17402,3@127.0.0.1:17403
  "$weir" serve --node-id "$i" --data-dir "$dir/d$i" --cluster-addr 127.0.0.1:1740"$i" --controller-voters $voters \
    --cluster-ca "$dir/ca.pem" --quic-addr 127.0.0.1:1750"$i" --kafka-addr 127.0.0.1:1760"$i" \
    --registry-addr 127.0.0.1:1770"$i" --console-addr 127.0.0.1:1780"$i" ${serve_args[@]+"${serve_args[@]}"} >>"$dir/log$i" 2>&1 &
  pids[i-1]=$!
  disown $!
}
live3() {  # node 1 lists three live brokers
  [ "$(on 1 cluster status --json 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin)["brokers"] if not b["fenced"]))' 2>/dev/null)" = 3 ]
}
for _ in $(seq 1 600); do live3 && break; sleep 0.1; done
in_sync() {  # topic $1's partition 0 has all 3 replicas in its ISR, as node $2 sees it
  local isr
  isr=$(describe "$2" "$1" 2>/dev/null | awk '{print $3}')
  [ "$(echo "$isr" | tr ',' '\n' | grep -c .)" = 3 ]
}

[ "$rounds" -gt 0 ] && echo "== produce, acks=all: replication factor 1 vs 3 (min.insync.replicas=2), client on the leader"
[ "$rounds" -gt 0 ] && on 1 bench baseline --count "$count" --baseline | sed 's/^/  /'
for round in $(seq 1 "$rounds"); do
  for rf in 1 3; do
    topic=rf$rf-$round
    on 1 topic create "$topic" --partitions 1 --replication-factor $rf --config retention.ms=-1 >/dev/null
    leader=$(describe 1 "$topic" | awk '{print $1}')
    before=()
    for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    profiling=""
    if [ -n "${PERF_DIR:-}" ] && [ "$rf" = 3 ]; then
      mkdir -p "$PERF_DIR"
      perf record -q -F 999 --call-graph dwarf,16384 -p "${pids[leader-1]}" -o "$PERF_DIR/rf3-$round.data" 2>/dev/null &
      profiling=$!
    fi
    out=$(on "$leader" bench produce --topic "$topic" --count "$count" --record-bytes 1024 --acks all \
      ${BATCH_BYTES:+--batch-bytes "$BATCH_BYTES"} 2>&1)
    if [ -n "$profiling" ]; then
      kill -INT "$profiling"; wait "$profiling" 2>/dev/null || true
      echo "  top of the leader's profile (self time), $PERF_DIR/rf3-$round.data:"
      { perf report -q -i "$PERF_DIR/rf3-$round.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -15 | sed 's/ *$//; s/^/    /'; } || true
    fi
    cpus=""
    for k in 0 1 2; do
      used=$(( $(cpu "${pids[$k]}") - before[k] ))
      cpus+=$(awk -v t="$used" -v hz="$ticks" -v n="$count" 'BEGIN {printf " %.2f", t / hz / (n * 1024 / 1e9)}')
    done
    rate=$(echo "$out" | grep -m1 'records of' | grep -o '[0-9.]* MB/s')
    latency=$(echo "$out" | grep -m1 'produce ack latency' | sed 's/.*latency: //')
    echo "round $round RF$rf (leader node $leader): $rate | ack $latency | CPU s/GB nodes 1..3:$cpus"
  done
done

[ "$failovers" -gt 0 ] && echo "== failover: leader SIGKILL to the first acks=all acknowledgement after it ($failovers runs, session ${SESSION_MS:-9000} ms)"
[ "$failovers" -gt 0 ] && on 1 topic create failover --partitions 1 --replication-factor 3 >/dev/null
for run in $(seq 1 "$failovers"); do
  for _ in $(seq 1 300); do in_sync failover 1 && break; sleep 0.1; done
  leader=$(describe 1 failover | awk '{print $1}')
  other=$(( leader % 3 + 1 ))
  python3 - "$leader" "${pids[leader-1]}" "$other" <<'PY' | sed "s/^/run $run: /"
import os, signal, sys, threading, time
from confluent_kafka import Producer
leader, pid, other = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bootstrap = ",".join(f"127.0.0.1:1760{n}" for n in (1, 2, 3) if n != leader) + f",127.0.0.1:1760{leader}"
acks = []
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 1,
              "topic.metadata.refresh.interval.ms": 500, "retry.backoff.ms": 20, "message.timeout.ms": 60000})
def delivered(err, msg):
    if err is None:
        acks.append(time.monotonic())
deadline = time.monotonic() + 2
while time.monotonic() < deadline:  # warm up: acknowledged writes before the kill
    p.produce("failover", b"x" * 100, partition=0, on_delivery=delivered); p.poll(0.002)
p.flush(10)
os.kill(pid, signal.SIGKILL)
killed = time.monotonic()
while time.monotonic() < killed + 30 and not any(a > killed for a in acks):
    p.produce("failover", b"y" * 100, partition=0, on_delivery=delivered); p.poll(0.002)
p.flush(30)
after = [a for a in acks if a > killed]
print(f"leader node {leader} killed; first acknowledgement after {1000 * (min(after) - killed):.0f} ms" if after else "no acknowledgement within 30 s")
PY
  restart "$leader"
done
[ "$catchup_mb" -gt 0 ] || exit 0
for _ in $(seq 1 600); do live3 && break; sleep 0.1; done

echo "== catch-up: a follower down for $catchup_mb MB of writes"
on 1 topic create catchup --partitions 1 --replication-factor 3 --config retention.ms=-1 >/dev/null
for _ in $(seq 1 300); do in_sync catchup 1 && break; sleep 0.1; done
leader=$(describe 1 catchup | awk '{print $1}')
follower=$(( leader % 3 + 1 ))
kill -9 "${pids[follower-1]}"
records=$(( catchup_mb * 1024 ))
out=$(on "$leader" bench produce --topic catchup --count "$records" --record-bytes 1024 --acks all 2>&1)
echo "$out" | grep -m1 'records of' | sed 's/^/  written without it (acks=all; the first seconds wait for the ISR to drop it): /'
target=$(describe "$leader" catchup | awk '{print $5}')
restart "$follower"
started=$(date +%s.%N)
for _ in $(seq 1 6000); do
  end=$(describe "$follower" catchup 2>/dev/null | awk '{print $5}')
  [ "${end:-0}" -ge "$target" ] && break
  sleep 0.1
done
done_at=$(date +%s.%N)
awk -v s="$started" -v e="$done_at" -v mb="$catchup_mb" -v end="${end:-0}" -v t="$target" \
  'BEGIN {printf "  follower node restarted and reached log end %d of %d in %.1f s (includes its start): %.0f MB/s\n", end, t, e - s, mb / (e - s)}'
