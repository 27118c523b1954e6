"""confluent-kafka consumer groups across a coordinator failover. Phase `first` reads COUNT
records of TOPIC in GROUP, commits synchronously and prints what it read as JSON lines of
[partition, offset]. Phase `rest` joins the same group with auto.offset.reset=earliest (so a
group whose offsets were lost starts over) and reads until it has COUNT records or 60 s pass,
printing the same.
Usage: BOOTSTRAP TOPIC GROUP first|rest COUNT"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException


def main():
    bootstrap, topic, group, phase, count = sys.argv[1:6]
    count = int(count)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    read = []
    deadline = time.time() + 60
    while len(read) < count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print(f"consumer error: {msg.error()}", file=sys.stderr)
            continue
        read.append((msg.partition(), msg.offset()))
        if phase == "first" and len(read) == count:
            break
    if phase == "first":
        # Commit exactly what was read: the next offset of each partition.
        from confluent_kafka import TopicPartition
        positions = {}
        for partition, offset in read:
            positions[partition] = max(positions.get(partition, -1), offset + 1)
        offsets = [TopicPartition(topic, p, o) for p, o in sorted(positions.items())]
        for attempt in range(20):
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                break
            except KafkaException as e:
                print(f"commit attempt {attempt} failed: {e}", file=sys.stderr)
                time.sleep(0.5)
        else:
            sys.exit("the commit never succeeded")
    consumer.close()
    for partition, offset in read:
        print(json.dumps([partition, offset]))


if __name__ == "__main__":
    main()
