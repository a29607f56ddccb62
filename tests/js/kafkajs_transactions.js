// kafkajs transactions against kafkabox: producer.transaction() with send, sendOffsets, commit
// and abort; a read_committed consumer (kafkajs's default) sees the committed records only, and
// the group's offsets move with the committed transaction.
// Usage: node kafkajs_transactions.js HOST:PORT. Prints one JSON line of results; exits non-zero
// on any failure. Every wait is bounded.
const { Kafka, logLevel } = require('kafkajs');

const broker = process.argv[2];
const kafka = new Kafka({ clientId: 'kafkajs-txn', brokers: [broker], logLevel: logLevel.NOTHING });
const topic = 'js-txn';

function deadline(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));
}

function bounded(ms, what, promise) {
  return Promise.race([promise, deadline(ms, what)]);
}

async function main() {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });

  const producer = kafka.producer({ transactionalId: 'js-txn-1', maxInFlightRequests: 1, idempotent: true });
  await bounded(30000, 'producer connect', producer.connect());

  let txn = await bounded(30000, 'transaction', producer.transaction());
  await txn.send({ topic, messages: [{ value: 'c1' }, { value: 'c2' }] });
  await txn.sendOffsets({ consumerGroupId: 'js-txn-group', topics: [{ topic, partitions: [{ partition: 0, offset: '2' }] }] });
  await bounded(30000, 'commit', txn.commit());

  txn = await bounded(30000, 'transaction', producer.transaction());
  await txn.send({ topic, messages: [{ value: 'a1' }] });
  await txn.sendOffsets({ consumerGroupId: 'js-txn-group', topics: [{ topic, partitions: [{ partition: 0, offset: '9' }] }] });
  await bounded(30000, 'abort', txn.abort());

  txn = await bounded(30000, 'transaction', producer.transaction());
  await txn.send({ topic, messages: [{ value: 'c3' }] });
  await bounded(30000, 'commit', txn.commit());
  await producer.disconnect();

  // The group's committed offset is the committed transaction's, not the aborted one's.
  const offsets = await admin.fetchOffsets({ groupId: 'js-txn-group', topics: [topic] });
  out.group_offset = Number(offsets[0].partitions[0].offset);

  // A read_committed consumer (kafkajs's default) from the start.
  const consumer = kafka.consumer({ groupId: 'js-txn-reader', readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await bounded(30000, 'read the committed records', new Promise((resolve, reject) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(message.value.toString());
        if (seen.length >= 3) resolve();
      },
    }).catch(reject);
  }));
  // Anything aborted would come in order before c3: give it no chance to hide.
  await new Promise((r) => setTimeout(r, 500));
  await consumer.disconnect();
  out.committed = seen;

  const end = await admin.fetchTopicOffsets(topic);
  out.high = Number(end[0].high);
  await admin.disconnect();
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
