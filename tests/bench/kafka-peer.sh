#!/usr/bin/env bash
# Weir's Kafka listener beside a peer broker, Tansu with its memory storage engine, each driven
# by the same client: librdkafka 2.x as confluent-kafka bundles it (acks=1, linger 5 ms, 1 MiB
# batches; tests/kafka_clients/librdkafka_perf.py) produces COUNT records of 1 KiB into an
# 8-partition topic, then a consumer reads them from the start. (Debian's kcat, librdkafka
# 2.0.2, cannot talk to Tansu 0.6: its ApiVersions request fails with a read underflow.) Per
# broker and round: produce and consume MB/s and the broker's CPU seconds per GB each way
# (utime+stime from /proc), with compressible values (one repeated byte) and incompressible
# ones (random bytes). At 1 KiB the Python loop around librdkafka bounds the throughput of
# both; the CPU per GB is the broker's own.
# Durability is not the same: Weir writes fjall's journal before it answers (fsync on an
# interval, `flush.mode=interval`); Tansu's memory engine keeps nothing on disk.
# Tansu is installed into target/peer when it is not there (`cargo install tansu --features
# dynostore,libsql`: a long build, once); its code is never part of this repository.
# PRODUCER=c produces from C instead (tests/kafka_clients/rdkafka_perf.c, the same settings,
# built here with gcc against the same bundled librdkafka and Debian's librdkafka-dev headers,
# installed when missing), so neither broker's produce is bounded by the Python loop.
# Usage: tests/bench/kafka-peer.sh [ROUNDS] [COUNT] WEIR_BINARY
# (default 3 rounds of 1,000,000 records). Ports 18500-18700 (Weir), 18900 (Tansu).
set -euo pipefail
rounds=${1:-3}
count=${2:-1000000}
weir=${3:?name the weir binary}
here=$(cd "$(dirname "$0")/../.." && pwd)
source "$here/tests/bench/single-lib.sh"
tansu=${TANSU:-$here/target/peer/bin/tansu}
if [ ! -x "$tansu" ]; then
  echo "installing the peer (tansu) into $here/target/peer; this takes a while" >&2
  cargo install --locked tansu --features dynostore,libsql --root "$here/target/peer" >&2
fi
gb=$(python3 -c "print($count * 1024 / 1e9)")
if [ "${PRODUCER:-python}" = c ]; then
  if [ ! -f /usr/include/librdkafka/rdkafka.h ]; then
    echo "installing librdkafka-dev (headers for the C producer)" >&2
    $(command -v sudo || true) apt-get update -qq >&2
    $(command -v sudo || true) apt-get install -y librdkafka-dev >&2
  fi
  bundled=$(python3 -c "import confluent_kafka, glob, os
print(glob.glob(os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), 'confluent_kafka.libs', 'librdkafka-*.so*'))[0])")
  gcc -O2 -Wall -o "$bench_dir/rdkafka_perf" "$here/tests/kafka_clients/rdkafka_perf.c" "$bundled" \
    -Wl,-rpath,"$(dirname "$bundled")"
fi
create_topic() {  # BOOTSTRAP: the same Kafka CreateTopics request for both brokers
  python3 - "$1" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for future in admin.create_topics([NewTopic("perf", num_partitions=8, replication_factor=1)]).values():
    future.result(30)
PY
}
measure() {  # NAME BOOTSTRAP VALUES: produce, then consume from the start, printing one line
  local name=$1 bootstrap=$2 values=$3 perf="$here/tests/kafka_clients/librdkafka_perf.py"
  local before after produced consumed
  before=$(cpu "$pid")
  if [ "${PRODUCER:-python}" = c ]; then
    produced=$(VALUES=$values "$bench_dir/rdkafka_perf" "$bootstrap" perf "$count" 1024 1048576)
  else
    produced=$(VALUES=$values PRODUCE_ONLY=1 python3 "$perf" "$bootstrap" perf "$count" 1024 1048576)
  fi
  after=$(cpu "$pid")
  local fetch_before fetch_after
  fetch_before=$(cpu "$pid")
  consumed=$(CONSUME_ONLY=1 python3 "$perf" "$bootstrap" perf "$count" 1024)
  fetch_after=$(cpu "$pid")
  local up down got
  up=$(echo "$produced" | sed -n 's/.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
  down=$(echo "$consumed" | sed -n 's/.*records\/s, \([0-9.]*\) MB\/s.*/\1/p')
  got=$(echo "$consumed" | sed -n 's/librdkafka consume: \([0-9]*\) records.*/\1/p')
  python3 -c "print(f'round $round $name $values values: produce $up MB/s, {($after - $before) / $ticks / $gb:.2f} CPU s/GB; consume $down MB/s, {($fetch_after - $fetch_before) / $ticks / $gb:.2f} CPU s/GB; $got of $count records read back')"
}
for round in $(seq 1 "$rounds"); do
  for values in repeated random; do
    start_broker "$weir" 18500
    "$weir" topic create perf --partitions 8 --config flush.mode=interval --config retention.ms=-1 \
      "${connect[@]}" >/dev/null
    measure weir 127.0.0.1:18600 "$values"
    stop_broker

    "$tansu" broker --storage-engine memory://tansu/ --kafka-listener-url tcp://127.0.0.1:18900 \
      --kafka-advertised-listener-url tcp://127.0.0.1:18900 >"$bench_dir/tansu.log" 2>&1 &
    pid=$!
    disown $!
    for _ in $(seq 1 100); do
      kcat -L -b 127.0.0.1:18900 -m 1 >/dev/null 2>&1 && break
      sleep 0.1
    done
    create_topic 127.0.0.1:18900
    measure tansu 127.0.0.1:18900 "$values"
    stop_broker
  done
done
