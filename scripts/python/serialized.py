"""Writes records as Confluent's Python client serializes them, then reads them back and decodes
them with its deserializers: the test of `kar cat` compares kar's offline decoding with both.

    python serialized.py BOOTSTRAP TOPIC REGISTRY_URL WORKDIR

Registers in the registry (subjects named after TOPIC):
  TOPIC-address  AVRO      shop.Address
  TOPIC-value    AVRO      shop.Order, its `ship_to` a shop.Address (a reference)
  TOPIC-json     JSON      an order as JSON Schema
  TOPIC-money    PROTOBUF  money.proto: shop.Money
  TOPIC-proto    PROTOBUF  order.proto, importing money.proto (a reference): shop.Other, shop.Order
                           with the nested shop.Order.Line (message indexes [1, 0])

and writes to partition 0 of TOPIC, in order: Avro orders (AvroSerializer), an Avro order with its
schema ID in a `__value_schema_id` header instead of the prefix (Confluent 8's header form), JSON
orders (JSONSerializer), Protobuf Lines, an Order and an Other (Google's protobuf runtime, classes
made by grpcio-tools' protoc from the same texts, framed by Confluent's prefix_schema_id_serializer;
Confluent's ProtobufSerializer registers schemas as base64 descriptors, which AxonOps's registry
refuses), then a value with an ID no registry has, plain text, bytes that are not UTF-8 and a
tombstone.

Prints one JSON line per record: offset, kind, `sent` (the datum given to the serializer, as JSON)
and `decoded` (what Confluent's deserializer made of the record read back: AvroDeserializer and
JSONDeserializer against the registry; ProtobufDeserializer with the message class, without a
registry, as AxonOps does not serve the serialized form it asks for), or null.
"""

import base64
import importlib
import json
import subprocess
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    prefix_schema_id_serializer,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import json_format
from settle import settled

ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "shop",
    "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"]}],
}
ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "ship_to", "type": "shop.Address"},
        {"name": "total", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "int"}},
        {"name": "digest", "type": "bytes"},
    ],
}
JSON_ORDER = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "JsonOrder",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "items": {"type": "array", "items": {"type": "string"}}},
    "required": ["id"],
}
MONEY = 'syntax = "proto3";\npackage shop;\n\nmessage Money {\n  int64 cents = 1;\n  string currency = 2;\n}\n'
ORDER_PROTO = (
    'syntax = "proto3";\npackage shop;\n\nimport "money.proto";\n\n'
    "message Other {\n  string note = 1;\n}\n\n"
    "message Order {\n  message Line {\n    string sku = 1;\n    Money price = 2;\n    repeated int32 qty = 3;\n  }\n"
    "  int64 id = 1;\n  repeated Line lines = 2;\n  bool paid = 3;\n}\n"
)


def register(client, topic):
    client.register_schema(f"{topic}-address", Schema(json.dumps(ADDRESS), "AVRO"))
    ref = SchemaReference("shop.Address", f"{topic}-address", 1)
    client.register_schema(f"{topic}-value", Schema(json.dumps(ORDER), "AVRO", [ref]))
    client.register_schema(f"{topic}-json", Schema(json.dumps(JSON_ORDER), "JSON"))
    client.register_schema(f"{topic}-money", Schema(MONEY, "PROTOBUF"))
    ref = SchemaReference("money.proto", f"{topic}-money", 1)
    return client.register_schema(f"{topic}-proto", Schema(ORDER_PROTO, "PROTOBUF", [ref]))


def protobuf_classes(workdir):
    for name, text in (("money.proto", MONEY), ("order.proto", ORDER_PROTO)):
        with open(f"{workdir}/{name}", "w") as f:
            f.write(text)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{workdir}", f"--python_out={workdir}", "money.proto", "order.proto"],
        check=True,
    )
    sys.path.insert(0, workdir)
    return importlib.import_module("order_pb2")


def latin1(b):
    return b.decode("latin-1")


def avro_json(order):
    """Bytes as Avro's JSON encoding shows them (each byte a code point)."""
    return {**order, "digest": latin1(order["digest"])}


