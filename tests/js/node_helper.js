// kafkabox's Node helper (clients/node) with kafkajs: start a throw-away box, an idempotent
// producer retrying through injected NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT and a lost
// acknowledgement (no duplicates, no loss), a consumer group reading it all back, and kafkajs
// against emulated Kafka 2.8 and 4.0. Prints one JSON line of results; exits non-zero on any
// failure. Every wait is bounded. Run by tests/node_helper.rs with $KAFKABOX_BIN set.
const { Kafka, logLevel } = require('kafkajs');
const { start, KafkaboxError } = require('../../clients/node');

function deadline(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));
}

async function readAll(kafka, topic, n, groupId) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); } });
  await Promise.race([
    (async () => { while (got.length < n) await new Promise((r) => setTimeout(r, 50)); })(),
    deadline(60000, `${n} messages of ${topic}`),
  ]);
  // Nothing more arrives (a duplicate would).
  await new Promise((r) => setTimeout(r, 500));
  await consumer.disconnect();
  return got;
}

function injected(metrics, api, action) {
  const needle = `kafkabox_faults_injected_total{api="${api}",action="${action}"} `;
  const line = metrics.split('\n').find((l) => l.startsWith(needle));
  return line ? Number(line.slice(needle.length)) : 0;
}

async function faults(out) {
  const box = await start({ logDir: process.env.KB_LOG_DIR });
  try {
    out.ephemeral = box.ready.ephemeral;
    const kafka = new Kafka({ clientId: 'helper', brokers: [box.bootstrap], logLevel: logLevel.NOTHING,
      retry: { initialRetryTime: 50, retries: 10 } });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'js-faults', numPartitions: 1 }] });
    await admin.disconnect();
    await box.addFault({ api: 'Produce', error: 'NOT_LEADER_OR_FOLLOWER', count: 2 });
    await box.addFault({ api: 'Produce', error: 'REQUEST_TIMED_OUT', count: 2 });
    await box.addFault({ api: 'Produce', disconnect: true, count: 1 });
    out.faultsSet = (await box.faults()).length;
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const N = 100;
    for (let b = 0; b < N / 10; b++) {
      const messages = [];
      for (let i = b * 10; i < (b + 1) * 10; i++) messages.push({ value: `m${String(i).padStart(4, '0')}` });
      await producer.send({ topic: 'js-faults', messages });
    }
    await producer.disconnect();
    const got = await readAll(kafka, 'js-faults', N, 'js-faults-group');
    const want = Array.from({ length: N }, (_, i) => `m${String(i).padStart(4, '0')}`);
    out.exactlyOnceInOrder = JSON.stringify(got) === JSON.stringify(want);
    out.consumed = got.length;
    out.faultsLeft = (await box.faults()).length;
    const m = await box.metrics();
    out.injectedErrors = injected(m, 'Produce', 'error');
    out.injectedDisconnects = injected(m, 'Produce', 'disconnect');
    try {
      await box.addFault({ api: 'Produce', error: 'NO_SUCH_ERROR' });
      out.badFault = 'accepted';
    } catch (e) {
      out.badFault = e instanceof KafkaboxError && /unknown error 'NO_SUCH_ERROR'/.test(e.message) ? 'refused' : String(e);
    }
  } finally {
    out.exitCode = await box.stop();
    out.dataDirRemoved = !require('fs').existsSync(box.dataDir);
  }
}

async function emulated(release, out) {
  const box = await start({ args: ['--emulate-kafka', release], logDir: process.env.KB_LOG_DIR });
  try {
    const kafka = new Kafka({ clientId: `emulate-${release}`, brokers: [box.bootstrap], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'js-emulated', numPartitions: 2 }] });
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic: 'js-emulated', messages: [{ key: 'a', value: 'x' }, { key: 'b', value: 'y' }] });
    await producer.disconnect();
    const got = await readAll(kafka, 'js-emulated', 2, `js-emulated-${release}`);
    const offsets = await admin.fetchOffsets({ groupId: `js-emulated-${release}`, topics: ['js-emulated'] });
    await admin.disconnect();
    out[`emulate_${release}`] = { consumed: got.sort(), release: box.ready.emulate_kafka, partitions: offsets[0].partitions.length };
  } finally {
    await box.stop();
  }
}

async function main() {
  const out = {};
  await faults(out);
  for (const release of ['2.8', '3.5', '3.9', '4.0']) await emulated(release, out);
  console.log(JSON.stringify(out));
}

Promise.race([main(), deadline(240000, 'the whole run')])
  .then(() => process.exit(0))
  .catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
