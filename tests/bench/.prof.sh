set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/tests/bench/single-lib.sh"
weir=$1; values=$2; out=$3
start_broker "$weir" 18500
"$weir" topic create perf --partitions 8 --config flush.mode=interval --config retention.ms=-1 "${connect[@]}" >/dev/null
perf record -F 999 -g -o "$out" -p "$pid" 2>/dev/null & perfpid=$!
before=$(cpu "$pid")
VALUES=$values PRODUCE_ONLY=1 python3 "$here/tests/kafka_clients/librdkafka_perf.py" 127.0.0.1:18600 perf 1000000 1024 1048576
after=$(cpu "$pid")
kill -INT $perfpid; wait $perfpid || true
python3 -c "print(f'broker {($after - $before) / $ticks / 1.024:.2f} CPU s/GB')"
