//! kafkabox's pytest plugin (clients/python, installed into the test venv by scripts/test.sh
//! as a user installs it) and its suite (tests/pytest): fixtures that start the real binary
//! with `serve --ephemeral`, kafka-python and confluent-kafka against it, faults (idempotent
//! producers retrying through NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT and lost
//! acknowledgements: no duplicates, no loss), stalls, refused connections, and the emulated
//! Kafka releases as each client's ApiVersions handling sees them.

mod common;

#[test]
fn pytest_suite_with_the_plugin() {
    let _watchdog = common::watchdog("pytest_suite_with_the_plugin");
    let python = common::python();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
        ])
        .arg(format!("{root}/tests/pytest"))
        .env("KAFKABOX_BIN", env!("CARGO_BIN_EXE_kafkabox"))
        // The Python clients use their own librdkafka, not the one cargo builds.
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(root)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed (is the plugin installed? scripts/test.sh runs pip install ./clients/python):\n{stdout}\n{stderr}"
    );
    // Every test ran; none was skipped.
    assert!(stdout.contains("14 passed"), "{stdout}");
    assert!(!stdout.contains("skipped"), "{stdout}");
}
