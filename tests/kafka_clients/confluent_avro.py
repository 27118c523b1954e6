"""confluent-kafka's SchemaRegistryClient, AvroSerializer and AvroDeserializer against Weir's
schema registry and Kafka listener.  Usage: BOOTSTRAP REGISTRY_URL"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from serdes_common import consume_deserialized

TOPIC = "users"
SUBJECT = f"{TOPIC}-value"
V1 = {"type": "record", "name": "User", "namespace": "weir.test",
      "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"}]}


def with_fields(*extra, drop=()):
    fields = [f for f in V1["fields"] if f["name"] not in drop] + list(extra)
    return json.dumps(dict(V1, fields=fields))


def expect_error(client, schema_text, status, code, what):
    try:
        client.register_schema(SUBJECT, Schema(schema_text, "AVRO"))
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (status, code), (what, e.http_status_code, e.error_code, e.error_message)
        print(f"{what}: HTTP {e.http_status_code} error_code {e.error_code}: {e.error_message[:90]}")
        return
    raise AssertionError(f"{what}: the registry accepted it")


def main(bootstrap, registry_url):
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, json.dumps(V1))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    count = 10_000
    for i in range(count):
        value = serializer({"name": f"user-{i}", "visits": i}, SerializationContext(TOPIC, MessageField.VALUE))
        producer.produce(TOPIC, key=str(i).encode(), value=value)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    registered = client.get_latest_version(SUBJECT)
    print(f"registered {SUBJECT} version {registered.version} id {registered.schema_id}")

    deserializer = AvroDeserializer(client)
    seen = consume_deserialized(bootstrap, TOPIC, "avro-readers", deserializer, count)
    assert all(seen[i] == {"name": f"user-{i}", "visits": i} for i in range(count))
    print(f"consumed and deserialized {count} records, all equal")

    # Evolution under the default BACKWARD level.
    v2 = with_fields({"name": "email", "type": "string", "default": ""})
    v2_id = client.register_schema(SUBJECT, Schema(v2, "AVRO"))
    assert client.register_schema(SUBJECT, Schema(v2, "AVRO")) == v2_id, "registering again returns the same id"
    assert client.get_versions(SUBJECT) == [1, 2], client.get_versions(SUBJECT)
    print(f"compatible evolution (field with a default) registered as id {v2_id}")
    expect_error(client, with_fields({"name": "email", "type": "string", "default": ""}, {"name": "age", "type": "int"}),
                 409, 409, "BACKWARD, new required field")
    expect_error(client, json.dumps(dict(V1, fields=[{"name": "name", "type": "int"}, {"name": "visits", "type": "int"}])),
                 409, 409, "BACKWARD, changed type")
    assert client.test_compatibility(SUBJECT, Schema(with_fields(drop=("visits",)), "AVRO")), "removing a field is BACKWARD-compatible"
    client.set_compatibility(SUBJECT, "FORWARD")
    expect_error(client, with_fields({"name": "email", "type": "string", "default": ""}, drop=("visits",)),
                 409, 409, "FORWARD, removed required field")
    expect_error(client, '{"type": "record", "name": "Broken", "fields": [{"name": "x"}]}', 422, 42201, "invalid schema")
    try:
        client.get_version(SUBJECT, 99)
        raise AssertionError("version 99 exists?")
    except SchemaRegistryError as e:
        assert e.error_code == 40402, e.error_code
    try:
        client.get_latest_version("missing-value")
        raise AssertionError("subject exists?")
    except SchemaRegistryError as e:
        assert e.error_code == 40401, e.error_code
    print("incompatible and invalid schemas answered as Confluent does")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
