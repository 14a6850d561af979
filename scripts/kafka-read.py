#!/usr/bin/env python3
"""Reads Kafka topics from the beginning with kafka-python (an implementation independent of the
librdkafka that mercato uses) and prints one JSON object per message on stdout:

    {"topic", "partition", "offset", "key", "headers": {name: value}, "value": <envelope or text>}

Usage: kafka-read.py BOOTSTRAP TOPIC [TOPIC ...] [--expect N] [--idle SECONDS]

It stops when it has read N messages (--expect), or when no message came for --idle seconds
(default 5). The tests of the Kafka relay run it (pip install kafka-python).
"""

import argparse
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--expect", type=int, default=None)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="mercato-test-reader",
    )
    partitions = []
    for topic in args.topics:
        ids = None
        deadline = time.monotonic() + 30
        while not ids and time.monotonic() < deadline:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                time.sleep(0.2)
        if not ids:
            print(f"topic {topic} not found", file=sys.stderr)
            return 2
        partitions.extend(TopicPartition(topic, p) for p in sorted(ids))
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)

    count = 0
    started = time.monotonic()
    last_message = time.monotonic()
    while True:
        if args.expect is not None and count >= args.expect:
            break
        if time.monotonic() - last_message > args.idle:
            break
        if time.monotonic() - started > args.timeout:
            break
        batches = consumer.poll(timeout_ms=200)
        for tp, records in batches.items():
            for record in records:
                last_message = time.monotonic()
                count += 1
                value = record.value.decode("utf-8", "replace") if record.value else None
                try:
                    value = json.loads(value) if value is not None else None
                except ValueError:
                    pass
                print(
                    json.dumps(
                        {
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                            "key": record.key.decode("utf-8", "replace") if record.key else None,
                            "headers": {
                                name: (raw.decode("utf-8", "replace") if raw is not None else None)
                                for name, raw in (record.headers or [])
                            },
                            "value": value,
                        }
                    )
                )
    consumer.close()
    print(f"read {count} message(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
