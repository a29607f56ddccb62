"""A confluent-kafka group member that prints "assigned N" once it owns partitions, then keeps
polling until it is killed (tests/groups.rs kills it with SIGKILL to test session expiry).

Usage: group_member.py HOST:PORT GROUP TOPIC
"""
import sys
import time

from confluent_kafka import Consumer

addr, group, topic = sys.argv[1:4]
owned = []


def on_assign(consumer, partitions):
    owned[:] = partitions


c = Consumer({
    'bootstrap.servers': addr,
    'group.id': group,
    'session.timeout.ms': 6000,
    'heartbeat.interval.ms': 500,
    'auto.offset.reset': 'earliest',
})
c.subscribe([topic], on_assign=on_assign)
announced = False
deadline = time.time() + 120
while time.time() < deadline:
    c.poll(0.1)
    if owned and not announced:
        print(f"assigned {len(owned)}", flush=True)
        announced = True
