"""A quixstreams application with processing_guarantee="exactly-once" against kafkabox: a
stateful count per key (a RocksDB store with its changelog topic), its output exact; then its
local state deleted and restored from the changelog, and the output exact again. Every check
raises on failure; the last line printed is a JSON summary that tests/transactions.rs checks.

Usage: quix_exactly_once.py HOST:PORT STATE_DIR
"""
import json
import shutil
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from quixstreams import Application

addr, state_dir = sys.argv[1], sys.argv[2]
summary = {}
KEYS = ['a', 'b', 'c']


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def produce_words(n_per_key):
    p = Producer({'bootstrap.servers': addr})
    for i in range(n_per_key):
        for k in KEYS:
            p.produce('words', key=k, value=f'{k}{i}')
    check(p.flush(20) == 0, 'words produced')


def read_counts(expect, seconds=30):
    """Every record of 'counts' (read_committed), as (key, count)."""
    c = Consumer({'bootstrap.servers': addr, 'group.id': 'check-' + uuid.uuid4().hex,
                  'isolation.level': 'read_committed', 'enable.partition.eof': True,
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    c.subscribe(['counts'])
    out = []
    eof = set()
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    if len(out) >= expect and c.assignment() and eof >= {p.partition for p in c.assignment()}:
                        return out
                    continue
                raise KafkaException(m.error())
            out.append((m.key().decode(), json.loads(m.value())['count']))
        raise AssertionError(f'counts: {len(out)} of {expect} read: {out}')
    finally:
        c.close()


def run_app(n_messages):
    app = Application(broker_address=addr, consumer_group='counter', auto_offset_reset='earliest',
                      processing_guarantee='exactly-once', state_dir=state_dir,
                      commit_interval=0.5, loglevel='WARNING')
    words = app.topic('words', key_deserializer='str', value_deserializer='str')
    counts = app.topic('counts', key_serializer='str', value_serializer='json')
    sdf = app.dataframe(words)

    def count(value, key, timestamp, headers, state):
        total = state.get('count', 0) + 1
        state.set('count', total)
        return {'count': total}

    sdf = sdf.apply(count, stateful=True, metadata=True)
    sdf.to_topic(counts)
    app.run(count=n_messages, timeout=60)


produce_words(10)
run_app(30)
first = read_counts(30)
check(len(first) == 30, f'30 counts, got {len(first)}: {first}')
final = {k: max(c for kk, c in first if kk == k) for k in KEYS}
check(final == {k: 10 for k in KEYS}, f'final counts {final}')
summary['first_run'] = len(first)

# The local state is lost: the application restores it from its changelog topic.
shutil.rmtree(state_dir)
produce_words(10)
run_app(30)
second = read_counts(60)
check(len(second) == 60, f'60 counts in all, got {len(second)}')
final = {k: max(c for kk, c in second if kk == k) for k in KEYS}
check(final == {k: 20 for k in KEYS}, f'after the restore: {final}')
per_key = {k: sorted(c for kk, c in second if kk == k) for k in KEYS}
check(all(v == list(range(1, 21)) for v in per_key.values()), f'each count once: {per_key}')
summary['second_run'] = len(second)
summary['restored'] = True
print(json.dumps(summary))
