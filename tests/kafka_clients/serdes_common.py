"""What the confluent-kafka serdes scripts share."""
import time

from confluent_kafka import Consumer
from confluent_kafka.serialization import MessageField, SerializationContext


def consume_deserialized(bootstrap, topic, group, deserializer, count, timeout_s=60):
    """Reads `topic` from the start with a fresh group until `count` records arrived (or the
    timeout passes); returns the deserialized values by integer key."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = {}
    deadline = time.time() + timeout_s
    while len(seen) < count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        seen[int(m.key())] = deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
    consumer.close()
    assert len(seen) == count, len(seen)
    return seen
