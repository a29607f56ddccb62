"""pytest fixtures for kafkabox: a real Kafka broker, started in milliseconds, thrown away after.

    pip install ./clients/python        # from a kafkabox checkout

    def test_orders(kafkabox):
        producer = KafkaProducer(bootstrap_servers=kafkabox.bootstrap)
        kafkabox.add_fault(api="Produce", error="NOT_LEADER_OR_FOLLOWER", count=2)
        ...

Fixtures:
  ``kafkabox``          a fresh box per test (``kafkabox serve --ephemeral``)
  ``kafkabox_session``  one box for the whole session
Marker:
  ``@pytest.mark.kafkabox(args=["--emulate-kafka", "3.5"])`` extra ``serve`` arguments for
  the ``kafkabox`` fixture of that test.
The binary: ``--kafkabox-binary PATH``, else ``$KAFKABOX_BIN``, else ``kafkabox`` on ``$PATH``.
No dependency beyond pytest: the fault API is plain HTTP (urllib).
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

__all__ = ["Kafkabox", "KafkaboxError", "start"]


class KafkaboxError(RuntimeError):
    """kafkabox did not start, or its HTTP API refused a request."""


class Kafkabox:
    """A running ``kafkabox serve --ephemeral``: where to connect, and its faults."""

    def __init__(self, process, ready, log_path):
        self.process = process
        self.ready = ready
        self.log_path = log_path
        #: ``bootstrap.servers`` for any Kafka client.
        self.bootstrap = ready["bootstrap"]
        #: Base URL of the HTTP API and dashboard (None when started with --http-listen '').
        self.http = ready.get("http")
        #: The temporary data directory (removed when the box stops).
        self.data_dir = ready["data_dir"]
        self.pid = ready["pid"]

    # -- the HTTP API -------------------------------------------------------------------
    def api(self, method, path, body=None):
        """Calls kafkabox's HTTP API; returns the decoded JSON answer."""
        if not self.http:
            raise KafkaboxError("this kafkabox runs without its HTTP listener")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.http + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error")
            except Exception:  # noqa: BLE001 - any unreadable body
                message = None
            raise KafkaboxError("%s %s: HTTP %d: %s" % (method, path, e.code, message)) from None

    def add_fault(self, api=None, error=None, latency_ms=None, disconnect=False, stall=False,
                  refuse_connections_ms=None, count=None, probability=None):
        """Injects a fault; returns it (with its ``id``). Exactly one of ``error``,
        ``latency_ms``, ``disconnect``, ``stall`` (each with ``api``: Kafka's API name such as
        ``"Produce"``) or ``refuse_connections_ms``. ``count``: only the next N requests;
        ``probability``: each request with this chance."""
        body = {"api": api, "error": error, "latency_ms": latency_ms,
                "refuse_connections_ms": refuse_connections_ms, "count": count,
                "probability": probability}
        body = {k: v for k, v in body.items() if v is not None}
        if disconnect:
            body["disconnect"] = True
        if stall:
            body["stall"] = True
        return self.api("POST", "/api/faults", body)

    def faults(self):
        """The faults in effect, each with how often it applied (``injected``)."""
        return self.api("GET", "/api/faults")["faults"]

    def clear_faults(self, fault_id=None):
        """Clears one fault or all of them (stalled answers go out); returns how many."""
        path = "/api/faults" if fault_id is None else "/api/faults/%d" % fault_id
        return self.api("DELETE", path)["cleared"]

    def metrics(self):
        """The Prometheus text of ``/metrics``."""
        with urllib.request.urlopen(self.http + "/metrics", timeout=30) as resp:
            return resp.read().decode()

    def log(self):
        """What kafkabox logged so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    # -- life cycle -----------------------------------------------------------------------
    def stop(self, timeout=30):
        """SIGTERM, and wait: the data directory is removed. Returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def find_binary(explicit=None):
    """The kafkabox binary: ``explicit``, ``$KAFKABOX_BIN``, or ``kafkabox`` on ``$PATH``."""
    path = explicit or os.environ.get("KAFKABOX_BIN") or shutil.which("kafkabox")
    if not path:
        raise KafkaboxError(
            "no kafkabox binary: pass --kafkabox-binary, set KAFKABOX_BIN or put kafkabox on PATH"
        )
    return path


def start(binary=None, args=(), timeout=30.0, log_dir=None):
    """Starts ``kafkabox serve --ephemeral`` on free loopback ports and waits for its ready
    line. Returns a :class:`Kafkabox` (a context manager that stops it)."""
    binary = find_binary(binary)
    log_dir = log_dir or tempfile.gettempdir()
    fd, log_path = tempfile.mkstemp(prefix="kafkabox-", suffix=".log", dir=log_dir)
    log = os.fdopen(fd, "wb")
    cmd = [binary, "serve", "--ephemeral", "--listen", "127.0.0.1:0",
           "--http-listen", "127.0.0.1:0", *args]
    env = dict(os.environ, NO_COLOR="1")
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    log.close()
    line = {}

    def read_ready():
        line["text"] = process.stdout.readline()

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(timeout)
    text = line.get("text")
    if not text:
        process.kill()
        process.wait()
        with open(log_path, encoding="utf-8", errors="replace") as f:
            logged = f.read()
        what = "did not get ready within %.0f s" % timeout if reader.is_alive() else "exited"
        raise KafkaboxError("kafkabox %s (%s): %s" % (what, " ".join(cmd), logged[-4000:]))
    ready = json.loads(text)
    return Kafkabox(process, ready, log_path)


def pytest_addoption(parser):
    parser.addoption("--kafkabox-binary", default=None,
                     help="the kafkabox binary (default: $KAFKABOX_BIN, or kafkabox on PATH)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kafkabox(args=[...]): extra `kafkabox serve` arguments for the kafkabox fixture"
    )


@pytest.fixture
def kafkabox(request, tmp_path):
    """A fresh ``kafkabox serve --ephemeral`` for this test, stopped after it."""
    marker = request.node.get_closest_marker("kafkabox")
    args = list(marker.kwargs.get("args", ())) if marker else []
    box = start(request.config.getoption("--kafkabox-binary"), args, log_dir=str(tmp_path))
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="session")
def kafkabox_session(request, tmp_path_factory):
    """One ``kafkabox serve --ephemeral`` for the whole test session."""
    box = start(request.config.getoption("--kafkabox-binary"),
                log_dir=str(tmp_path_factory.mktemp("kafkabox")))
    try:
        yield box
    finally:
        box.stop()
