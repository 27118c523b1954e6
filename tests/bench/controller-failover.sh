#!/usr/bin/env bash
# Controller failover time: three `weir serve` voters on loopback; SIGKILL the controller
# leader, then time until a metadata change (a topic creation) through a survivor commits.
# Usage: tests/bench/controller-failover.sh [RUNS] [WEIR_BINARY]  (default 10, target/release/weir)
# Prints one line per run and p50/max in milliseconds. Ports: 127.0.0.1:174xx..177xx.
set -euo pipefail
runs=${1:-10}
weir=${2:-target/release/weir}
[ -x "$weir" ] || { echo "build it first: cargo build --release -p weir-cli --bin weir" >&2; exit 1; }
source "$(dirname "$0")/cluster-lib.sh"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
now_ms() { date +%s%3N; }
times=()
for run in $(seq 1 "$runs"); do
  dir=$work/run$run
  mkdir -p "$dir"
  start_cluster "$dir"
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
