//! The client commands of the real `kafkabox` binary (topics, produce, consume, groups,
//! customers, dlq) against a real `kafkabox serve`: every flag, the output formats and the exit
//! codes scripts rely on (0 done, 1 failed, 2 usage, 3 not found).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::BrokerProcess;
use serde_json::Value;

struct Cli {
    bootstrap: String,
    http: String,
    token: String,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
        c.args(args)
            .env("KAFKABOX_BOOTSTRAP", &self.bootstrap)
            .env("KAFKABOX_HTTP", &self.http)
            .env("KAFKABOX_HTTP_TOKEN", &self.token)
            .env("NO_COLOR", "1");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kafkabox");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kafkabox output")
    }

    /// Runs and expects exit code `code`; returns stdout.
    fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kafkabox {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Whether a table (columns apart by spaces) has a row of exactly these cells.
fn has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|l| words(l) == cells)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn client_commands_speak_kafka_and_http() {
    let _watchdog = common::watchdog("client_commands_speak_kafka_and_http");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("down");
    std::fs::write(&flag, "").unwrap();
    let exec = format!(
        "if [ -e '{}' ]; then echo down >&2; exit 65; fi; cat > /dev/null",
        flag.display()
    );
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--set",
            "http.token=cli-token",
            "--set",
            "customer.events.handlers=profile,exec",
            "--set",
            &format!("exec.command={exec}"),
        ],
    );
    let cli = Cli {
        bootstrap: broker.addr.to_string(),
        http: format!("http://{}", broker.http_addr()),
        token: "cli-token".into(),
    };

    // topics create / list / describe / delete
    cli.expect(
        &[
            "topics",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        0,
    );
    let out = cli.run(&["topics", "create", "orders"]);
    assert_eq!(out.status.code(), Some(1), "exists: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    let list = cli.expect(&["topics", "list", "--json"], 0);
    let orders = json_lines(&list)
        .into_iter()
        .find(|t| t["name"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["partitions"], 3);
    let table = cli.expect(&["topics", "list"], 0);
    assert_eq!(
        words(table.lines().next().unwrap()),
        ["TOPIC", "PARTITIONS", "RECORDS"]
    );
    assert!(has_row(&table, &["orders", "3", "0"]), "{table}");
    let d = cli.expect(&["topics", "describe", "orders", "--json"], 0);
    let d: Value = serde_json::from_str(d.trim()).unwrap();
    assert_eq!(d["configs"]["retention.ms"], "3600000");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert!(cli
        .expect(&["topics", "describe", "orders"], 0)
        .contains("retention.ms=3600000"));
    cli.expect(&["topics", "describe", "nope"], 3);

    // produce: keys, JSON check, partition
    let out = cli.run_stdin(
        &["produce", "orders", "-K", ":", "--json"],
        "a:{\"n\":1}\nb:{\"n\":2}\nc:{\"n\":3}\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 records produced"));
    let out = cli.run_stdin(&["produce", "orders", "--json"], "{\"n\":4}\nnot json\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: not JSON"));
    let out = cli.run_stdin(&["produce", "orders", "-p", "2"], "x\ny\n");
    assert!(out.status.success(), "{out:?}");

    // consume: all, JSON, keys, offset, partition, time, count, group
    let all = json_lines(&cli.expect(&["consume", "orders", "--format", "json"], 0));
    assert_eq!(all.len(), 6, "{all:?}");
    let a = all.iter().find(|r| r["key"] == "a").unwrap();
    assert_eq!(a["value"]["n"], 1);
    assert_eq!(a["value_encoding"], "json");
    let p2 = cli.expect(&["consume", "orders", "-p", "2", "--offset", "0"], 0);
    assert!(
        p2.lines().filter(|l| *l == "x" || *l == "y").count() == 2,
        "{p2}"
    );
    let keyed = cli.expect(&["consume", "orders", "--print-key", "-n", "6"], 0);
    assert!(keyed.contains("a\t{\"n\":1}"), "{keyed}");
    let after = cli.expect(&["consume", "orders", "--from-time", "4102444800000"], 0);
    assert_eq!(after, "", "nothing after 2100");
    let one = cli.expect(
        &[
            "consume",
            "orders",
            "-n",
            "1",
            "--from-time",
            "0",
            "-p",
            "2",
        ],
        0,
    );
    assert_eq!(one.lines().next(), p2.lines().next());
    cli.expect(&["consume", "nope"], 3);
    cli.expect(&["consume", "orders", "-p", "9"], 3);
    let g1 = cli.expect(&["consume", "orders", "-g", "cli-group", "-n", "4"], 0);
    assert_eq!(g1.lines().count(), 4);
    let g2 = cli.expect(&["consume", "orders", "-g", "cli-group"], 0);
    assert_eq!(
        g2.lines().count(),
        2,
        "the group resumes where it committed: {g2}"
    );

    // --from-end (and so --follow) sees only what is produced after it started
    let follower = cli
        .cmd(&["consume", "orders", "--from-end", "-n", "1", "-p", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = cli.run_stdin(&["produce", "orders", "-p", "0"], "late\n");
    assert!(out.status.success());
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "late");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let follow = cli
        .cmd(&[
            "consume",
            "orders",
            "-f",
            "-p",
            "1",
            "-n",
            "4",
            "--from-time",
            &now,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cli.run_stdin(&["produce", "orders", "-p", "1"], "f1\nf2\nf3\nf4\n");
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "f1\nf2\nf3\nf4\n");

    // groups list / describe
    let groups = json_lines(&cli.expect(&["groups", "list", "--json"], 0));
    assert!(
        groups.iter().any(|g| g["group_id"] == "cli-group"),
        "{groups:?}"
    );
    assert!(
        groups.iter().any(|g| g["group_id"] == "kafkabox.profile"),
        "{groups:?}"
    );
    let table = cli.expect(&["groups", "list"], 0);
    assert_eq!(
        words(table.lines().next().unwrap()),
        ["GROUP", "STATE", "MEMBERS"]
    );
    assert!(has_row(&table, &["cli-group", "Empty", "0"]), "{table}");
    let g: Value = serde_json::from_str(
        cli.expect(&["groups", "describe", "cli-group", "--json"], 0)
            .trim(),
    )
    .unwrap();
    assert_eq!(g["state"], "Empty");
    let committed: i64 = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["committed_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(committed, 6, "{g}");
    assert!(cli
        .expect(&["groups", "describe", "cli-group"], 0)
        .contains("orders/"));
    cli.expect(&["groups", "describe", "no-such-group"], 3);

    // customers (HTTP): events from the CLI producer
    let events: String = (0..3)
        .map(|i| {
            format!(
                "{{\"customer_id\":\"cust-9\",\"event_type\":\"app_login\",\"timestamp\":\"2024-03-01T08:0{i}:00Z\",\"source\":\"cli\"}}\n"
            )
        })
        .collect::<String>()
        + "{\"source\":\"cli\"}\n";
    let out = cli.run_stdin(&["produce", "customer-events", "--json"], &events);
    assert!(out.status.success(), "{out:?}");
    let mut shown = String::new();
    for _ in 0..100 {
        let out = cli.run(&["customers", "show", "cust-9"]);
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && shown.contains("\"events\": 3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(shown.contains("\"events\": 3"), "{shown}");
    let table = cli.expect(&["customers", "search", "CUST"], 0);
    assert!(table.starts_with("CUSTOMER"), "{table}");
    assert!(
        has_row(&table, &["cust-9", "3", "2024-03-01T08:02:00Z"]),
        "{table}"
    );
    cli.expect(&["customers", "show", "nobody"], 3);
    let out = cli
        .cmd(&["customers", "show", "cust-9"])
        .env("KAFKABOX_HTTP_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));

    // dlq (HTTP): list, replay one, replay a reason, skip
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = json_lines(&cli.expect(&["dlq", "list", "--json", "--stage", "exec"], 0));
        if listed.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(listed.len(), 3);
    let table = cli.expect(
        &[
            "dlq",
            "list",
            "--status",
            "pending",
            "--source",
            "cli",
            "--reason",
            "customer_id",
            "--topic",
            "customer-events",
            "--since",
            "0",
            "--until",
            "4102444800000",
            "--limit",
            "5",
        ],
        0,
    );
    assert_eq!(
        table.lines().count(),
        2,
        "a header and the contract violation: {table}"
    );
    assert!(table.starts_with("DEAD LETTER"), "{table}");
    assert!(table.contains("contract"), "{table}");
    // still down: replay fails, exit 1. Named by the original topic, the partition and offset
    // are the original record's (docs/cli.md); named by the .dlq topic, the dead letter's own.
    let off = listed[0]["original"]["offset"]
        .as_i64()
        .unwrap()
        .to_string();
    let part = listed[0]["original"]["partition"]
        .as_i64()
        .unwrap()
        .to_string();
    let dlq_off = listed[0]["offset"].as_i64().unwrap().to_string();
    let dlq_part = listed[0]["partition"].as_i64().unwrap().to_string();
    assert_eq!(listed[0]["topic"], "customer-events.dlq");
    // The two places differ here, so acting on the wrong one would show.
    assert_ne!((&part, &off), (&dlq_part, &dlq_off), "{}", listed[0]);
    cli.expect(
        &[
            "dlq",
            "replay",
            "--topic",
            "customer-events",
            "--partition",
            &part,
            "--offset",
            &off,
        ],
        1,
    );
    std::fs::remove_file(&flag).unwrap();
    let out = cli.expect(
        &[
            "dlq",
            "replay",
            "--topic",
            "customer-events",
            "--partition",
            &part,
            "--offset",
            &off,
        ],
        0,
    );
    assert!(
        out.contains(&format!(
            "customer-events.dlq/{dlq_part}@{dlq_off}\treplayed"
        )),
        "{out}"
    );
    // Replayed already: refused, exit 1 (named by the dead letter's own place this time).
    cli.expect(
        &[
            "dlq",
            "replay",
            "--topic",
            "customer-events.dlq",
            "--partition",
            &dlq_part,
            "--offset",
            &dlq_off,
        ],
        1,
    );
    let out = cli.expect(&["dlq", "replay", "--reason", "down", "--stage", "exec"], 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("\treplayed")).count(),
        2,
        "{out}"
    );
    let out = cli.expect(&["dlq", "skip", "--reason", "customer_id"], 0);
    assert!(out.contains("skipped"), "{out}");
    assert_eq!(cli.expect(&["dlq", "list", "--status", "pending"], 0), "");
    cli.expect(&["dlq", "replay"], 2);
    cli.expect(
        &[
            "dlq",
            "skip",
            "--topic",
            "customer-events",
            "--partition",
            "0",
            "--offset",
            "999",
        ],
        3,
    );

    // A record that is not JSON: dead-lettered with source "unknown", counted under it.
    let out = cli.run_stdin(&["produce", "customer-events"], "not json at all\n");
    assert!(out.status.success());
    let mut unknown = Vec::new();
    for _ in 0..100 {
        unknown = json_lines(&cli.expect(&["dlq", "list", "--json", "--source", "unknown"], 0));
        if !unknown.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["value"], "not json at all");
    assert_eq!(unknown[0]["value_encoding"], "utf8");

    // delete, usage errors, unreachable broker
    cli.expect(&["topics", "delete", "orders"], 0);
    cli.expect(&["topics", "delete", "orders"], 3);
    cli.expect(&["topics", "frobnicate"], 2);
    let out = cli
        .cmd(&["topics", "list", "--timeout-ms", "1500"])
        .env("KAFKABOX_BOOTSTRAP", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = cli
        .cmd(&["customers", "show", "x"])
        .env("KAFKABOX_HTTP", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    // The connection flags themselves (the rest of this test uses the environment).
    let bootstrap = broker.addr.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["topics", "list", "--bootstrap", &bootstrap])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("customer-events")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args([
            "customers",
            "search",
            "cust",
            "--limit",
            "1",
            "--http",
            &cli.http,
            "--token",
            "cli-token",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The header and one customer.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // -X passes librdkafka settings through (a bad one is refused).
    cli.expect(&["topics", "list", "-X", "client.id=cli-test"], 0);
    cli.expect(&["topics", "list", "-X", "no.such.setting=1"], 2);

    // The log: each dead letter's warning names both offsets; valid events only as counts.
    let mut log = String::new();
    for _ in 0..150 {
        log = broker.log_text();
        if log.contains("events checked in the last 10 s") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log.contains("events checked in the last 10 s"), "{log}");
    let warning = log
        .lines()
        .find(|l| {
            l.contains("event sent to the dead-letter topic (contract)")
                && l.contains("source=\"unknown\"")
        })
        .unwrap_or_else(|| panic!("no dead-letter warning: {log}"));
    assert!(
        warning.contains("dlq_topic=customer-events.dlq") && warning.contains("dlq_offset="),
        "{warning}"
    );
    assert!(
        !log.contains("cust-9"),
        "valid events are not logged one by one: {log}"
    );
}

/// The CLI says what happened: the broker's message, the partition's range, one line for an
/// unreachable cluster, empty results said so, usage errors exit 2, counts in words.
#[test]
fn the_cli_says_what_happened() {
    let _watchdog = common::watchdog("the_cli_says_what_happened");
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::spawn(&dir.path().join("data"), &["--set", "faults.allow=true"]);
    let cli = Cli {
        bootstrap: broker.addr.to_string(),
        http: format!("http://{}", broker.http_addr()),
        token: String::new(),
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The broker's message, not only the code.
    let out = cli.run(&["topics", "create", "x", "-c", "retention.msx=1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("Unknown topic config name: retention.msx (InvalidConfig)"),
        "{}",
        stderr(&out)
    );
    // Usage errors exit 2.
    assert_eq!(
        cli.run(&["topics", "create", "x", "-c", "novalue"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        cli.run(&["topics", "list", "-X", "nokv"]).status.code(),
        Some(2)
    );
    assert_eq!(
        cli.run(&["topics", "list", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(
        cli.run(&["dlq", "skip", "--partition", "0"]).status.code(),
        Some(2)
    );

    // An unreachable cluster: one line, exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = cli.run(&["topics", "list", "-b", &closed.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = stderr(&out);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains(&format!("cannot reach the Kafka cluster at {closed}")),
        "{e}"
    );

    // Counts in words, singular and plural.
    let out = cli.run_stdin(&["produce", "orders"], "r0\n");
    assert!(
        stderr(&out).contains("1 record produced to orders"),
        "{}",
        stderr(&out)
    );
    let out = cli.run_stdin(&["produce", "orders"], "r1\n");
    assert!(out.status.success());
    let out = cli.run(&["consume", "orders"]);
    assert!(
        stderr(&out).contains("2 records consumed from orders"),
        "{}",
        stderr(&out)
    );

    // An offset beyond the partition's end: its range, exit 1; with --follow, waited for.
    let out = cli.run(&["consume", "orders", "-p", "0", "--offset", "100"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out)
            .contains("partition 0 of 'orders' holds offsets 0 to 1: offset 100 is beyond its end"),
        "{}",
        stderr(&out)
    );
    let waiting = cli
        .cmd(&[
            "consume", "orders", "-p", "0", "--offset", "3", "-f", "-n", "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(cli
        .run_stdin(&["produce", "orders"], "r2\nr3\nr4\n")
        .status
        .success());
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "r3\n");
    assert!(stderr(&out).contains("waiting for partition 0 of 'orders' to reach offset 3"));

    // Empty results say so (on stderr: stdout stays empty for scripts).
    let out = cli.run(&["customers", "search", "zzz"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        stderr(&out).contains("no customer id contains 'zzz'"),
        "{}",
        stderr(&out)
    );
    let out = cli.run(&["faults", "list"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        stderr(&out).contains("no faults in effect"),
        "{}",
        stderr(&out)
    );
    let out = cli.run(&["dlq", "list"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        stderr(&out).contains("no dead letters match"),
        "{}",
        stderr(&out)
    );
    assert!(cli
        .run(&["faults", "add", "--api", "Fetch", "--latency-ms", "1"])
        .status
        .success());
    let listed = cli.expect(&["faults", "list"], 0);
    assert!(listed.starts_with("ID\tFAULT\tINJECTED\n"), "{listed}");

    // Times as times.
    let out = cli.run_stdin(&["produce", "customer-events"], "{\"source\":\"cli\"}\n");
    assert!(out.status.success());
    let skip = [
        "dlq",
        "skip",
        "--topic",
        "customer-events",
        "--partition",
        "0",
        "--offset",
        "0",
    ];
    for _ in 0..100 {
        if cli.run(&skip).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cli.run(&skip);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let refused = String::from_utf8_lossy(&out.stdout);
    let at = refused
        .split("already skipped at ")
        .nth(1)
        .unwrap_or_else(|| panic!("{refused}"))
        .trim();
    assert!(
        at.starts_with("20") && at.ends_with('Z') && at.contains('T'),
        "{refused}"
    );

    // load into a topic with fewer partitions: no advice to create the topic that exists.
    let out = cli.run_stdin(&["load", "orders"], "{\"partition\":5,\"value\":\"v\"}\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = stderr(&out);
    assert!(
        e.contains("orders has 1 partition:") && e.contains("--by-key"),
        "{e}"
    );
    assert!(!e.contains("topics create"), "{e}");
}
