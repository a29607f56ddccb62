// kafkabox for Node.js tests: start `kafkabox serve --ephemeral` on free loopback ports, learn
// where it listens from its ready line, inject faults over its HTTP API, stop it (its data
// directory goes with it). No dependencies beyond Node 18 (global fetch).
//
//   const { start } = require('kafkabox-test');   // or require('<checkout>/clients/node')
//   const box = await start();                      // box.bootstrap: '127.0.0.1:PORT'
//   const kafka = new Kafka({ brokers: [box.bootstrap] });
//   await box.addFault({ api: 'Produce', error: 'NOT_LEADER_OR_FOLLOWER', count: 2 });
//   ...
//   await box.stop();
//
// The binary: options.binary, else $KAFKABOX_BIN, else `kafkabox` on $PATH.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

class KafkaboxError extends Error {}

class Kafkabox {
  constructor(child, ready, logPath) {
    this.child = child;
    this.ready = ready;
    this.logPath = logPath;
    /** `bootstrap.servers` / kafkajs `brokers: [bootstrap]`. */
    this.bootstrap = ready.bootstrap;
    /** Base URL of the HTTP API (null when started with --http-listen ''). */
    this.http = ready.http;
    /** The temporary data directory, removed when the box stops. */
    this.dataDir = ready.data_dir;
    this.pid = ready.pid;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Calls kafkabox's HTTP API; resolves to the decoded JSON answer. */
  async api(method, p, body) {
    if (!this.http) throw new KafkaboxError('this kafkabox runs without its HTTP listener');
    const res = await fetch(this.http + p, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30000),
    });
    const json = await res.json();
    if (!res.ok) throw new KafkaboxError(`${method} ${p}: HTTP ${res.status}: ${json.error}`);
    return json;
  }

  /**
   * Injects a fault: { api, error } | { api, latency_ms } | { api, disconnect: true } |
   * { api, stall: true } | { refuse_connections_ms }, with optional count and probability.
   * Resolves to the fault (with its id).
   */
  addFault(fault) {
    return this.api('POST', '/api/faults', fault);
  }

  /** The faults in effect, each with how often it applied (`injected`). */
  async faults() {
    return (await this.api('GET', '/api/faults')).faults;
  }

  /** Clears one fault or all of them (stalled answers go out); resolves to how many. */
  async clearFaults(id) {
    return (await this.api('DELETE', id === undefined ? '/api/faults' : `/api/faults/${id}`)).cleared;
  }

  /** The Prometheus text of /metrics. */
  async metrics() {
    const res = await fetch(this.http + '/metrics', { signal: AbortSignal.timeout(30000) });
    return res.text();
  }

  /** What kafkabox logged so far. */
  log() {
    return fs.readFileSync(this.logPath, 'utf8');
  }

  /** SIGTERM and wait (SIGKILL after `timeoutMs`); resolves to the exit code. */
  async stop(timeoutMs = 30000) {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    return (await this.exited).code;
  }
}

function findBinary(explicit) {
  const bin = explicit || process.env.KAFKABOX_BIN || 'kafkabox';
  return bin;
}

/**
 * Starts `kafkabox serve --ephemeral --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 ...args`
 * and resolves once it printed its ready line. options: { binary, args, timeoutMs, logDir }.
 */
function start(options = {}) {
  const binary = findBinary(options.binary);
  const args = ['serve', '--ephemeral', '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', ...(options.args || [])];
  const logDir = options.logDir || os.tmpdir();
  const logPath = path.join(logDir, `kafkabox-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.log`);
  const logFd = fs.openSync(logPath, 'w');
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', logFd],
    env: { ...process.env, NO_COLOR: '1' },
  });
  fs.closeSync(logFd);
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    const fail = (why) => {
      clearTimeout(timer);
      lines.close();
      child.kill('SIGKILL');
      let logged = '';
      try { logged = fs.readFileSync(logPath, 'utf8').slice(-4000); } catch (_) { /* none */ }
      reject(new KafkaboxError(`kafkabox ${why} (${binary} ${args.join(' ')}): ${logged}`));
    };
    const timer = setTimeout(() => fail(`did not get ready within ${options.timeoutMs || 30000} ms`), options.timeoutMs || 30000);
    child.once('error', (e) => fail(`could not start: ${e.message}`));
    child.once('exit', (code) => fail(`exited with ${code} before it was ready`));
    lines.once('line', (line) => {
      clearTimeout(timer);
      child.removeAllListeners('exit');
      child.removeAllListeners('error');
      lines.close();
      try {
        resolve(new Kafkabox(child, JSON.parse(line), logPath));
      } catch (e) {
        reject(new KafkaboxError(`kafkabox printed no ready line: ${line}`));
      }
    });
  });
}

module.exports = { start, Kafkabox, KafkaboxError };
