"""confluent-kafka's AdminClient.delete_records against Weir (Kafka's DeleteRecords): records
before an offset are gone for every reader, the low watermark moves, and later records stay.
Usage: BOOTSTRAP"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("purged", num_partitions=1, replication_factor=1)])["purged"].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(10):
        producer.produce("purged", value=f"r{i}".encode(), partition=0)
        producer.flush(10)  # one batch per record, so the purge point falls between batches
    deleted = admin.delete_records([TopicPartition("purged", 0, 4)])
    result = deleted[TopicPartition("purged", 0, 4)].result(10)
    assert result.low_watermark == 4, f"low watermark {result.low_watermark}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "purge-check",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    low, high = consumer.get_watermark_offsets(TopicPartition("purged", 0), timeout=10)
    assert (low, high) == (4, 10), (low, high)
    consumer.assign([TopicPartition("purged", 0, 0)])
    values = []
    while len(values) < 6:
        message = consumer.poll(10)
        assert message is not None, f"timed out after {values}"
        if message.error():
            # Offset 0 is gone: the consumer resets to the earliest offset left.
            continue
        values.append((message.offset(), message.value().decode()))
    assert values == [(i, f"r{i}") for i in range(4, 10)], values
    # Past the end is refused per partition with OFFSET_OUT_OF_RANGE.
    past = admin.delete_records([TopicPartition("purged", 0, 99)])[TopicPartition("purged", 0, 99)]
    try:
        past.result(10)
        raise AssertionError("deleting past the end was accepted")
    except Exception as e:  # KafkaException carrying the partition's error
        assert "OFFSET_OUT_OF_RANGE" in str(e) or "out of range" in str(e).lower(), e
    consumer.close()
    print("delete_records: low watermark 4, records 4..9 read, past the end refused")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
