"""confluent-kafka's JSONSerializer and JSONDeserializer (JSON Schema) against Weir's schema
registry and Kafka listener, on a topic that validates values on the broker.
Usage: BOOTSTRAP REGISTRY_URL TOPIC"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from serdes_common import consume_deserialized

V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "item": {"type": "string"}},
    "required": ["id", "item"],
}


def main(bootstrap, registry_url, topic):
    subject = f"{topic}-value"
    client = SchemaRegistryClient({"url": registry_url})
    serializer = JSONSerializer(json.dumps(V1), client)
    producer = Producer({"bootstrap.servers": bootstrap})
    count = 2_000
    for i in range(count):
        value = serializer({"id": i, "item": f"item-{i}"}, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=str(i).encode(), value=value)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    registered = client.get_latest_version(subject)
    assert registered.schema.schema_type == "JSON", registered.schema.schema_type
    print(f"registered {subject} version {registered.version} id {registered.schema_id} (JSON)")

    # The serializer checks the document against the schema before it is sent.
    try:
        serializer({"id": "not a number", "item": "x"}, SerializationContext(topic, MessageField.VALUE))
        raise AssertionError("the serializer accepted an invalid document")
    except Exception as e:  # SerializationError
        print(f"serializer refused an invalid document: {type(e).__name__}")

    # A record that bypasses the serializer (no wire format) is refused by the broker, which
    # validates values of this topic against the registry.
    failures = []
    producer.produce(topic, value=b'{"id": 1, "item": "raw"}', on_delivery=lambda err, msg: failures.append(err))
    producer.flush(30)
    assert failures and failures[0] is not None, failures
    print(f"broker refused a record without the wire format: {failures[0].str()[:100]}")

    deserializer = JSONDeserializer(json.dumps(V1), schema_registry_client=client)
    seen = consume_deserialized(bootstrap, topic, "json-readers", deserializer, count)
    assert all(seen[i] == {"id": i, "item": f"item-{i}"} for i in range(count))
    print(f"consumed and deserialized {count} records, all equal")

    # Evolution: an optional property is compatible; a new required property is not (BACKWARD).
    v2 = dict(V1, properties=dict(V1["properties"], note={"type": "string"}))
    v2_id = client.register_schema(subject, Schema(json.dumps(v2), "JSON"))
    print(f"compatible evolution (optional property) registered as id {v2_id}")
    v3 = dict(v2, required=["id", "item", "note"])
    try:
        client.register_schema(subject, Schema(json.dumps(v3), "JSON"))
        raise AssertionError("a new required property was accepted under BACKWARD")
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (409, 409), (e.http_status_code, e.error_code)
        print(f"new required property: HTTP 409: {e.error_message[:90]}")
    try:
        client.register_schema(subject, Schema('{"type": "objekt"}', "JSON"))
        raise AssertionError("an invalid JSON Schema was accepted")
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (422, 42201), (e.http_status_code, e.error_code)
        print(f"invalid schema: HTTP 422 error_code 42201: {e.error_message[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
