"""The Python side of benches/cat.sh: Confluent's Python client as the baseline of `kar cat`.

    python bench_cat.py seed   BOOTSTRAP TOPIC REGISTRY WORKDIR avro|protobuf N
    python bench_cat.py decode BOOTSTRAP TOPIC REGISTRY WORKDIR avro|protobuf

`seed` registers the schema (Avro: an order with a referenced address, an enum, an array, a map
and bytes; Protobuf: an order with nested lines and an imported Money message) under TOPIC-value
and writes N records to TOPIC with Confluent's serializer (Avro) or Google's protobuf runtime
framed by Confluent's prefix_schema_id_serializer (Protobuf: AxonOps's registry refuses the
base64 descriptors Confluent's ProtobufSerializer registers).

`decode` reads every record of TOPIC into memory first (not timed), then decodes each value with
Confluent's deserializer (AvroDeserializer against the registry; ProtobufDeserializer with the
message class) and writes it as a JSON line to /dev/null, as `kar cat` writes JSON Lines. Prints
{"records": N, "seconds": S} for the decoding and writing alone.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    prefix_schema_id_serializer,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import json_format

import serialized  # the schemas and the protoc step of the cat tests


def avro_records(client, topic, n):
    client.register_schema(f"{topic}-address", Schema(json.dumps(serialized.ADDRESS), "AVRO"))
    ref = SchemaReference("shop.Address", f"{topic}-address", 1)
    client.register_schema(f"{topic}-value", Schema(json.dumps(serialized.ORDER), "AVRO", [ref]))
    ser = AvroSerializer(client, None, conf={"auto.register.schemas": False, "use.latest.version": True})
    ctx = SerializationContext(topic, MessageField.VALUE)
    for i in range(n):
        yield ser(
            {
                "id": i,
                "customer": f"customer-{i % 5000:05d}",
                "ship_to": {"city": ["Köln", "Lyon", "Porto"][i % 3], "zip": None if i % 4 == 0 else f"{i % 99999:05d}"},
                "total": (i % 100000) / 100.0,
                "status": "PAID" if i % 2 else "NEW",
                "tags": ["gift", "express", "bulk"][: i % 4],
                "attrs": {"items": i % 9, "weight": i % 1000},
                "digest": (i * 2654435761 % 2**64).to_bytes(8, "big") * 2,
            },
            ctx,
        )


def protobuf_records(client, topic, workdir, n):
    client.register_schema(f"{topic}-money", Schema(serialized.MONEY, "PROTOBUF"))
    ref = SchemaReference("money.proto", f"{topic}-money", 1)
    sid = client.register_schema(f"{topic}-value", Schema(serialized.ORDER_PROTO, "PROTOBUF", [ref]))
    pb = serialized.protobuf_classes(workdir)
    ctx = SerializationContext(topic, MessageField.VALUE)
    for i in range(n):
        lines = [
            pb.Order.Line(sku=f"sku-{(i + k) % 10000:05d}", price={"cents": 100 + (i * k) % 9000, "currency": "EUR"}, qty=[1 + k])
            for k in range(3)
        ]
        msg = pb.Order(id=i, lines=lines, paid=i % 2 == 1)
        yield prefix_schema_id_serializer(msg.SerializeToString(), ctx, SchemaId("PROTOBUF", sid, message_indexes=[1]))


def create_topic(bootstrap, topic):
    """Three partitions; an existing topic is emptied by being made anew (the broker does not
    create topics on first use)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        admin.delete_topics([topic])[topic].result()
        while topic in admin.list_topics(timeout=10).topics:
            time.sleep(0.2)
    for _ in range(50):
        try:
            admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
            return
        except Exception as e:  # deletion still under way: try again
            last = e
            time.sleep(0.2)
    sys.exit(f"creating {topic}: {last}")


def seed(bootstrap, topic, registry, workdir, kind, n):
    create_topic(bootstrap, topic)
    client = SchemaRegistryClient({"url": registry})
    values = avro_records(client, topic, n) if kind == "avro" else protobuf_records(client, topic, workdir, n)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, key=f"order-{i}".encode(), partition=i % 3, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(60) > 0 or failed:
        sys.exit(f"{topic}: {len(failed)} record(s) not delivered: {failed[:1]}")


def read_all(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kar-bench-cat", "enable.auto.commit": False, "enable.partition.eof": True})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    open_parts, out = set(parts), []
    while open_parts:
        m = c.poll(10)
        if m is None:
            sys.exit(f"{topic}: nothing in 10 s")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                open_parts.discard(m.partition())
                continue
            sys.exit(str(m.error()))
        out.append((m.value(), m.headers()))
    c.close()
    return out


def decode(bootstrap, topic, registry, workdir, kind):
    records = read_all(bootstrap, topic)
    client = SchemaRegistryClient({"url": registry})
    if kind == "avro":
        de = AvroDeserializer(client)
        to_json = lambda v: {**v, "digest": v["digest"].decode("latin-1")}  # noqa: E731
    else:
        de = ProtobufDeserializer(serialized.protobuf_classes(workdir).Order, {"use.deprecated.format": False})
        to_json = json_format.MessageToDict
    with open("/dev/null", "w") as out:
        start = time.perf_counter()
        for value, headers in records:
            ctx = SerializationContext(topic, MessageField.VALUE, headers)
            out.write(json.dumps(to_json(de(value, ctx))))
            out.write("\n")
        seconds = time.perf_counter() - start
    print(json.dumps({"records": len(records), "seconds": seconds}))


def main():
    cmd, bootstrap, topic, registry, workdir, kind = sys.argv[1:7]
    if cmd == "seed":
        seed(bootstrap, topic, registry, workdir, kind, int(sys.argv[7]))
    else:
        decode(bootstrap, topic, registry, workdir, kind)


if __name__ == "__main__":
    main()
