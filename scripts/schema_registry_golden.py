#!/usr/bin/env python3
"""Golden bytes for kafka-kit's Schema Registry serdes, made by confluent-kafka-python.

No registry server is needed: confluent-kafka-python's own MockSchemaRegistryClient (a
`SchemaRegistryClient` whose URL is `mock://...`) gives the ids, and its real AvroSerializer
(fastavro) and JSONSerializer (jsonschema) frame the values in the Confluent wire format.

    python3 -m venv /tmp/sr-venv
    /tmp/sr-venv/bin/pip install confluent-kafka fastavro jsonschema requests httpx attrs cachetools authlib

    # Write tests/data/schema_registry_golden.json (schemas, values, framed bytes in hex):
    /tmp/sr-venv/bin/python scripts/schema_registry_golden.py generate

    # Decode what kafka-kit wrote: tests/schema_registry_golden.rs writes it to
    # <cargo target dir>/tmp/schema_registry_kafka_kit.json and prints the path, and runs this
    # itself when KAFKA_KIT_PYTHON names the Python to use:
    KAFKA_KIT_PYTHON=/tmp/sr-venv/bin/python \
        cargo test --features schema-registry --test schema_registry_golden -- --nocapture
    /tmp/sr-venv/bin/python scripts/schema_registry_golden.py decode <that path>

Both files have the same shape: the schemas in the order they were registered (so that a fresh
registry, Python's or kafka-kit's, gives them the same ids), then the records.
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "schema_registry_golden.json"

USER_EVENT_V1 = json.dumps({
    "type": "record", "name": "UserEvent", "namespace": "com.example",
    "fields": [
        {"name": "user_id", "type": "long"},
        {"name": "event_type", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
})

USER_EVENT_V2 = json.dumps({
    "type": "record", "name": "UserEvent", "namespace": "com.example",
    "fields": [
        {"name": "user_id", "type": "long"},
        {"name": "event_type", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "source", "type": "string", "default": "unknown"},
    ],
})

USER_EVENT_JSON = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "UserEvent",
    "type": "object",
    "properties": {
        "user_id": {"type": "integer", "minimum": 1},
        "event_type": {"type": "string"},
        "amount": {"type": ["number", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["user_id", "event_type"],
    "additionalProperties": False,
})

TOPIC = "user-events"
JSON_TOPIC = "user-events-json"

# (format, topic, writer schema, value)
RECORDS = [
    ("avro", TOPIC, USER_EVENT_V1, {"user_id": 1001, "event_type": "view_product", "amount": 99.9, "tags": ["web"]}),
    ("avro", TOPIC, USER_EVENT_V1, {"user_id": 1002, "event_type": "login", "amount": None, "tags": []}),
    ("avro", TOPIC, USER_EVENT_V1, {"user_id": -7, "event_type": "登錄 ✓", "amount": -0.5, "tags": ["a", "b", "c"]}),
    ("avro", TOPIC, USER_EVENT_V1, {"user_id": 2**40 + 3, "event_type": "", "amount": 1e300, "tags": ["x" * 200]}),
    ("avro", TOPIC, USER_EVENT_V2, {"user_id": 1003, "event_type": "checkout", "amount": 199.8, "tags": ["eu"],
                                    "source": "order-service"}),
    ("json", JSON_TOPIC, USER_EVENT_JSON, {"user_id": 1001, "event_type": "login"}),
    ("json", JSON_TOPIC, USER_EVENT_JSON, {"user_id": 1004, "event_type": "checkout", "amount": 199.8,
                                           "tags": ["web", "登錄"]}),
    ("json", JSON_TOPIC, USER_EVENT_JSON, {"user_id": 2**40 + 3, "event_type": "", "amount": None, "tags": []}),
]


def mock_registry():
    # `new_client` answers a `mock://` URL with confluent-kafka-python's MockSchemaRegistryClient.
    client = SchemaRegistryClient.new_client({"url": "mock://golden"})
    assert type(client).__name__ == "MockSchemaRegistryClient", type(client)
    return client


def register_all(client, schemas):
    """Registers the schemas in order and checks they get the ids the file says."""
    for entry in schemas:
        schema_id = client.register_schema(entry["subject"], Schema(entry["schema"], entry["schema_type"]))
        if schema_id != entry["id"]:
            sys.exit(f"{entry['subject']}: id {schema_id} here, {entry['id']} in the file")


def generate():
    client = mock_registry()
    schemas, records = [], []
    for fmt, topic, schema, value in RECORDS:
        ctx = SerializationContext(topic, MessageField.VALUE)
        if fmt == "avro":
            serializer = AvroSerializer(client, schema)
        else:
            serializer = JSONSerializer(schema, client)
        framed = serializer(value, ctx)
        schema_id = int.from_bytes(framed[1:5], "big")
        if not any(s["id"] == schema_id for s in schemas):
            schemas.append({"subject": f"{topic}-value", "schema_type": "AVRO" if fmt == "avro" else "JSON",
                            "schema": schema, "id": schema_id})
        records.append({"format": fmt, "topic": topic, "schema_id": schema_id, "value": value, "hex": framed.hex()})
    GOLDEN.write_text(json.dumps({
        "generator": f"confluent-kafka {version('confluent-kafka')}, fastavro {fastavro.__version__},"
                     f" jsonschema {version('jsonschema')}, MockSchemaRegistryClient",
        "schemas": schemas,
        "records": records,
    }, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records with {len(schemas)} schemas to {GOLDEN}")


def decode(path):
    data = json.loads(Path(path).read_text())
    client = mock_registry()
    register_all(client, data["schemas"])
    failures = 0
    for record in data["records"]:
        ctx = SerializationContext(record["topic"], MessageField.VALUE)
        framed = bytes.fromhex(record["hex"])
        if record["format"] == "avro":
            decoded = AvroDeserializer(client)(framed, ctx)
            # And resolved to v2, as a newer reader sees it.
            as_v2 = AvroDeserializer(client, USER_EVENT_V2)(framed, ctx)
            expected_v2 = {"source": "unknown", **record["value"]}
        else:
            decoded = JSONDeserializer(None, schema_registry_client=client)(framed, ctx)
            as_v2 = expected_v2 = None
        ok = decoded == record["value"] and as_v2 == expected_v2
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {record['format']:4} id={record['schema_id']} {decoded}"
              + (f" (as v2: source={as_v2['source']!r})" if as_v2 else ""))
        if not ok:
            print(f"    expected {record['value']}")
    print(f"{len(data['records']) - failures}/{len(data['records'])} decoded by confluent-kafka-python to the same values")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "generate"
    if command == "generate":
        generate()
    elif command == "decode" and len(sys.argv) == 3:
        decode(sys.argv[2])
    else:
        sys.exit(__doc__)
