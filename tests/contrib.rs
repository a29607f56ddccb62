//! contrib/: the systemd unit passes `systemd-analyze verify` and rates 3.0 or better in
//! `systemd-analyze security` (scripts/test.sh installs systemd's tools where they are
//! missing), and the example config file starts the real `kafkabox serve` with its settings in
//! effect.

mod common;

use std::process::Command;

/// The unit in a temporary file, its ExecStart pointed at the binary under test (`verify`
/// checks that the program exists).
fn unit_with_this_binary(unit: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kafkabox.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/kafkabox", env!("CARGO_BIN_EXE_kafkabox")),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn systemd_unit_verifies() {
    let _watchdog = common::watchdog("systemd_unit_verifies");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("contrib/kafkabox.service")).unwrap();
    assert!(unit
        .contains("ExecStart=/usr/local/bin/kafkabox serve --config /etc/kafkabox/kafkabox.toml"));
    let (_dir, path) = unit_with_this_binary(&unit);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("kafkabox.service"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn systemd_unit_is_sandboxed_and_leaves_settings_to_the_config_file() {
    let _watchdog =
        common::watchdog("systemd_unit_is_sandboxed_and_leaves_settings_to_the_config_file");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("contrib/kafkabox.service")).unwrap();
    // KAFKABOX_* variables beat the TOML file: the unit sets none, so data.dir there counts.
    assert!(
        !unit
            .lines()
            .any(|l| l.trim_start().starts_with("Environment=KAFKABOX_")),
        "{unit}"
    );
    let toml = std::fs::read_to_string(root.join("contrib/kafkabox.toml")).unwrap();
    assert!(toml.contains("data.dir = \"/var/lib/kafkabox\""), "{toml}");
    assert!(unit.contains("RestartPreventExitStatus=2"));
    let (_dir, path) = unit_with_this_binary(&unit);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for kafkabox.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        score <= 3.0,
        "exposure level {score} (3.0 or better wanted):\n{text}"
    );
}

#[test]
fn example_config_starts_serve() {
    let _watchdog = common::watchdog("example_config_starts_serve");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut broker = common::BrokerProcess::spawn(
        &dir.path().join("data"),
        &[
            "--config",
            root.join("contrib/kafkabox.toml").to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ],
    );
    let topics = common::http(
        broker.http_addr(),
        "GET",
        "/api/topics/customer-events",
        None,
        None,
    );
    assert_eq!(topics.status, 200, "{}", topics.body);
    assert_eq!(
        topics.json()["partition_count"],
        3,
        "num.partitions = 3 from the file"
    );
    assert_eq!(broker.terminate().code(), Some(0));
}
