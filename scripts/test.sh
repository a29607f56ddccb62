#!/usr/bin/env bash
# Runs every test of kafkabox: unit tests, and end-to-end tests with real Kafka clients
# (rdkafka/librdkafka, kafka-python, confluent-kafka, kafkajs, kcat). Installs what they need
# first: kcat, Node.js, chromium and the Python venv tooling from Debian, the Python clients,
# pytest and kafkabox's pytest plugin (clients/python) into ./.venv, quixstreams into
# ./.venv-quix, kafkajs and
# playwright-core (pinned by tests/js/package-lock.json) into tests/js/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc g++)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The dashboard and cross-origin tests drive Debian's chromium with playwright-core (tests/js).
[ -x "${KB_CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
# tests/contrib.rs checks contrib/kafkabox.service with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# tests/security.rs makes its CA and certificates with openssl and calls the HTTPS API with curl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# librdkafka (rdkafka's "ssl" feature: the client commands against TLS/SASL) links OpenSSL.
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing Python test clients"
.venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
if [ ! -x .venv-quix/bin/python ]; then
  echo "== creating .venv-quix"
  python3 -m venv .venv-quix
fi
echo "== installing quixstreams (a venv of its own: it pins confluent-kafka below the main one's)"
.venv-quix/bin/pip install -q --disable-pip-version-check -r tests/python/requirements-quix.txt
export KB_TEST_QUIX_PYTHON="$PWD/.venv-quix/bin/python"
echo "== installing kafkabox's pytest plugin (clients/python), as a user does"
.venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python
export KB_TEST_PYTHON="$PWD/.venv/bin/python"

echo "== installing kafkajs and playwright-core (tests/js)"
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

echo "== the binary of the README's run command (default features: no librdkafka)"
cargo build -j2 --bin kafkabox
out=$("${CARGO_TARGET_DIR:-target}/debug/kafkabox" topics list 2>&1) && { echo "expected exit 2: $out"; exit 1; }
case "$out" in
  *"cargo feature"*) ;;
  *) echo "unexpected message without the client feature: $out"; exit 1 ;;
esac

echo "== cargo fmt --check and cargo clippy (warnings are errors)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -j2 -- -D warnings

echo "== cargo test"
# --all-features: the client commands and the bench are tested too (cargo feature "bench").
cargo test --workspace --all-features -j2 "$@"
