"""An idempotent confluent-kafka producer (acks=all) writing unique values to every partition
of a topic for a bounded time while the test harness injures the cluster; prints one JSON
line per record: {"value", "partition", "offset"} when acknowledged, {"value", "error"} when
not. Usage: BOOTSTRAP TOPIC PARTITIONS SECONDS"""
import json
import sys
import time

from confluent_kafka import Producer


def main(bootstrap, topic, partitions, seconds):
    partitions, seconds = int(partitions), float(seconds)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 60000,
        "linger.ms": 5,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    outcomes = []

    def delivered(err, msg):
        value = msg.value().decode()
        if err is None:
            outcomes.append({"value": value, "partition": msg.partition(), "offset": msg.offset()})
        else:
            outcomes.append({"value": value, "error": str(err)})

    deadline = time.time() + seconds
    i = 0
    while time.time() < deadline and i < 200_000:
        try:
            producer.produce(topic, value=f"py-{i}".encode(), partition=i % partitions, on_delivery=delivered)
            i += 1
        except BufferError:
            producer.poll(0.05)
            continue
        producer.poll(0)
        time.sleep(0.004)
    left = producer.flush(90)
    for line in outcomes:
        print(json.dumps(line))
    print(json.dumps({"sent": i, "unflushed": left}), file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
