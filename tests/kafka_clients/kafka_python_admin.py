"""kafka-python against Weir's Kafka listener: admin creates, describes and deletes topics; a
consumer seeks by timestamp (ListOffsets) and reads from there.  Usage: BOOTSTRAP"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic


def main(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="weir-test-admin")
    admin.create_topics([NewTopic("kp-times", num_partitions=1, replication_factor=1),
                         NewTopic("kp-scratch", num_partitions=3, replication_factor=1,
                                  topic_configs={"retention.ms": "3600000"})])
    topics = set(admin.list_topics())
    assert {"kp-times", "kp-scratch"} <= topics, topics
    described = admin.describe_topics(["kp-scratch"])
    assert len(described[0]["partitions"]) == 3, described
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-scratch")])
    text = str(configs)
    assert "retention.ms" in text and "3600000" in text, text
    admin.delete_topics(["kp-scratch"])
    deadline = time.time() + 10
    while "kp-scratch" in admin.list_topics():
        assert time.time() < deadline, "topic still listed after delete"
        time.sleep(0.1)
    print("admin: created, listed, described (partitions, configs), deleted")

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    base = int(time.time() * 1000) - 60_000
    for i in range(20):
        producer.send("kp-times", value=f"v{i}".encode(), timestamp_ms=base + i * 1000)
    producer.flush()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    tp = TopicPartition("kp-times", 0)
    consumer.assign([tp])
    found = consumer.offsets_for_times({tp: base + 7_500})
    assert found[tp] is not None and found[tp].offset == 8, found
    consumer.seek(tp, found[tp].offset)
    values = [m.value.decode() for m in consumer]
    assert values == [f"v{i}" for i in range(8, 20)], values
    print(f"timestamp seek: offset {found[tp].offset}, read {len(values)} records from there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
