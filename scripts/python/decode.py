"""Reads every record of a topic with Confluent's Python client, as a consumer on the target would,
and decodes each value with its AvroDeserializer against a Schema Registry (the schema ID taken from
the value's prefix or from its `__value_schema_id` header): the proof that restored records are
readable. Prints one JSON line per record (partition, offset, decoded value); exits 1
on the first record that does not decode, naming it.

    python decode.py BOOTSTRAP TOPIC REGISTRY_URL
"""

import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from settle import settled


def main():
    bootstrap, topic, registry = sys.argv[1:4]
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kar-python-decode",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    settled(bootstrap, topic, list(partitions))
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    open_partitions = set(partitions)
    while open_partitions:
        m = consumer.poll(10)
        if m is None:
            sys.exit(f"{topic}: no record and no end of partition in 10 s")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                open_partitions.discard(m.partition())
                continue
            sys.exit(f"{topic}: {m.error()}")
        # With the headers: the deserializer takes the schema ID from `__value_schema_id` where
        # a record has it (Confluent 8's header form), else from the payload prefix.
        ctx = SerializationContext(topic, MessageField.VALUE, m.headers())
        try:
            value = deserialize(m.value(), ctx)
        except Exception as e:  # the message names what failed
            sys.exit(f"{topic}/{m.partition()} offset {m.offset()}: does not decode: {e}")
        print(json.dumps({"partition": m.partition(), "offset": m.offset(), "value": value}))
    consumer.close()


if __name__ == "__main__":
    main()
