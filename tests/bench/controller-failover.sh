#!/usr/bin/env bash
# Controller failover time: three `weir serve` voters on loopback; SIGKILL the controller
# leader, then time until a metadata change (a topic creation) through a survivor commits.
# Usage: tests/bench/controller-failover.sh [RUNS] [WEIR_BINARY]  (default 10, target/release/weir)
# Prints one line per run and p50/max in milliseconds. Ports: 127.0.0.1:174xx..177xx.
set -euo pipefail
runs=${1:-10}
weir=${2:-target/release/weir}
[ -x "$weir" ] || { echo "build it first: cargo build --release -p weir-cli --bin weir" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
now_ms() { date +%s%3N; }
times=()
for run in $(seq 1 "$runs"); do
  dir=$work/run$run
  mkdir -p "$dir"
  voters=1@127.0.0.1:17401,2@127.0.0.1:17402,3@127.0.0.1:17403
  pids=()
  for i in 1 2 3; do
    "$weir" serve --node-id $i --data-dir "$dir/d$i" --cluster-addr 127.0.0.1:1740$i --controller-voters $voters \
      --cluster-ca "$dir/ca.pem" --quic-addr 127.0.0.1:1750$i --kafka-addr 127.0.0.1:1760$i \
      --registry-addr 127.0.0.1:1770$i >"$dir/log$i" 2>&1 &
    pids+=($!)
    disown $!  # no "Killed" notices when a run ends
  done
  for i in 1 2 3; do  # every node listening (each waits for a majority first)
    for _ in $(seq 1 300); do
      "$weir" cluster status --bootstrap 127.0.0.1:1750$i --data-dir "$dir/d$i" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  leader=""
  for _ in $(seq 1 200); do
    leader=$("$weir" cluster status --json --bootstrap 127.0.0.1:17501 --data-dir "$dir/d1" 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["controller_leader"] or "")' 2>/dev/null || true)
    [ -n "$leader" ] && break
    sleep 0.1
  done
  [ -n "$leader" ] || { echo "run $run: no controller leader" >&2; tail -n 5 "$dir"/log* >&2; exit 1; }
  survivor=$(( leader % 3 + 1 ))
  "$weir" topic create before --bootstrap 127.0.0.1:1750$survivor --data-dir "$dir/d$survivor" >/dev/null
  kill -9 "${pids[$((leader - 1))]}"
  start=$(now_ms)
  until "$weir" topic create after --bootstrap 127.0.0.1:1750$survivor --data-dir "$dir/d$survivor" >/dev/null 2>&1; do
    sleep 0.05
  done
  took=$(( $(now_ms) - start ))
  times+=("$took")
  echo "run $run: killed controller leader node $leader; a change through node $survivor committed after $took ms"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  sleep 0.5
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "p50 %d ms  max %d ms  (%d runs)\n", a[int((NR+1)/2)], a[NR], NR}'