def records(client, topic, workdir):
    """(kind, key, value, headers, sent) in the order they are written."""
    proto_id = register(client, topic)
    ctx = SerializationContext(topic, MessageField.VALUE)
    avro = AvroSerializer(client, None, conf={"auto.register.schemas": False, "use.latest.version": True})
    out = []
    for i in range(3):
        order = {
            "id": 4700 + i,
            "customer": f"customer-{i}",
            "ship_to": {"city": "Köln", "zip": None if i == 0 else f"5066{i}"},
            "total": 12.5 * (i + 1),
            "status": "PAID" if i % 2 else "NEW",
            "tags": ["a", "b"][: i + 1],
            "attrs": {"n": i},
            "digest": bytes([0, 255, i]),
        }
        out.append(("avro", f"order-{4700 + i}", avro(order, ctx), None, avro_json(order)))
    order = {**out[0][4], "id": 4711, "digest": bytes([1, 2])}
    framed = avro({**order, "digest": bytes([1, 2])}, ctx)
    out.append(("avro-header", "order-4711", framed[5:], [("__value_schema_id", framed[:5])], avro_json({**order, "digest": bytes([1, 2])})))

    strategy = lambda ctx, name: f"{topic}-json"  # noqa: E731
    js = JSONSerializer(None, client, conf={"auto.register.schemas": False, "use.latest.version": True, "subject.name.strategy": strategy})
    for i in range(2):
        doc = {"id": 900 + i, "items": ["x"] * i}
        out.append(("json", f"json-{i}", js(doc, ctx), None, doc))

    pb = protobuf_classes(workdir)
    frame = lambda msg, idx: prefix_schema_id_serializer(msg.SerializeToString(), ctx, SchemaId("PROTOBUF", proto_id, message_indexes=idx))  # noqa: E731
    for i in range(2):
        line = pb.Order.Line(sku=f"sku-{i}", price={"cents": 250 * (i + 1), "currency": "EUR"}, qty=[1, i + 2])
        out.append(("protobuf-line", f"line-{i}", frame(line, [1, 0]), None, json_format.MessageToDict(line)))
    order = pb.Order(id=77, lines=[pb.Order.Line(sku="z")], paid=True)
    out.append(("protobuf-order", "order-77", frame(order, [1]), None, json_format.MessageToDict(order)))
    other = pb.Other(note="index zero")
    out.append(("protobuf-other", "other", frame(other, [0]), None, json_format.MessageToDict(other)))

    out.append(("unknown-id", "u", b"\x00\x7f\xff\xff\xfe" + b"whatever", None, None))
    out.append(("text", "t", "plain text".encode(), None, None))
    out.append(("binary", "b", b"\xff\xfe\x00\x01", None, None))
    out.append(("tombstone", "order-4700", None, None, None))
    return out, pb


def decode(client, topic, kind, value, headers, pb):
    ctx = SerializationContext(topic, MessageField.VALUE, headers)
    if kind.startswith("avro"):
        return avro_json(AvroDeserializer(client)(value, ctx))
    if kind == "json":
        return JSONDeserializer(None, schema_registry_client=client)(value, ctx)
    if kind.startswith("protobuf"):
        cls = {"protobuf-line": pb.Order.Line, "protobuf-order": pb.Order, "protobuf-other": pb.Other}[kind]
        return json_format.MessageToDict(ProtobufDeserializer(cls, {"use.deprecated.format": False})(value, ctx))
    return None


def read_back(bootstrap, topic, n):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kar-serialized", "enable.auto.commit": False, "enable.partition.eof": True})
    settled(bootstrap, topic, [0])
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    while True:
        m = consumer.poll(10)
        if m is None:
            sys.exit(f"{topic}: nothing read in 10 s")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                break
            sys.exit(f"{topic}: {m.error()}")
        got.append(m)
    consumer.close()
    if len(got) != n:
        sys.exit(f"{topic}: read {len(got)} records back, wrote {n}")
    return got


def main():
    bootstrap, topic, registry, workdir = sys.argv[1:5]
    client = SchemaRegistryClient({"url": registry})
    recs, pb = records(client, topic, workdir)
    producer = Producer({"bootstrap.servers": bootstrap})
    for kind, key, value, headers, _ in recs:
        producer.produce(topic, key=key.encode(), value=value, partition=0, headers=headers)
        producer.flush(30)
    for (kind, _, _, _, sent), m in zip(recs, read_back(bootstrap, topic, len(recs))):
        decoded = decode(client, topic, kind, m.value(), m.headers(), pb)
        raw = None if m.value() is None else base64.b64encode(m.value()).decode()
        print(json.dumps({"offset": m.offset(), "kind": kind, "sent": sent, "decoded": decoded, "raw": raw}))


if __name__ == "__main__":
    main()
