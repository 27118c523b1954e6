"""confluent-kafka (librdkafka) against Weir's Kafka listener.

produce BOOTSTRAP TOPIC COUNT      idempotent producer, acks=all; prints the delivered count
consume BOOTSTRAP TOPIC GROUP COUNT
    three consumers in one group share the topic; one leaves midway and the group rebalances;
    commits are synchronous after each processed batch. Checks that every record is processed
    and that a record is processed twice only if its first processing was not committed.
resume BOOTSTRAP TOPIC GROUP COUNT
    after a broker restart: the group's committed offsets cover all COUNT records, and a new
    consumer of the group reads only records produced after them.
"""
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

DEADLINE_S = 240


def produce(bootstrap, topic, count):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 256 * 1024,
    })
    delivered = [0]
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    print(f"produced delivered={delivered[0]} errors={len(errors)} unflushed={remaining}")
    if errors:
        print("first errors:", errors[:3])
    return 0 if delivered[0] == count and not errors and remaining == 0 else 1


def consume(bootstrap, topic, group, count):
    lock = threading.Lock()
    processed = {}  # (partition, offset) -> times processed
    uncommitted_reprocess_ok = set()  # records whose batch commit failed
    stop_all = threading.Event()
    leave_now = threading.Event()
    stats = {"commits": 0, "failed_commits": 0}

    def run(name, leaves_midway):
        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "range",
        })
        consumer.subscribe([topic])
        try:
            while not stop_all.is_set():
                if leaves_midway and leave_now.is_set():
                    print(f"{name} leaves the group", flush=True)
                    return
                msgs = consumer.consume(num_messages=500, timeout=0.5)
                batch = []
                for m in msgs:
                    if m.error():
                        continue
                    batch.append((m.partition(), m.offset()))
                if not batch:
                    continue
                with lock:
                    for key in batch:
                        processed[key] = processed.get(key, 0) + 1
                    if len(processed) >= count // 3:
                        leave_now.set()
                try:
                    consumer.commit(asynchronous=False)
                    with lock:
                        stats["commits"] += 1
                except KafkaException:
                    with lock:
                        stats["failed_commits"] += 1
                        uncommitted_reprocess_ok.update(batch)
        finally:
            consumer.close()

    threads = [threading.Thread(target=run, args=(f"consumer-{i}", i == 2)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        with lock:
            if len(processed) >= count:
                break
        time.sleep(0.2)
    time.sleep(2)  # let the last synchronous commits finish before the consumers close
    stop_all.set()
    for t in threads:
        t.join(30)
    twice = [k for k, n in processed.items() if n > 1]
    bad_twice = [k for k in twice if k not in uncommitted_reprocess_ok]
    print(f"consumed distinct={len(processed)} of {count} processed_twice={len(twice)} "
          f"twice_after_commit={len(bad_twice)} commits={stats['commits']} failed_commits={stats['failed_commits']} "
          f"left_midway={leave_now.is_set()}")
    ok = len(processed) == count and not bad_twice and leave_now.is_set()
    return 0 if ok else 1


def resume(bootstrap, topic, group, count):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    committed = consumer.committed(partitions, timeout=10)
    total = sum(tp.offset for tp in committed if tp.offset >= 0)
    print(f"committed offsets after restart sum={total} of {count}")
    if total != count:
        return 1
    consumer.subscribe([topic])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(10):
        producer.produce(topic, key=f"late-{i}".encode(), value=f"late-{i}".encode())
    producer.flush(30)
    seen = []
    deadline = time.time() + 60
    while len(seen) < 10 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        seen.append(m.value().decode())
    consumer.close()
    print(f"after resume read {len(seen)} records: {sorted(seen)[:3]}...")
    return 0 if sorted(seen) == sorted(f"late-{i}" for i in range(10)) else 1


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "produce":
        sys.exit(produce(args[0], args[1], int(args[2])))
    if command == "consume":
        sys.exit(consume(args[0], args[1], args[2], int(args[3])))
    if command == "resume":
        sys.exit(resume(args[0], args[1], args[2], int(args[3])))
    sys.exit(f"unknown command {command}")
