"""Waits until a read_committed consumer can read every record appended to a topic now.

A transaction's markers are written a moment after its commit returns; until then the last stable
offset, where a read_committed consumer (Confluent's clients' default) signals the end of a
partition, lies before the transaction's records. A reader that stops at the first end signal
right after a restore could otherwise miss the last transaction.
"""

import time

from confluent_kafka import Consumer, TopicPartition


def settled(bootstrap, topic, partitions, timeout=10.0):
    def ends(isolation):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kar-settle", "isolation.level": isolation})
        try:
            return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions]
        finally:
            c.close()

    high = ends("read_uncommitted")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s >= h for s, h in zip(ends("read_committed"), high)):
            return
        time.sleep(0.05)
