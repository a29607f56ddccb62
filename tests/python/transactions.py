"""Kafka transactions with confluent-kafka (librdkafka) against kafkabox: commit, abort, an open
transaction holding read_committed consumers at the last stable offset while read_uncommitted
ones read on, consume-transform-produce with send_offsets_to_transaction, zombie fencing by a
second producer with the same transactional id, and a forgotten transaction aborted after its
timeout. Every check raises on failure; the last line printed is a JSON summary that
tests/transactions.rs checks again.

Usage: transactions.py HOST:PORT
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

addr = sys.argv[1]
summary = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def bounded(seconds, what, fn):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


admin = AdminClient({'bootstrap.servers': addr})
for f in admin.create_topics([NewTopic('tx-in', 1, 1), NewTopic('tx-out', 1, 1),
                              NewTopic('tx-open', 1, 1)]).values():
    f.result(20)


def producer(txn_id, **extra):
    conf = {'bootstrap.servers': addr, 'transactional.id': txn_id, 'linger.ms': 5}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(20)
    return p


def read_all(topic, isolation, expect=None, seconds=15):
    """Every value of partition 0 of `topic` from the start to the end the consumer sees."""
    c = Consumer({'bootstrap.servers': addr, 'group.id': 'reader-' + uuid.uuid4().hex,
                  'isolation.level': isolation, 'enable.partition.eof': True,
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if expect is None or len(values) >= expect:
                        return values
                    continue
                raise KafkaException(m.error())
            values.append(m.value().decode())
        raise AssertionError(f"read of {topic} ({isolation}) did not reach its end: {values}")
    finally:
        c.close()


# Commit and abort.
p = producer('tx-basic')
p.begin_transaction()
for i in range(5):
    p.produce('tx-in', value=f'c{i}', partition=0)
p.commit_transaction(20)
p.begin_transaction()
for i in range(3):
    p.produce('tx-in', value=f'a{i}', partition=0)
p.flush(10)
p.abort_transaction(20)
p.begin_transaction()
p.produce('tx-in', value='c5', partition=0)
p.commit_transaction(20)
committed = read_all('tx-in', 'read_committed', expect=6)
check(committed == [f'c{i}' for i in range(6)], f'read_committed saw {committed}')
everything = read_all('tx-in', 'read_uncommitted', expect=9)
check(sorted(everything) == sorted([f'c{i}' for i in range(6)] + ['a0', 'a1', 'a2']),
      f'read_uncommitted saw {everything}')
summary['committed'] = len(committed)
summary['uncommitted'] = len(everything)

# An open transaction holds read_committed readers at the last stable offset.
hold = producer('tx-holder')
hold.begin_transaction()
hold.produce('tx-open', value='open', partition=0)
hold.flush(10)
plain = Producer({'bootstrap.servers': addr})
plain.produce('tx-open', value='plain', partition=0)
plain.flush(10)
check(read_all('tx-open', 'read_committed', expect=0) == [],
      'a read_committed consumer stops at the open transaction')
c = Consumer({'bootstrap.servers': addr, 'group.id': 'wm', 'isolation.level': 'read_committed'})
low, high = c.get_watermark_offsets(TopicPartition('tx-open', 0), timeout=10)
c.close()
check((low, high) == (0, 0), f'read_committed watermarks {low}, {high} (the LSO is 0)')
check(read_all('tx-open', 'read_uncommitted', expect=2) == ['open', 'plain'],
      'read_uncommitted reads on')
hold.commit_transaction(20)
after = read_all('tx-open', 'read_committed', expect=2)
check(after == ['open', 'plain'], f'after the commit: {after}')
summary['held_at_lso'] = True

# Consume-transform-produce: the output and the input's offsets in one transaction.
consumer = Consumer({'bootstrap.servers': addr, 'group.id': 'ctp', 'isolation.level': 'read_committed',
                     'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
consumer.subscribe(['tx-in'])
ctp = producer('tx-ctp')
ctp.begin_transaction()
n = 0
deadline = time.time() + 30
while n < 6 and time.time() < deadline:
    m = consumer.poll(0.5)
    if m is None or m.error():
        continue
    ctp.produce('tx-out', value=m.value().decode().upper(), partition=0)
    n += 1
check(n == 6, f'consumed {n} of 6')
ctp.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                consumer.consumer_group_metadata(), 20)
ctp.commit_transaction(20)
out = read_all('tx-out', 'read_committed', expect=6)
check(out == [f'C{i}' for i in range(6)], f'transformed {out}')
committed_offsets = consumer.committed([TopicPartition('tx-in', 0)], timeout=10)
check(committed_offsets[0].offset >= 11, f'the offsets commit with the transaction: {committed_offsets}')
consumer.close()
summary['consume_transform_produce'] = len(out)
summary['ctp_offset'] = committed_offsets[0].offset

# An aborted send_offsets_to_transaction leaves the group's offsets as they were.
consumer = Consumer({'bootstrap.servers': addr, 'group.id': 'ctp-abort',
                     'isolation.level': 'read_committed', 'auto.offset.reset': 'earliest',
                     'enable.auto.commit': False})
consumer.subscribe(['tx-in'])
bounded(20, 'ctp-abort assignment', lambda: consumer.poll(0.5) and consumer.assignment())
ab = producer('tx-ctp-abort')
ab.begin_transaction()
ab.send_offsets_to_transaction([TopicPartition('tx-in', 0, 3)], consumer.consumer_group_metadata(), 20)
ab.abort_transaction(20)
got = consumer.committed([TopicPartition('tx-in', 0)], timeout=10)[0].offset
check(got < 0, f'aborted offsets are not committed: {got}')
consumer.close()

# Zombie fencing: a second producer with the same transactional id fences the first.
zombie = producer('tx-fence')
zombie.begin_transaction()
zombie.produce('tx-out', value='zombie', partition=0)
zombie.flush(10)
fresh = producer('tx-fence')  # aborts the zombie's open transaction, bumps the epoch
fenced = None
try:
    zombie.produce('tx-out', value='zombie2', partition=0)
    zombie.commit_transaction(10)
except KafkaException as e:
    fenced = e.args[0]
check(fenced is not None and fenced.fatal(), f'the zombie is fenced fatally: {fenced}')
fresh.begin_transaction()
fresh.produce('tx-out', value='fresh', partition=0)
fresh.commit_transaction(20)
out = read_all('tx-out', 'read_committed', expect=7)
check('zombie' not in out and 'zombie2' not in out and out[-1] == 'fresh', f'after fencing: {out}')
summary['fenced'] = fenced.name()

# A forgotten transaction is aborted after its transaction.timeout.ms.
lost = producer('tx-lost', **{'transaction.timeout.ms': 2000})
lost.begin_transaction()
lost.produce('tx-open', value='lost', partition=0)
lost.flush(10)
started = time.time()
final = bounded(30, 'the forgotten transaction is aborted',
                lambda: (lambda v: v if v == ['open', 'plain'] else None)(
                    read_all('tx-open', 'read_committed', expect=2, seconds=5)))
c = Consumer({'bootstrap.servers': addr, 'group.id': 'wm2', 'isolation.level': 'read_committed'})
low, high = bounded(30, 'LSO past the aborted transaction',
                    lambda: (lambda w: w if w[1] >= 4 else None)(
                        c.get_watermark_offsets(TopicPartition('tx-open', 0), timeout=10)))
c.close()
summary['timeout_abort_s'] = round(time.time() - started, 1)
print(json.dumps(summary))
