"""Throughput of librdkafka (confluent-kafka) through a Kafka listener: produce COUNT records of
SIZE bytes with acks=1, then consume them from the start. Prints MB/s for each.
Usage: BOOTSTRAP TOPIC COUNT SIZE [BATCH_BYTES]
VALUES=random sends incompressible values (4,096 random values in turn) instead of one
repeated byte; PRODUCE_ONLY=1 skips the consume, CONSUME_ONLY=1 the produce."""
import os
import sys
import time

from confluent_kafka import Consumer, Producer


def main(bootstrap, topic, count, size, batch_bytes):
    if os.environ.get("CONSUME_ONLY") != "1":
        produce(bootstrap, topic, count, size, batch_bytes)
    if os.environ.get("PRODUCE_ONLY") != "1":
        consume(bootstrap, topic, count, size)


def produce(bootstrap, topic, count, size, batch_bytes):
    if os.environ.get("VALUES") == "random":
        values = [os.urandom(size) for _ in range(4096)]
    else:
        values = [b"x" * size]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": 1,
        "linger.ms": 5,
        "batch.size": batch_bytes,
        "queue.buffering.max.kbytes": 1048576,
        "queue.buffering.max.messages": 1000000,
    })
    start = time.perf_counter()
    for i in range(count):
        value = values[i % len(values)]
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    print(f"librdkafka produce: {count} records of {size} B in {elapsed:.2f}s: "
          f"{count / elapsed:.0f} records/s, {count * size / elapsed / 1e6:.1f} MB/s (acks=1, batch {batch_bytes} B, linger 5 ms)")


def consume(bootstrap, topic, count, size):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"perf-{time.time()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.max.bytes": 8 * 1024 * 1024,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
    })
    consumer.subscribe([topic])
    got = 0
    first = None
    deadline = time.time() + 120
    while got < count and time.time() < deadline:
        msgs = consumer.consume(num_messages=10000, timeout=1.0)
        if msgs and first is None:
            first = time.perf_counter()
        got += sum(1 for m in msgs if not m.error())
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    print(f"librdkafka consume: {got} records in {elapsed:.2f}s: {got / elapsed:.0f} records/s, {got * size / elapsed / 1e6:.1f} MB/s")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]) if len(a) > 4 else 1048576)
