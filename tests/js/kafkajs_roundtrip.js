// kafkajs against kafkabox: a producer, a consumer group of two, offsets, and the admin client.
// Usage: node kafkajs_roundtrip.js HOST:PORT. Prints one JSON line of results; exits non-zero
// on any failure. Every wait is bounded.
const { Kafka, logLevel } = require('kafkajs');

const broker = process.argv[2];
const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [broker], logLevel: logLevel.NOTHING });
const topic = 'js-orders';
const N = 60;

function deadline(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));
}

async function main() {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  out.created = await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  out.partitions = meta.topics[0].partitions.length;

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) messages.push({ key: `k${i % 7}`, value: `v${i}` });
  await producer.send({ topic, messages });
  await producer.disconnect();

  // Two members of one group share the three partitions.
  const seen = new Map();
  const members = [];
  const joins = {}; // member -> partitions of its latest assignment

  for (const name of ['a', 'b']) {
    const consumer = kafka.consumer({ groupId: 'js-group', sessionTimeout: 10000, heartbeatInterval: 500 });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      joins[name] = { generation: e.payload.groupId && e.payload.memberId, partitions: (e.payload.memberAssignment[topic] || []).length };
    });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        seen.set(`${partition}:${message.offset}`, { member: name, value: message.value.toString() });
      },
    });
    members.push(consumer);
  }
  await Promise.race([
    (async () => { while (seen.size < N) await new Promise((r) => setTimeout(r, 50)); })(),
    deadline(30000, `${N} messages`),
  ]);
  // Both members end up in one generation with the three partitions split between them.
  await Promise.race([
    (async () => {
      while (!(joins.a && joins.b && joins.a.partitions + joins.b.partitions === 3 && joins.a.partitions > 0 && joins.b.partitions > 0)) {
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    deadline(30000, 'a rebalance that shares the partitions'),
  ]);
  out.split = [joins.a.partitions, joins.b.partitions].sort();
  out.consumed = seen.size;
  out.values = [...new Set([...seen.values()].map((v) => v.value))].length;
  // Offsets are committed (autoCommit) before the consumers stop.
  for (const c of members) await c.disconnect();

  out.groups = (await admin.listGroups()).groups.map((g) => g.groupId).sort();
  const offsets = await admin.fetchOffsets({ groupId: 'js-group', topics: [topic] });
  out.committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  const described = await admin.describeGroups(['js-group']);
  out.state = described.groups[0].state;
  await admin.setOffsets({ groupId: 'js-group', topic, partitions: [{ partition: 0, offset: '0' }] });
  const reset = await admin.fetchOffsets({ groupId: 'js-group', topics: [topic] });
  out.reset = reset[0].partitions.find((p) => p.partition === 0).offset;
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 1, offset: '-1' }] });
  const low = await admin.fetchTopicOffsets(topic);
  out.low1 = low.find((p) => p.partition === 1).low === low.find((p) => p.partition === 1).high;
  await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
  out.partitionsAfter = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length;
  const configs = await admin.describeConfigs({ resources: [{ type: 2, name: topic }], includeSynonyms: false });
  out.retention = configs.resources[0].configEntries.find((c) => c.configName === 'retention.ms').configValue;
  await admin.deleteGroups(['js-group']);
  await admin.deleteTopics({ topics: [topic] });
  out.topicsAfter = (await admin.listTopics()).includes(topic);
  await admin.disconnect();
  console.log(JSON.stringify(out));
}

Promise.race([main(), deadline(90000, 'the whole run')]).then(
  () => process.exit(0),
  (e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); },
);
