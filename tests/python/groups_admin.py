"""Consumer groups and the admin API with the Python clients people use: kafka-python 3
(KafkaConsumer with group_id, KafkaAdminClient) and confluent-kafka (Consumer, AdminClient).
Every check raises on failure; the last line printed is a JSON summary that tests/python_groups.rs
checks again.

Usage: groups_admin.py HOST:PORT
"""
import json
import sys
import time

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


# --- kafka-python ---------------------------------------------------------------------------
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidConfigurationError

admin = KafkaAdminClient(bootstrap_servers=addr)
# Valid Kafka topic configs, including ones kafkabox used to refuse.
admin.create_topics([NewTopic('kp-events', 3, 1, topic_configs={
    'retention.ms': '86400000', 'segment.jitter.ms': '0', 'min.cleanable.dirty.ratio': '0.4',
    'message.timestamp.type': 'CreateTime'})])
try:
    admin.create_topics([NewTopic('kp-bad', 1, 1, topic_configs={'no.such.config': '1'})])
    raise AssertionError('an unknown topic config was accepted')
except InvalidConfigurationError:
    summary['unknown_config'] = 'INVALID_CONFIG'

# ListOffsets by time is exact to the record: 10 records one second apart in one batch.
producer = KafkaProducer(bootstrap_servers=addr, linger_ms=50)
base = int(time.time() * 1000) - 60_000
for i in range(10):
    producer.send('kp-events', value=b'r%d' % i, partition=0, timestamp_ms=base + i * 1000)
producer.flush()
tp0 = TopicPartition('kp-events', 0)
probe = KafkaConsumer(bootstrap_servers=addr)
found = probe.offsets_for_times({tp0: base + 5000})[tp0]
check(found.offset == 5 and found.timestamp == base + 5000, f'offsets_for_times: {found}')
found = probe.offsets_for_times({tp0: base + 4500})[tp0]
check(found.offset == 5, f'offsets_for_times between records: {found}')
probe.close()
summary['kafka_python_offsets_for_times'] = 5

# A consumer group: read everything, commit, and a second consumer of the group resumes after it.
c = KafkaConsumer('kp-events', bootstrap_servers=addr, group_id='kp-group',
                  auto_offset_reset='earliest', enable_auto_commit=False, consumer_timeout_ms=10000)
n = sum(1 for _ in c)
check(n == 10, f'kafka-python group consumer read {n}')
c.commit()
check(c.committed(tp0) == 10, f'committed {c.committed(tp0)}')
c.close()
c = KafkaConsumer('kp-events', bootstrap_servers=addr, group_id='kp-group',
                  auto_offset_reset='earliest', consumer_timeout_ms=10000)
again = sum(1 for _ in c)
c.close()
check(again == 0, f'the group resumed at its commit, yet {again} records came again')
summary['kafka_python_group'] = n

groups = {g['group_id']: g for g in admin.list_groups()}
check('kp-group' in groups and groups['kp-group']['group_state'] == 'Empty', f'list_groups {groups}')
check('kafkabox.profile' in groups, 'pipeline stages are listed as groups')
desc = admin.describe_groups(['kp-group'])['kp-group']
check(desc['group_state'] == 'Empty', f'describe_groups {desc}')
offsets = admin.list_group_offsets('kp-group')['kp-group']
check(offsets[tp0].offset == 10, f'list_group_offsets {offsets}')
deleted = admin.delete_records({tp0: 4})
check(deleted[tp0]['low_watermark'] == 4, f'delete_records {deleted}')
cfg = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp-events')],
                             config_filter='all')
entries = cfg['topic']['kp-events']
check(entries['retention.ms']['value'] == '86400000', f"retention.ms {entries['retention.ms']}")
check(entries['cleanup.policy']['value'] == 'delete', 'defaults are described')
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp-events',
                                    configs={'retention.ms': '3600000'})])
cfg = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp-events')])
check(cfg['topic']['kp-events']['retention.ms']['value'] == '3600000', 'alter_configs took effect')
admin.create_partitions({'kp-events': NewPartitions(5)})
check(len(admin.describe_topics(['kp-events'])[0]['partitions']) == 5, 'create_partitions')
check(admin.delete_groups(['kp-group'])['kp-group'] == 'OK', 'delete_groups')
admin.delete_topics(['kp-events'])
check('kp-events' not in admin.list_topics(), 'delete_topics')
admin.close()
summary['kafka_python_admin'] = 'ok'

# --- confluent-kafka ------------------------------------------------------------------------
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition as CTP
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource as CR,
                                   NewPartitions as CNP, NewTopic as CNT, ResourceType)

ca = AdminClient({'bootstrap.servers': addr})
for f in ca.create_topics([
        CNT('ck-events', 3, 1),
        CNT('ck-log-append', 1, 1, config={'message.timestamp.type': 'LogAppendTime'}),
        CNT('ck-compacted', 1, 1, config={'cleanup.policy': 'compact'})]).values():
    f.result(10)

p = Producer({'bootstrap.servers': addr})
old = int(time.time() * 1000) - 3_600_000
for i in range(30):
    p.produce('ck-events', key=b'k%d' % i, value=b'v%d' % i)
