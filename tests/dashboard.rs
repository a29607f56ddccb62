//! The dashboard in a real browser: Debian's chromium driven by playwright-core (tests/js,
//! pinned, installed by scripts/test.sh) against the real `kafkabox serve` with a token. Events
//! come from kafkajs; the page must show the source and its counts, the rejected event, the
//! customer's profile and timeline, and replay a dead letter. The screenshot is kept at
//! target/tmp/dashboard.png.

mod common;

use std::process::Command;

use common::{http, BrokerProcess};

#[test]
fn dashboard_shows_sources_dead_letters_and_profiles_and_replays() {
    let _watchdog =
        common::watchdog("dashboard_shows_sources_dead_letters_and_profiles_and_replays");
    let (js, chromium) = common::browser();
    let dir = tempfile::tempdir().unwrap();
    let common::FlakyDownstream {
        flag,
        out,
        command: exec,
    } = common::FlakyDownstream::new(dir.path());
    let token = "dashboard-token";
    // The webhook's target does not exist: that stage is stuck (retrying), and the page must
    // say so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let data = dir.path().join("data");
    let settings = [
        "--set".to_string(),
        format!("http.token={token}"),
        "--set".into(),
        "customer.events.handlers=profile,exec,webhook".into(),
        "--set".into(),
        format!("exec.command={exec}"),
        "--set".into(),
        format!("webhook.url=http://{closed}/hook"),
        "--set".into(),
        "stage.stall.timeout.ms=1000".into(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut broker = BrokerProcess::spawn(&data, &settings);
    let addr = broker.http_addr();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let run = Command::new("node")
        .current_dir(&js)
        .arg("dashboard.js")
        .arg(broker.addr.to_string())
        .arg(format!("http://{addr}"))
        .arg(token)
        .arg(&flag)
        .arg(&shot)
        .env("KB_CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "dashboard.js failed: {}\n{stdout}\n{}\nbroker log:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr),
        broker.log_text()
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("dashboard.js result");
    let offset = result["replayed_offset"].as_i64().expect("replayed offset");
    // The replay really happened: recorded, and the handler got the event once.
    let a = http(addr, "GET", "/api/dlq?status=replayed", Some(token), None);
    let replayed = a.json()["dead_letters"].as_array().unwrap().clone();
    assert_eq!(replayed.len(), 1, "{}", a.body);
    assert_eq!(replayed[0]["offset"], offset);
    let handled = std::fs::read_to_string(&out).unwrap();
    assert_eq!(handled.lines().count(), 1, "{handled}");
    assert!(handled.contains("\"customer_id\""), "{handled}");
    for shot in [
        shot.clone(),
        shot.with_file_name("dashboard-1000.png"),
        shot.with_file_name("dashboard-1600.png"),
    ] {
        let png = std::fs::read(&shot).expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "screenshot {}",
            shot.display()
        );
        eprintln!("dashboard screenshot: {}", shot.display());
    }

    // The chart's history is stored: after a restart the events per minute are still there.
    let before = http(addr, "GET", "/api/sources", Some(token), None).json();
    broker.terminate();
    let broker = BrokerProcess::spawn(&data, &settings);
    let after = http(broker.http_addr(), "GET", "/api/sources", Some(token), None).json();
    let received = |v: &serde_json::Value| -> u64 {
        v["pos"]["per_minute"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["received"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(received(&before), 4, "{before}");
    assert_eq!(
        received(&after),
        4,
        "the per-minute history after a restart: {after}"
    );
}
