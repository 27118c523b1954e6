"""Schema references with confluent-kafka: a User schema that references an Address schema
registered under another subject, serialized with AvroSerializer (latest registered version),
checked by the broker (the topic validates values) and read back with AvroDeserializer, which
fetches the referenced schema from the registry. Usage: BOOTSTRAP REGISTRY_URL TOPIC"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from serdes_common import consume_deserialized

ADDRESS = {"type": "record", "name": "Address", "namespace": "weir.test",
           "fields": [{"name": "city", "type": "string"}]}
USER = {"type": "record", "name": "User", "namespace": "weir.test",
        "fields": [{"name": "name", "type": "string"}, {"name": "home", "type": "weir.test.Address"}]}


def main(bootstrap, registry_url, topic):
    client = SchemaRegistryClient({"url": registry_url})
    address_id = client.register_schema("address", Schema(json.dumps(ADDRESS), "AVRO"))
    reference = SchemaReference("weir.test.Address", "address", 1)
    user_id = client.register_schema(f"{topic}-value", Schema(json.dumps(USER), "AVRO", [reference]))
    fetched = client.get_schema(user_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [("weir.test.Address", "address", 1)], fetched.references
    print(f"registered address id {address_id} and user id {user_id} with a reference")

    try:
        client.register_schema("orphan-value", Schema(json.dumps(USER), "AVRO"))
        raise AssertionError("a schema naming an unknown type without a reference was accepted")
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (422, 42201), (e.http_status_code, e.error_code)
    try:
        client.delete_version("address", 1)
        raise AssertionError("a referenced version was deleted")
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (422, 42206), (e.http_status_code, e.error_code, e.error_message)
        print(f"deleting the referenced version: HTTP 422 error_code 42206: {e.error_message[:80]}")

    serializer = AvroSerializer(client, Schema(json.dumps(USER), "AVRO", [reference]), conf={"auto.register.schemas": False, "use.latest.version": True})
    producer = Producer({"bootstrap.servers": bootstrap})
    count = 500
    for i in range(count):
        value = {"name": f"user-{i}", "home": {"city": f"city-{i % 7}"}}
        producer.produce(topic, key=str(i).encode(), value=serializer(value, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0

    deserializer = AvroDeserializer(client)
    seen = consume_deserialized(bootstrap, topic, "ref-readers", deserializer, count)
    assert all(seen[i] == {"name": f"user-{i}", "home": {"city": f"city-{i % 7}"}} for i in range(count))
    print(f"produced through a validating topic, consumed and deserialized {count} records with references")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
