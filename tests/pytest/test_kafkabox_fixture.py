"""kafkabox's pytest fixture with the guide's client (kafka-python) and confluent-kafka:
start, produce, consume, faults (producer retries with idempotence: no duplicates, no loss),
a consumer under faults, stalls, refused connections, and the emulated Kafka versions as
each client's ApiVersions handling sees them."""

import logging
import os
import time
import tomllib

import pytest
import pytest_kafkabox
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_all(bootstrap, topic, n, timeout_s=60):
    """Every record of partition 0 of `topic`, until `n` are read (bounded in time)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for tp_records in consumer.poll(timeout_ms=500).values():
            out.extend(tp_records)
    # Nothing beyond n either.
    out.extend(r for recs in consumer.poll(timeout_ms=500).values() for r in recs)
    consumer.close()
    return out


def injected(box, api, action):
    """kafkabox_faults_injected_total{api, action} from /metrics."""
    needle = 'kafkabox_faults_injected_total{api="%s",action="%s"} ' % (api, action)
    for line in box.metrics().splitlines():
        if line.startswith(needle):
            return int(float(line[len(needle):]))
    return 0


def test_ready_line_and_round_trip(kafkabox):
    assert kafkabox.bootstrap.startswith("127.0.0.1:")
    assert kafkabox.ready["ephemeral"] is True
    assert kafkabox.ready["faults"] is True
    assert os.path.isdir(kafkabox.data_dir)
    producer = KafkaProducer(bootstrap_servers=kafkabox.bootstrap)
    for i in range(10):
        producer.send("fixture-roundtrip", b"v%d" % i)
    producer.flush(30)
    producer.close()
    got = read_all(kafkabox.bootstrap, "fixture-roundtrip", 10)
    assert [r.value for r in got] == [b"v%d" % i for i in range(10)]
    assert [r.offset for r in got] == list(range(10))


def test_stop_removes_the_data_dir(tmp_path):
    box = pytest_kafkabox.start(log_dir=str(tmp_path))
    data_dir = box.data_dir
    assert os.path.isdir(data_dir)
    assert box.stop() == 0
    assert not os.path.exists(data_dir)
    assert "ephemeral data directory removed" in box.log()


def test_bad_fault_is_refused_clearly(kafkabox):
    with pytest.raises(pytest_kafkabox.KafkaboxError, match="does not take injected errors"):
        kafkabox.add_fault(api="SaslHandshake", error="UNKNOWN_SERVER_ERROR")
    with pytest.raises(pytest_kafkabox.KafkaboxError, match="unknown error 'NOPE'"):
        kafkabox.add_fault(api="Produce", error="NOPE")
    assert kafkabox.faults() == []


PRODUCE_FAULTS = [
    dict(api="Produce", error="NOT_LEADER_OR_FOLLOWER", count=3),
    dict(api="Produce", error="REQUEST_TIMED_OUT", count=3),
    # Carried out, acknowledgement lost: the retry must not write it twice.
    dict(api="Produce", disconnect=True, count=2),
]


def check_exactly_once(box, topic, n):
    got = read_all(box.bootstrap, topic, n)
    values = [r.value for r in got]
    assert len(values) == n, "%d records, want %d" % (len(values), n)
    assert values == [b"m%04d" % i for i in range(n)], "lost, duplicated or reordered"
    assert [r.offset for r in got] == list(range(n))
    assert box.faults() == [], "every counted fault ran out"
    assert injected(box, "Produce", "error") == 6
    assert injected(box, "Produce", "disconnect") == 2


def test_kafka_python_idempotent_producer_retries_through_faults(kafkabox):
    for f in PRODUCE_FAULTS:
        kafkabox.add_fault(**f)
    producer = KafkaProducer(bootstrap_servers=kafkabox.bootstrap, enable_idempotence=True,
                             acks="all", linger_ms=5, retry_backoff_ms=20,
                             max_in_flight_requests_per_connection=1)
    futures = [producer.send("kp-faults", b"m%04d" % i, partition=0) for i in range(300)]
    producer.flush(120)
    offsets = [f.get(timeout=60).offset for f in futures]
    producer.close()
    assert offsets == list(range(300))
    check_exactly_once(kafkabox, "kp-faults", 300)
    assert "fault applied" in kafkabox.log()


def test_confluent_kafka_idempotent_producer_retries_through_faults(kafkabox):
    for f in PRODUCE_FAULTS:
        kafkabox.add_fault(**f)
    producer = Producer({"bootstrap.servers": kafkabox.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "retry.backoff.ms": 20})
    reports = []
    for i in range(300):
        producer.produce("ck-faults", b"m%04d" % i, partition=0,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        producer.poll(0)
    assert producer.flush(120) == 0
    assert all(err is None for err, _ in reports), reports[:5]
    assert sorted(o for _, o in reports) == list(range(300))
    check_exactly_once(kafkabox, "ck-faults", 300)


def test_consumer_group_reads_everything_through_faults(kafkabox):
    producer = KafkaProducer(bootstrap_servers=kafkabox.bootstrap)
    for i in range(100):
        producer.send("cg-faults", b"m%04d" % i, partition=0)
    producer.flush(30)
    producer.close()
    kafkabox.add_fault(api="FindCoordinator", error="COORDINATOR_NOT_AVAILABLE", count=2)
    kafkabox.add_fault(api="Fetch", error="NOT_LEADER_OR_FOLLOWER", count=2)
    kafkabox.add_fault(api="Fetch", latency_ms=100, count=1)
    kafkabox.add_fault(api="OffsetCommit", error="REQUEST_TIMED_OUT", count=1)
    consumer = KafkaConsumer("cg-faults", bootstrap_servers=kafkabox.bootstrap,
                             group_id="cg", auto_offset_reset="earliest",
                             enable_auto_commit=False)
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 100 and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            seen.extend(r.value for r in recs)
    committed = False
    while not committed and time.monotonic() < deadline:
        try:
            consumer.commit()
            committed = True
        except Exception:  # noqa: BLE001 - the injected REQUEST_TIMED_OUT; commit again
            time.sleep(0.1)
    consumer.close()
    assert seen == [b"m%04d" % i for i in range(100)]
    assert committed
    assert kafkabox.faults() == []
    assert injected(kafkabox, "FindCoordinator", "error") == 2
    assert injected(kafkabox, "Fetch", "error") == 2
    assert injected(kafkabox, "Fetch", "latency") == 1
    assert injected(kafkabox, "OffsetCommit", "error") == 1


def test_stalled_acknowledgements_go_out_when_cleared(kafkabox):
    producer = Producer({"bootstrap.servers": kafkabox.bootstrap, "enable.idempotence": True})
    producer.produce("stall", b"before")
    assert producer.flush(30) == 0
    fault = kafkabox.add_fault(api="Produce", stall=True)
    reports = []
    producer.produce("stall", b"held", on_delivery=lambda err, msg: reports.append(err))
    # The broker wrote it but does not acknowledge: still in flight after a second.
    assert producer.flush(1.0) == 1
    assert reports == []
    assert kafkabox.faults()[0]["injected"] >= 1
    assert kafkabox.clear_faults() == 1
    assert producer.flush(30) == 0
    assert reports == [None]
    got = read_all(kafkabox.bootstrap, "stall", 2)
    assert [r.value for r in got] == [b"before", b"held"]
    assert fault["stall"] is True


def test_refused_connections_then_recovery(kafkabox):
    kafkabox.add_fault(refuse_connections_ms=1500)
    producer = Producer({"bootstrap.servers": kafkabox.bootstrap,
                         "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
                         "message.timeout.ms": 30000})
    reports = []
    producer.produce("refused", b"x", on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(30) == 0
    assert reports == [None]
    assert injected(kafkabox, "connection", "refuse_connections") >= 1


# -- emulated Kafka versions -------------------------------------------------------------

with open(os.path.join(REPO, "src", "config", "kafka_releases.toml"), "rb") as f:
    RELEASES = tomllib.load(f)


def advertised(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        versions = {int(k): tuple(v) for k, v in admin.api_versions().items()}
        broker = admin.get_broker_version_data(0).broker_version
    finally:
        admin.close()
    return versions, broker


@pytest.fixture(scope="module")
def full_ranges(tmp_path_factory):
    """What kafkabox advertises without emulation."""
    with pytest_kafkabox.start(log_dir=str(tmp_path_factory.mktemp("full"))) as box:
        versions, _ = advertised(box.bootstrap)
    return versions


@pytest.mark.parametrize("release, inferred", [
    ("2.8", (2, 8)),
    # kafkabox answers Fetch up to v12, and kafka-python tells 3.5 and 3.9 by Fetch 15 and 17:
    # it takes them for the newest release it can tell, 3.3 (DescribeAcls v3) and 3.8
    # (Produce v11).
    ("3.5", (3, 3)),
    ("3.9", (3, 8)),
    ("4.0", (4, 0)),
])
def test_kafka_python_sees_the_emulated_release(release, inferred, full_ranges, tmp_path):
    with pytest_kafkabox.start(args=["--emulate-kafka", release], log_dir=str(tmp_path)) as box:
        assert box.ready["emulate_kafka"] == release
        versions, broker = advertised(box.bootstrap)
        expected = {}
        for key, lo, hi in RELEASES[release].values():
            if key in full_ranges:
                a, b = max(lo, full_ranges[key][0]), min(hi, full_ranges[key][1])
                if a <= b:
                    expected[key] = (a, b)
        assert versions == expected
        assert broker == inferred
        # And the client works against it.
        producer = KafkaProducer(bootstrap_servers=box.bootstrap)
        producer.send("emulated", b"x").get(timeout=30)
        producer.close()
        assert [r.value for r in read_all(box.bootstrap, "emulated", 1)] == [b"x"]


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def kip848_consumer(bootstrap, topic):
    """A librdkafka consumer of the KIP-848 protocol (group.protocol=consumer): the first
    record it reads, or "unsupported" when librdkafka finds the broker lacks the protocol."""
    lines = Lines()
    logger = logging.getLogger("kip848-%s" % bootstrap)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kip848",
                  "group.protocol": "consumer", "auto.offset.reset": "earliest",
                  "debug": "cgrp", "logger": logger})
    c.subscribe([topic])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if any("ConsumerGroupHeartbeatRequest not supported by broker" in l
                   for l in lines.lines):
                return "unsupported"
            if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert not m.error(), m.error()
            return m.value()
        return None
    finally:
        c.close()


@pytest.mark.parametrize("release, works", [("3.5", False), ("4.0", True)])
def test_confluent_kafka_new_consumer_protocol_follows_the_release(release, works, tmp_path):
    with pytest_kafkabox.start(args=["--emulate-kafka", release], log_dir=str(tmp_path)) as box:
        p = Producer({"bootstrap.servers": box.bootstrap})
        p.produce("kip848", b"hello")
        assert p.flush(30) == 0
        got = kip848_consumer(box.bootstrap, "kip848")
        # Kafka 3.5 has no ConsumerGroupHeartbeat: librdkafka finds it cannot use the new
        # consumer protocol there; 4.0 has it.
        assert got == (b"hello" if works else "unsupported")
