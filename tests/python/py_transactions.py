"""The transactional producers of kafka-python and aiokafka against kafkabox: committed and
aborted transactions, read back by each client's read_committed consumer (the committed
records only) and aiokafka's read_uncommitted one (all of them). Prints a JSON summary last;
raises on failure.

Usage: py_transactions.py HOST:PORT
"""
import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

addr = sys.argv[1]


async def read(isolation, expect):
    c = AIOKafkaConsumer(bootstrap_servers=addr, isolation_level=isolation,
                         auto_offset_reset='earliest', enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition('aio-txn', 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        out = []
        while len(out) < expect:
            batch = await asyncio.wait_for(c.getmany(tp, timeout_ms=500), 30)
            for msgs in batch.values():
                out.extend(m.value.decode() for m in msgs)
        return out
    finally:
        await c.stop()


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    p = KafkaProducer(bootstrap_servers=addr, transactional_id='kp-txn-1')
    p.init_transactions()
    p.begin_transaction()
    p.send('kp-txn', b'c1', partition=0)
    p.commit_transaction()
    p.begin_transaction()
    p.send('kp-txn', b'a1', partition=0)
    p.abort_transaction()
    p.begin_transaction()
    p.send('kp-txn', b'c2', partition=0)
    p.commit_transaction()
    p.close()
    c = KafkaConsumer(bootstrap_servers=addr, isolation_level='read_committed',
                      auto_offset_reset='earliest', consumer_timeout_ms=5000)
    c.assign([KTP('kp-txn', 0)])
    values = [m.value.decode() for m in c]
    c.close()
    assert values == ['c1', 'c2'], values
    return values


async def main():
    kp = kafka_python()
    p = AIOKafkaProducer(bootstrap_servers=addr, transactional_id='aio-txn-1')
    await asyncio.wait_for(p.start(), 30)
    try:
        async with p.transaction():
            await p.send_and_wait('aio-txn', b'c1', partition=0)
            await p.send_and_wait('aio-txn', b'c2', partition=0)
        await p.begin_transaction()
        await p.send_and_wait('aio-txn', b'a1', partition=0)
        await asyncio.wait_for(p.abort_transaction(), 30)
        async with p.transaction():
            await p.send_and_wait('aio-txn', b'c3', partition=0)
    finally:
        await p.stop()
    committed = await read('read_committed', 3)
    everything = await read('read_uncommitted', 4)
    assert committed == ['c1', 'c2', 'c3'], committed
    assert sorted(everything) == ['a1', 'c1', 'c2', 'c3'], everything
    print(json.dumps({'kafka_python': kp, 'committed': committed, 'uncommitted': len(everything)}))


asyncio.run(asyncio.wait_for(main(), 120))
