"""One confluent-kafka consumer in a group shared with a Weir Rust consumer.

Usage: BOOTSTRAP TOPIC GROUP EXPECTED
Consumes until it has read EXPECTED records (or 90 s pass), committing as it goes, and prints
one JSON line: the partitions it was assigned and the (partition, offset) pairs it read."""
import json
import sys
import time

from confluent_kafka import Consumer


def main(bootstrap, topic, group, expected):
    assigned = []

    def on_assign(consumer, partitions):
        assigned[:] = sorted(p.partition for p in partitions)
        print(f"assigned {assigned}", file=sys.stderr, flush=True)

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "python-member",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    })
    consumer.subscribe([topic], on_assign=on_assign)
    seen = []
    deadline = time.time() + 90
    while len(seen) < expected and time.time() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if not m.error():
                seen.append((m.partition(), m.offset()))
        if seen:
            consumer.commit(asynchronous=False)
    consumer.close()
    print(json.dumps({"assigned": assigned, "read": seen}))
    return 0 if len(seen) == expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
