"""confluent-kafka against a Weir cluster: the metadata names every broker and each
partition's leader; an idempotent producer reaches every partition's leader; a consumer group
(coordinated by the broker the cluster names for it) reads everything back.
Usage: BOOTSTRAP TOPIC PARTITIONS COUNT (produce, then consume) or BOOTSTRAP TOPIC - COUNT
(consume only, with a new group)."""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def describe(bootstrap, topic, partitions):
    """The brokers and each partition's leader, once the broker asked knows all `partitions`
    with a leader each: CreateTopics is answered by the broker that took it, and another
    broker may apply the new topic a moment later, as in Kafka (clients refresh metadata)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 15
    while True:
        metadata = admin.list_topics(topic, timeout=10)
        brokers = sorted(metadata.brokers)
        known = metadata.topics.get(topic)
        leaders = {p.id: p.leader for p in known.partitions.values()} if known and not known.error else {}
        if (len(leaders) == partitions and all(l >= 0 for l in leaders.values())) or time.time() > deadline:
            return brokers, leaders
        time.sleep(0.2)


def produce(bootstrap, topic, partitions, count):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)
    brokers, leaders = describe(bootstrap, topic, partitions)
    assert len(brokers) == 3, f"the metadata names every broker: {brokers}"
    assert len(set(leaders.values())) == 3, f"the partitions are spread over the brokers: {leaders}"
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(str(err))

    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"value-{i}".encode(), on_delivery=delivered)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "every record delivered within 60 s"
    assert not failed, f"{len(failed)} failed deliveries, first: {failed[0]}"
    return brokers, leaders


def consume(bootstrap, topic, count):
    group = f"cluster-readers-{uuid.uuid4()}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = {}
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consume error: {msg.error()}")
            continue
        key = int(msg.key())
        assert msg.value() == f"value-{key}".encode(), (key, msg.value())
        seen.setdefault(key, (msg.partition(), msg.offset()))
    consumer.commit(asynchronous=False)
    consumer.close()
    assert len(seen) == count, f"consumed {len(seen)} of {count}"
    return group


def main(bootstrap, topic, partitions, count):
    count = int(count)
    summary = {}
    if partitions != "-":
        brokers, leaders = produce(bootstrap, topic, int(partitions), count)
        summary.update(brokers=brokers, leaders=leaders, produced=count)
    summary["group"] = consume(bootstrap, topic, count)
    summary["consumed"] = count
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main(*sys.argv[1:])
