# Sourced by the cluster benches: starts three `weir serve` voters on loopback.
# start_cluster DIR: data in DIR/d1..d3, logs in DIR/log1..3, the CA in DIR/ca.pem; node i
# listens on 127.0.0.1:1740i (cluster), 1750i (QUIC), 1760i (Kafka), 1770i (registry). Sets
# `pids` (node i is ${pids[i-1]}) and returns once every node answers `weir cluster status`.
# Needs `weir` set to the binary; `serve_args` (an array, optional) are more `weir serve` flags.
start_cluster() {
  local dir=$1 voters=1@127.0.0.1:17401,2@127.0.0.1:17402,3@127.0.0.1:17403 i
  pids=()
  for i in 1 2 3; do
    "$weir" serve --node-id $i --data-dir "$dir/d$i" --cluster-addr 127.0.0.1:1740$i --controller-voters $voters \
      --cluster-ca "$dir/ca.pem" --quic-addr 127.0.0.1:1750$i --kafka-addr 127.0.0.1:1760$i \
      --registry-addr 127.0.0.1:1770$i --console-addr 127.0.0.1:1780$i ${serve_args[@]+"${serve_args[@]}"} >"$dir/log$i" 2>&1 &
    pids+=($!)
    disown $!  # no "Killed" notices when the bench kills it
  done
  for i in 1 2 3; do  # each node listens once a majority of voters is up
    for _ in $(seq 1 300); do
      "$weir" cluster status --bootstrap 127.0.0.1:1750$i --data-dir "$dir/d$i" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}
