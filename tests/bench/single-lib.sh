# Sourced by the one-broker benches. Sets `bench_dir` (a temporary folder, removed on exit
# together with any broker still running), `ticks` (clock ticks per second) and:
#   cpu PID                    the process's utime+stime so far, in clock ticks
#   switches PID               context switches of all its threads so far (voluntary and not)
#   sched PID                  its threads' time on a CPU and time runnable but waiting for one
#                              so far, in ns ("RUNNING WAITING", from /proc/PID/task/*/schedstat)
#   start_broker WEIR PORT [ARG...]  `weir serve` (with ARGs) on a fresh data folder, $bench_dir/data (log in
#                              $bench_dir/log): QUIC on PORT, Kafka on PORT+100, the registry on
#                              PORT+200; sets `pid` and `connect` (the CLI's --bootstrap and
#                              --data-dir) and returns once the broker answers
#   stop_broker                SIGKILL to the broker; returns once it is gone
bench_dir=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$bench_dir"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
sched() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{r += $1; w += $2} END {printf "%.0f %.0f\n", r, w}'; }
start_broker() {
  local weir=$1 port=$2
  shift 2
  rm -rf "$bench_dir/data"
  "$weir" serve --data-dir "$bench_dir/data" --quic-addr "127.0.0.1:$port" --kafka-addr "127.0.0.1:$((port + 100))" \
    --registry-addr "127.0.0.1:$((port + 200))" --console-addr "127.0.0.1:$((port + 300))" "$@" >"$bench_dir/log" 2>&1 &
  pid=$!
  disown $!  # no "Killed" notices when the bench kills it
  connect=(--bootstrap "127.0.0.1:$port" --data-dir "$bench_dir/data")
  for _ in $(seq 1 300); do
    "$weir" topic list "${connect[@]}" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
stop_broker() {
  kill -9 "$pid" 2>/dev/null || true
  # Until it is gone: the next broker binds the same ports.
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  pid=""
}
