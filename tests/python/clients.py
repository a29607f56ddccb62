"""Python Kafka clients driven by the Rust test harness (tests/python_clients.rs).

Usage:
  clients.py confluent-produce BOOTSTRAP TOPIC IDEMPOTENT   # the guide's events via confluent-kafka
  clients.py kafka-python-read BOOTSTRAP TOPIC COUNT        # KafkaConsumer with assign()
  clients.py confluent-read BOOTSTRAP TOPIC COUNT           # confluent_kafka.Consumer with assign()
  clients.py kafka-python-produce BOOTSTRAP TOPIC CODEC N   # N values "value-<i> x..." with compression CODEC

Readers print one JSON object per record: offset, key, value (UTF-8 text), headers.
Every loop is bounded in time.
"""
import json
import sys
import time
from datetime import datetime

DEADLINE_S = 60


def guide_events():
    """The two events of the guide's Python example, built the way its helper builds them."""
    out = []
    for event_type, value, metadata in [
        ("data_usage", 500.0, {"network_type": "4G", "location": "city_name"}),
        ("recharge", 50.0, {"payment_method": "credit_card"}),
    ]:
        out.append({
            "source": "in",
            "source_name": "IN System",
            "customer_id": "1234567890",
            "event_type": event_type,
            "timestamp": datetime.now().isoformat() + "Z",
            "value": value,
            "metadata": metadata or {},
        })
    return out


def confluent_produce(bootstrap, topic, idempotent):
    from confluent_kafka import Producer
    conf = {"bootstrap.servers": bootstrap}
    if idempotent == "true":
        conf["enable.idempotence"] = True
    p = Producer(conf)
    results = []

    def delivered(err, msg):
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        results.append(msg.offset())

    for e in guide_events():
        p.produce(topic, json.dumps(e).encode("utf-8"), key=e["customer_id"], callback=delivered)
    left = p.flush(30)
    if left or len(results) != 2:
        raise SystemExit(f"not delivered: {left} left, results {results}")
    print(json.dumps(results))


def emit(offset, key, value, headers):
    print(json.dumps({
        "offset": offset,
        "key": key.decode("utf-8") if key is not None else None,
        "value": value.decode("utf-8") if value is not None else None,
        "headers": [[k, v.decode("utf-8") if v is not None else None] for k, v in (headers or [])],
    }))


def kafka_python_read(bootstrap, topic, count):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, group_id=None)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = 0
    deadline = time.time() + DEADLINE_S
    while got < count and time.time() < deadline:
        for _tp, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                emit(m.offset, m.key, m.value, m.headers)
                got += 1
    c.close()


def confluent_read(bootstrap, topic, count):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    deadline = time.time() + DEADLINE_S
    while got < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        emit(m.offset(), m.key(), m.value(), m.headers())
        got += 1
    c.close()


def kafka_python_produce(bootstrap, topic, codec, n):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=[bootstrap], compression_type=None if codec == "none" else codec,
                      linger_ms=20)
    futures = [p.send(topic, ("value-%d " % i + "x" * 50).encode()) for i in range(n)]
    p.flush(30)
    print(json.dumps([f.get(timeout=30).offset for f in futures]))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "confluent-produce":
        confluent_produce(*args)
    elif cmd == "kafka-python-read":
        kafka_python_read(args[0], args[1], int(args[2]))
    elif cmd == "kafka-python-produce":
        kafka_python_produce(args[0], args[1], args[2], int(args[3]))
    elif cmd == "confluent-read":
        confluent_read(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
