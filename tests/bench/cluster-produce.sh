#!/usr/bin/env bash
# Produce through the partition's leader vs through another broker of a three-broker cluster
# (the broker forwards to the leader), same records, alternating, in one run; with the bare
# quinn and fjall baselines `weir bench --baseline` prints, and each broker's CPU seconds per
# GB produced (from /proc). Usage: tests/bench/cluster-produce.sh [ROUNDS] [COUNT] [WEIR_BINARY]
# (default 3 rounds of 300,000 records of 1 KiB, target/release/weir). Ports 174xx..177xx.
set -euo pipefail
rounds=${1:-3}
count=${2:-300000}
weir=${3:-target/release/weir}
[ -x "$weir" ] || { echo "build it first: cargo build --release -p weir-cli --bin weir" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
source "$(dirname "$0")/cluster-lib.sh"
start_cluster "$dir"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, in clock ticks
ticks=$(getconf CLK_TCK)
leader_of() {  # the node leading partition 0 of topic $1, as node 1 describes it
  "$weir" topic describe "$1" --bootstrap 127.0.0.1:17501 --data-dir "$dir/d1" | awk '$1 == "0" {print $2}'
}
"$weir" bench baseline --count "$count" --baseline --bootstrap 127.0.0.1:17501 --data-dir "$dir/d1" | sed 's/^/  /'
for round in $(seq 1 "$rounds"); do
  for how in direct forwarded; do
    topic=$how-$round
    "$weir" topic create "$topic" --partitions 1 --config retention.ms=-1 --bootstrap 127.0.0.1:17501 --data-dir "$dir/d1" >/dev/null
    leader=$(leader_of "$topic")
    via=$leader
    [ "$how" = forwarded ] && via=$(( leader % 3 + 1 ))
    before=()
    for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    out=$("$weir" bench produce --topic "$topic" --count "$count" --record-bytes 1024 \
      --bootstrap 127.0.0.1:1750$via --data-dir "$dir/d$via" 2>&1)
    cpus=""
    for k in 0 1 2; do
      used=$(( $(cpu "${pids[$k]}") - before[k] ))
      cpus+=$(awk -v t="$used" -v hz="$ticks" -v n="$count" 'BEGIN {printf " %.2f", t / hz / (n * 1024 / 1e9)}')
    done
    echo "round $round $how (leader node $leader, client on node $via): $(echo "$out" | grep -m1 'records of' | grep -o '[0-9.]* MB/s')  | CPU s/GB nodes 1..3:$cpus"
  done
done