p.produce('ck-log-append', value=b'stamped by the broker', timestamp=old)
p.produce('ck-compacted', key=b'k', value=b'kept')
errors = []
p.produce('ck-compacted', value=b'no key', on_delivery=lambda err, msg: errors.append(err))
p.flush(15)
check(len(errors) == 1 and errors[0] is not None, f'a keyless record on a compacted topic: {errors}')
check(errors[0].code() == KafkaError.INVALID_RECORD, f'compacted topic error {errors[0]}')
summary['compacted_null_key'] = errors[0].name()

c = Consumer({'bootstrap.servers': addr, 'group.id': 'ck-group', 'auto.offset.reset': 'earliest',
              'enable.auto.commit': False})
c.subscribe(['ck-events'])
got = 0
deadline = time.time() + 30
while got < 30 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got += 1
check(got == 30, f'confluent-kafka group consumer read {got}')
c.commit(asynchronous=False)
described = ca.describe_consumer_groups(['ck-group'])['ck-group'].result(10)
check(len(described.members) == 1, f'describe while consuming: {described}')
check(str(described.state).endswith('STABLE'), f'state {described.state}')
start = time.time()
c.close()
close_s = time.time() - start
check(close_s < 5, f'close() took {close_s:.1f} s')
summary['confluent_close_s'] = round(close_s, 2)
summary['confluent_group'] = got

listed = ca.list_consumer_groups().result(10)
check('ck-group' in [g.group_id for g in listed.valid], 'list_consumer_groups')
from confluent_kafka import ConsumerGroupTopicPartitions
offs = ca.list_consumer_group_offsets([ConsumerGroupTopicPartitions('ck-group')])['ck-group'].result(10)
check(sum(tp.offset for tp in offs.topic_partitions) == 30, f'committed offsets {offs.topic_partitions}')
ca.alter_consumer_group_offsets([ConsumerGroupTopicPartitions('ck-group', [CTP('ck-events', 0, 0)])])['ck-group'].result(10)
offs = ca.list_consumer_group_offsets([ConsumerGroupTopicPartitions('ck-group', [CTP('ck-events', 0)])])['ck-group'].result(10)
check(offs.topic_partitions[0].offset == 0, 'alter_consumer_group_offsets')

res = ca.describe_configs([CR(ResourceType.TOPIC, 'ck-log-append')])
cfg = list(res.values())[0].result(10)
check(cfg['message.timestamp.type'].value == 'LogAppendTime', 'LogAppendTime described')
check(cfg['retention.ms'].value == '604800000', 'default retention described')
res = ca.describe_configs([CR(ResourceType.BROKER, '0')])
broker_cfg = list(res.values())[0].result(10)
check(broker_cfg['num.partitions'].is_read_only, 'broker configs are read-only')
fs = ca.incremental_alter_configs([CR(ResourceType.TOPIC, 'ck-events', incremental_configs=[
    ConfigEntry('retention.ms', '7200000', incremental_operation=AlterConfigOpType.SET)])])
list(fs.values())[0].result(10)
cfg = list(ca.describe_configs([CR(ResourceType.TOPIC, 'ck-events')]).values())[0].result(10)
check(cfg['retention.ms'].value == '7200000', 'incremental_alter_configs took effect')
for f in ca.create_partitions([CNP('ck-events', 4)]).values():
    f.result(10)
check(len(ca.list_topics(timeout=10).topics['ck-events'].partitions) == 4, 'create_partitions')
for f in ca.delete_records([CTP('ck-events', 0, 3)]).values():
    f.result(10)

# The LogAppendTime record carries the broker's time, not the producer's.
lc = Consumer({'bootstrap.servers': addr, 'group.id': 'ck-lat', 'auto.offset.reset': 'earliest'})
lc.subscribe(['ck-log-append'])
m = bounded(20, 'the LogAppendTime record', lambda: (lambda x: x if x is not None and not x.error() else None)(lc.poll(0.5)))
ts_type, ts = m.timestamp()
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
check(ts_type == TIMESTAMP_LOG_APPEND_TIME, f'timestamp type {ts_type}')
check(abs(ts - time.time() * 1000) < 60_000, f'broker time {ts}')
lc.close()
summary['log_append_time'] = 'broker'

# offsets_for_times through librdkafka: exact as well.
p = Producer({'bootstrap.servers': addr, 'linger.ms': 50})
base = int(time.time() * 1000) - 30_000
for i in range(10):
    p.produce('ck-log-append', value=b'x', timestamp=base + i)  # LogAppendTime: all now
p.flush(10)
probe = Consumer({'bootstrap.servers': addr, 'group.id': 'ck-probe'})
r = probe.offsets_for_times([CTP('ck-events', 1, 0)], timeout=10)
check(r[0].offset == 0, f'offsets_for_times from 0: {r}')
probe.close()

for f in ca.delete_topics(['ck-events', 'ck-log-append', 'ck-compacted']).values():
    f.result(10)
summary['confluent_admin'] = 'ok'
print(json.dumps(summary))
