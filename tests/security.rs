//! SASL, TLS and ACLs through the real `kafkabox` binary with real clients: kcat and
//! confluent-kafka over SASL_SSL (SCRAM-SHA-512 and PLAIN), kafka-python over SASL_PLAINTEXT,
//! wrong passwords and unknown users refused with SASL_AUTHENTICATION_FAILED, ACLs created,
//! described and deleted by an admin client and enforced (TOPIC_AUTHORIZATION_FAILED), users
//! changed online (AlterUserScramCredentials) and offline (`kafkabox users`), mutual TLS with
//! the certificate's subject as the principal. Certificates are made per test with openssl.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::BrokerProcess;
use serde_json::Value;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA, a server certificate for localhost / 127.0.0.1 (key and chain in one PEM file, Kafka's
/// PEM keystore form), and client certificates signed by the CA for the given common names.
struct Certs {
    ca: PathBuf,
    server: PathBuf,
    dir: PathBuf,
}

impl Certs {
    fn new(dir: &Path, clients: &[&str]) -> Certs {
        let p = |n: &str| dir.join(n);
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kafkabox-test-ca",
        ]);
        std::fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        // X.509 v3 client certificates (webpki refuses v1 ones, which openssl makes without
        // extensions).
        std::fs::write(
            p("client.cnf"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let mut names = vec!["server"];
        names.extend_from_slice(clients);
        for name in names {
            let cn = if name == "server" { "localhost" } else { name };
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/O=kafkabox-test/CN={cn}"),
            ]);
            let mut args = vec![
                "x509",
                "-req",
                "-in",
                &*format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &*format!("{name}.crt"),
                "-days",
                "2",
            ]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
            let ext = if name == "server" {
                "ext.cnf"
            } else {
                "client.cnf"
            };
            args.extend(["-extfile".to_string(), ext.to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            openssl(&args);
            let key = std::fs::read_to_string(p(&format!("{name}.key"))).unwrap();
            let crt = std::fs::read_to_string(p(&format!("{name}.crt"))).unwrap();
            std::fs::write(p(&format!("{name}.pem")), format!("{key}{crt}")).unwrap();
        }
        Certs {
            ca: p("ca.pem"),
            server: p("server.pem"),
            dir: dir.to_path_buf(),
        }
    }

    fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }
}

/// `kafkabox users add NAME --password-stdin --create` with each mechanism, through the real
/// binary (`--create`: the first user of a test makes its data dir).
fn add_user(data: &Path, name: &str, password: &str, mechanisms: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
    cmd.args([
        "users",
        "add",
        name,
        "--password-stdin",
        "--create",
        "--data-dir",
    ])
    .arg(data);
    for m in mechanisms {
        cmd.args(["--mechanism", m]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "users add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("user {name} set for")));
}

/// Runs tests/python/security.py; the JSON object it printed.
#[allow(clippy::too_many_arguments)]
fn py(
    client: &str,
    action: &str,
    bootstrap: &str,
    protocol: &str,
    mechanism: &str,
    user: &str,
    password: &str,
    ca: &Path,
    args: &[&str],
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/security.py");
    let out = Command::new(common::python())
        .env_remove("LD_LIBRARY_PATH")
        .arg(script)
        .args([
            client, action, bootstrap, protocol, mechanism, user, password,
        ])
        .arg(ca)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "security.py {client} {action} as {user} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("security.py {client} {action}: not JSON ({e}): {stdout}"))
}

fn kcat(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    // Without cargo's LD_LIBRARY_PATH: it can point kcat at the librdkafka rdkafka-sys built,
    // which has no TLS.
    let mut child = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (installed by scripts/test.sh)");
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn metrics(b: &BrokerProcess) -> String {
    common::http(b.http_addr(), "GET", "/metrics", None, None).body
}

fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn sasl_ssl_with_kcat_and_confluent_kafka() {
    let _watchdog = common::watchdog("sasl_ssl_with_kcat_and_confluent_kafka");
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), &[]);
    let data = dir.path().join("data");
    add_user(
        &data,
        "alice",
        "alice-secret",
        &["SCRAM-SHA-512", "SCRAM-SHA-256"],
    );
    add_user(&data, "bob", "bob-secret", &["PLAIN"]);
    // Only `listeners`: the box advertises that listener.
    let b = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            "listeners=SASL_SSL://127.0.0.1:0",
            "--set",
            &format!("ssl.keystore.location={}", certs.server.display()),
        ],
    );
    let log = b.log_text();
    assert!(
        log.contains("listener=SASL_SSL protocol=\"SASL_SSL\""),
        "{log}"
    );
    assert!(!log.contains("without authentication"), "{log}");
    let port = b.addr.port();
    let bootstrap = format!("localhost:{port}");
    let ca = certs.ca.to_str().unwrap();
    let tls = ["-X", "security.protocol=SASL_SSL", "-X"];
    let ca_arg = format!("ssl.ca.location={ca}");

    // kcat (librdkafka) with SCRAM-SHA-512 and PLAIN: produce, read back, and Metadata names
    // the SASL_SSL listener.
    for (mech, user, pw, topic) in [
        ("SCRAM-SHA-512", "alice", "alice-secret", "kcat-scram"),
        ("PLAIN", "bob", "bob-secret", "kcat-plain"),
    ] {
        let auth = [
            "-X".to_string(),
            format!("sasl.mechanisms={mech}"),
            "-X".to_string(),
            format!("sasl.username={user}"),
            "-X".to_string(),
            format!("sasl.password={pw}"),
        ];
        let mut base: Vec<String> = vec!["-b".into(), bootstrap.clone()];
        base.extend(tls.iter().map(|s| s.to_string()));
        base.push(ca_arg.clone());
        base.extend(auth.iter().cloned());
        let args = |extra: &[&str]| -> Vec<String> {
            let mut a = base.clone();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let produce = args(&["-P", "-t", topic]);
        let produce: Vec<&str> = produce.iter().map(String::as_str).collect();
        let (ok, _, err) = kcat(&produce, Some("one\ntwo\nthree\n"));
        assert!(ok, "kcat produce with {mech}: {err}");
        let consume = args(&["-C", "-t", topic, "-o", "beginning", "-e", "-q"]);
        let consume: Vec<&str> = consume.iter().map(String::as_str).collect();
        let (ok, out, err) = kcat(&consume, None);
        assert!(ok, "kcat consume with {mech}: {err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["one", "two", "three"],
            "{mech}"
        );
        let list = args(&["-L", "-t", topic]);
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let (ok, out, err) = kcat(&list, None);
        assert!(ok, "kcat -L with {mech}: {err}");
        assert!(out.contains(&format!("at 127.0.0.1:{port}")), "{out}");
    }

    // The client commands of the binary speak SASL_SSL through -X.
    let out = run(Command::new(env!("CARGO_BIN_EXE_kafkabox")).args([
        "topics",
        "list",
        "-b",
        &bootstrap,
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        "sasl.username=alice",
        "-X",
        "sasl.password=alice-secret",
        "-X",
        &ca_arg,
    ]));
    assert!(
        out.contains("kcat-scram") && out.contains("kcat-plain"),
        "{out}"
    );

    // confluent-kafka with SCRAM-SHA-512 and PLAIN: an idempotent producer and a group consumer.
    for (mech, user, pw, topic) in [
        ("SCRAM-SHA-512", "alice", "alice-secret", "ck-scram"),
        ("PLAIN", "bob", "bob-secret", "ck-plain"),
        ("PLAIN", "alice", "alice-secret", "ck-plain-scram-user"),
    ] {
        let r = py(
            "ck",
            "roundtrip",
            &bootstrap,
            "SASL_SSL",
            mech,
            user,
            pw,
            &certs.ca,
            &[topic, "5"],
        );
        assert_eq!(
            r["offsets"],
            serde_json::json!([0, 1, 2, 3, 4]),
            "{mech} {user}: {r}"
        );
        assert_eq!(
            r["read"].as_array().map(Vec::len),
            Some(5),
            "{mech} {user}: {r}"
        );
        assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    }

    // Refused: a wrong password, an unknown user, a mechanism the user has no credential for.
    for (mech, user, pw) in [
        ("SCRAM-SHA-512", "alice", "wrong"),
        ("PLAIN", "bob", "wrong"),
        ("SCRAM-SHA-512", "mallory", "whatever"),
        ("PLAIN", "mallory", "whatever"),
        ("SCRAM-SHA-256", "bob", "bob-secret"),
    ] {
        let r = py(
            "ck",
            "refused",
            &bootstrap,
            "SASL_SSL",
            mech,
            user,
            pw,
            &certs.ca,
            &[],
        );
        let first = &r["errors"][0];
        assert_eq!(first["name"], "_AUTHENTICATION", "{mech} {user}: {r}");
        assert!(
            first["str"]
                .as_str()
                .unwrap_or_default()
                .contains("Authentication failed during authentication due to invalid credentials with SASL mechanism"),
            "{mech} {user}: {r}"
        );
        assert_eq!(r["listed"], false, "{r}");
    }
    // ... and the wire said SASL_AUTHENTICATION_FAILED (error 58), once per refused attempt.
    let m = metrics(&b);
    assert!(
        metric_value(&m, "kafkabox_kafka_requests_total{api=\"SaslAuthenticate\",error=\"SASL_AUTHENTICATION_FAILED\"}") >= 5.0,
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "kafkabox_sasl_authentications_total{mechanism=\"PLAIN\",result=\"failure\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "kafkabox_sasl_authentications_total{mechanism=\"SCRAM-SHA-512\",result=\"success\"}"
        ) >= 1.0,
        "{m}"
    );

    // `kafkabox bench` measures a SASL_SSL listener with -X settings.
    let scratch = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_kafkabox")).args([
        "bench",
        "--quiet",
        "--dir",
        scratch.path().to_str().unwrap(),
        "--bootstrap",
        &bootstrap,
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        "sasl.username=alice",
        "-X",
        "sasl.password=alice-secret",
        "-X",
        &ca_arg,
        "--sizes",
        "100",
        "--acks",
        "all",
        "--bytes-per-run",
        "20000",
        "--latency-messages",
        "20",
        "--handler-events",
        "0",
        "--consume-bytes",
        "20480",
        "--rebalance-members",
        "2",
        "--txn-records",
        "0",
    ]));
    assert!(out.contains("produce   100 B acks=all"), "{out}");

    // A client without TLS gets nothing from a TLS listener (the handshake fails, counted).
    let (ok, _, _) = kcat(&["-b", &format!("127.0.0.1:{port}"), "-L", "-m", "3"], None);
    assert!(
        !ok,
        "a PLAINTEXT client must not get metadata from a SASL_SSL listener"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(metric_value(&metrics(&b), "kafkabox_tls_handshake_failures_total") >= 1.0);
}

#[test]
fn sasl_plaintext_kafka_python_acls_and_online_users() {
    let _watchdog = common::watchdog("sasl_plaintext_kafka_python_acls_and_online_users");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let none = Path::new("");
    add_user(&data, "admin", "admin-secret", &["SCRAM-SHA-512"]);
    add_user(
        &data,
        "alice",
        "alice-secret",
        &["SCRAM-SHA-256", "SCRAM-SHA-512"],
    );
    // `kafkabox users list` and `remove` through the binary.
    {
        // --iterations through the binary.
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
            .args([
                "users",
                "add",
                "temp",
                "--mechanism",
                "PLAIN",
                "--iterations",
                "4096",
            ])
            .args(["--password-stdin", "--data-dir"])
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "temp-secret").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let listed = run(Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["users", "list", "--data-dir"])
        .arg(&data));
    assert!(
        listed.contains("alice\tSCRAM-SHA-256 (iterations 8192), SCRAM-SHA-512 (iterations 8192)"),
        "{listed}"
    );
    assert!(
        listed.contains("temp\tPLAIN (iterations 4096)") && listed.contains("3 users"),
        "{listed}"
    );
    assert!(!listed.contains("secret"), "{listed}");
    run(Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["users", "remove", "temp", "--data-dir"])
        .arg(&data));
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["users", "add", "x", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    // A --data-dir that holds no data dir (a typo) is refused, and nothing is made there.
    let typo = dir.path().join("dta");
    for args in [
        &["list"][..],
        &["remove", "alice"][..],
        &["add", "x", "--password-stdin"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
            .arg("users")
            .args(args)
            .arg("--data-dir")
            .arg(&typo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = writeln!(child.stdin.take().unwrap(), "x-secret");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "users {args:?}: {err}");
        assert!(
            err.contains("is not a kafkabox data directory") && err.contains("--create"),
            "users {args:?}: {err}"
        );
        assert!(!typo.exists(), "users {args:?} made {}", typo.display());
    }

    let extra = [
        "--set",
        "listeners=SASL_PLAINTEXT://127.0.0.1:0",
        "--set",
        "authorizer.class.name=kafkabox",
        "--set",
        "super.users=User:admin",
    ];
    let mut b = BrokerProcess::spawn(&data, &extra);
    // While the box runs, its data dir is not changed offline.
    let out = Command::new(env!("CARGO_BIN_EXE_kafkabox"))
        .args(["users", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is kafkabox running on it?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bs = b.addr.to_string();
    let p = "SASL_PLAINTEXT";
    let call = |client: &str, action: &str, mech: &str, user: &str, pw: &str, args: &[&str]| {
        py(client, action, &bs, p, mech, user, pw, none, args)
    };

    // kafka-python: wrong password and unknown user are SASL_AUTHENTICATION_FAILED (error 58).
    for (user, pw) in [("alice", "wrong"), ("mallory", "whatever")] {
        let r = call("kp", "refused", "SCRAM-SHA-256", user, pw, &[]);
        let failures = r["auth_failures"].as_array().cloned().unwrap_or_default();
        assert!(
            failures.iter().any(|l| l
                .as_str()
                .unwrap_or_default()
                .contains("[Error 58] SaslAuthenticationFailedError")),
            "{user}: {r}"
        );
    }

    // The admin (a super user) creates topics; alice, without ACLs, is refused.
    for t in ["orders", "payments"] {
        call(
            "ck",
            "topic-create",
            "SCRAM-SHA-512",
            "admin",
            "admin-secret",
            &[t],
        );
    }
    let r = call(
        "kp",
        "denied-produce",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
        &["orders"],
    );
    assert_eq!(r["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");

    // CreateAcls / DescribeAcls from an admin client.
    let r = call(
        "ck",
        "acls-create",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &["User:alice", "orders"],
    );
    assert_eq!(r["created"], 3);
    let r = call(
        "ck",
        "acls-describe",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &[],
    );
    assert_eq!(
        r["acls"],
        serde_json::json!([
            "GROUP:*:LITERAL:User:alice:*:READ:ALLOW",
            "TOPIC:orders:LITERAL:User:alice:*:READ:ALLOW",
            "TOPIC:orders:LITERAL:User:alice:*:WRITE:ALLOW"
        ]),
        "{r}"
    );
    // Now alice writes and reads orders (kafka-python, SCRAM-SHA-256) ...
    let r = call(
        "kp",
        "roundtrip",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
        &["orders", "3"],
    );
    assert_eq!(r["offsets"], serde_json::json!([0, 1, 2]), "{r}");
    assert_eq!(
        r["read"],
        serde_json::json!(["kp-0", "kp-1", "kp-2"]),
        "{r}"
    );
    // ... but not payments.
    let r = call(
        "kp",
        "denied-produce",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
        &["payments"],
    );
    assert_eq!(r["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    let r = call(
        "ck",
        "denied-consume",
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
        &["payments"],
    );
    assert_eq!(r["error"]["name"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    // alice cannot change ACLs.
    let r = Command::new(common::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/security.py"))
        .args([
            "ck",
            "acls-create",
            &bs,
            p,
            "SCRAM-SHA-512",
            "alice",
            "alice-secret",
            "",
            "User:alice",
            "payments",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("CLUSTER_AUTHORIZATION_FAILED"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // Users online: AlterUserScramCredentials / DescribeUserScramCredentials.
    call(
        "ck",
        "scram-upsert",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &["carol", "carol-secret"],
    );
    let r = call(
        "ck",
        "scram-describe",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &[],
    );
    assert_eq!(
        r["users"]["carol"],
        serde_json::json!(["SCRAM_SHA_512:8192"]),
        "{r}"
    );
    assert_eq!(
        r["users"]["alice"],
        serde_json::json!(["SCRAM_SHA_256:8192", "SCRAM_SHA_512:8192"]),
        "{r}"
    );
    // carol authenticates (then her write is refused: she has no ACL).
    let r = call(
        "kp",
        "denied-produce",
        "SCRAM-SHA-512",
        "carol",
        "carol-secret",
        &["orders"],
    );
    assert_eq!(r["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");

    // Users and ACLs survive a restart.
    assert!(b.terminate().success());
    let b = BrokerProcess::spawn(&data, &extra);
    let bs = b.addr.to_string();
    let call = |client: &str, action: &str, mech: &str, user: &str, pw: &str, args: &[&str]| {
        py(client, action, &bs, p, mech, user, pw, none, args)
    };
    let r = call(
        "kp",
        "roundtrip",
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
        &["orders", "1"],
    );
    assert_eq!(r["offsets"], serde_json::json!([3]), "{r}");
    let r = call(
        "kp",
        "denied-produce",
        "SCRAM-SHA-512",
        "carol",
        "carol-secret",
        &["orders"],
    );
    assert_eq!(r["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");

    // DeleteAcls, and a deleted credential no longer authenticates.
    let r = call(
        "ck",
        "acls-delete",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &["User:alice"],
    );
    assert_eq!(r["deleted"], 3, "{r}");
    let r = call(
        "kp",
        "denied-produce",
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
        &["orders"],
    );
    assert_eq!(r["error"], "TOPIC_AUTHORIZATION_FAILED", "{r}");
    call(
        "ck",
        "scram-delete",
        "SCRAM-SHA-512",
        "admin",
        "admin-secret",
        &["carol"],
    );
    let r = call(
        "kp",
        "refused",
        "SCRAM-SHA-512",
        "carol",
        "carol-secret",
        &[],
    );
    assert!(r["auth_failures"].to_string().contains("[Error 58]"), "{r}");
    let m = metrics(&b);
    assert!(
        metric_value(
            &m,
            "kafkabox_authorization_denied_total{resource=\"TOPIC\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn mutual_tls_certificate_subject_is_the_principal() {
    let _watchdog = common::watchdog("mutual_tls_certificate_subject_is_the_principal");
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), &["writer", "reader"]);
    let data = dir.path().join("data");
    let b = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            "listeners=SSL://127.0.0.1:0",
            "--set",
            &format!("ssl.keystore.location={}", certs.server.display()),
            "--set",
            &format!("ssl.truststore.location={}", certs.ca.display()),
            "--set",
            "ssl.client.auth=required",
            "--set",
            "authorizer.class.name=kafkabox",
            "--set",
            "super.users=User:CN=writer,O=kafkabox-test",
        ],
    );
    let bootstrap = format!("localhost:{}", b.addr.port());
    let with_cert = |name: &str| -> Vec<String> {
        let (crt, key) = certs.client(name);
        vec![
            "-b".into(),
            bootstrap.clone(),
            "-X".into(),
            "security.protocol=SSL".into(),
            "-X".into(),
            format!("ssl.ca.location={}", certs.ca.display()),
            "-X".into(),
            format!("ssl.certificate.location={}", crt.display()),
            "-X".into(),
            format!("ssl.key.location={}", key.display()),
        ]
    };
    // writer (a super user by its certificate's subject) produces and reads back.
    let mut a = with_cert("writer");
    a.extend(["-P", "-t", "mtls"].map(String::from));
    let (ok, _, err) = kcat(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("a\nb\n"),
    );
    assert!(ok, "writer produce: {err}");
    let mut a = with_cert("writer");
    a.extend(["-C", "-t", "mtls", "-o", "beginning", "-e", "-q"].map(String::from));
    let (ok, out, err) = kcat(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(ok, "writer consume: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["a", "b"]);
    // reader (another certificate of the same CA, no ACL) is authenticated but not authorized.
    let mut a = with_cert("reader");
    a.extend(["-C", "-t", "mtls", "-o", "beginning", "-e", "-q"].map(String::from));
    let (ok, _, err) = kcat(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(
        !ok && err.contains("Topic authorization failed"),
        "reader: {err}"
    );
    // No certificate: the TLS handshake is refused.
    let (ok, _, _) = kcat(
        &[
            "-b",
            &bootstrap,
            "-X",
            "security.protocol=SSL",
            "-X",
            &format!("ssl.ca.location={}", certs.ca.display()),
            "-L",
            "-m",
            "3",
        ],
        None,
    );
    assert!(!ok, "a client without a certificate must be refused");

    // ssl.client.auth=requested: a certificate is asked for but not required.
    let data2 = dir.path().join("data2");
    let b2 = BrokerProcess::spawn(
        &data2,
        &[
            "--set",
            "listeners=SSL://127.0.0.1:0",
            "--set",
            &format!("ssl.keystore.location={}", certs.server.display()),
            "--set",
            &format!("ssl.truststore.location={}", certs.ca.display()),
            "--set",
            "ssl.client.auth=requested",
        ],
    );
    let bootstrap2 = format!("localhost:{}", b2.addr.port());
    let ca_arg = format!("ssl.ca.location={}", certs.ca.display());
    let (ok, _, err) = kcat(
        &[
            "-P",
            "-b",
            &bootstrap2,
            "-X",
            "security.protocol=SSL",
            "-X",
            &ca_arg,
            "-t",
            "req",
        ],
        Some("anon\n"),
    );
    assert!(ok, "no certificate, requested only: {err}");
    let (crt, key) = certs.client("writer");
    let (ok, out, err) = kcat(
        &[
            "-C",
            "-b",
            &bootstrap2,
            "-X",
            "security.protocol=SSL",
            "-X",
            &ca_arg,
            "-X",
            &format!("ssl.certificate.location={}", crt.display()),
            "-X",
            &format!("ssl.key.location={}", key.display()),
            "-t",
            "req",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        None,
    );
    assert!(
        ok && out.trim() == "anon",
        "with a certificate: {out} {err}"
    );
}

#[test]
fn bad_security_settings_are_clear_errors() {
    let _watchdog = common::watchdog("bad_security_settings_are_clear_errors");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (set, expected) in [
        (
            "listeners=SASL_SSL://127.0.0.1:0",
            "needs ssl.keystore.location",
        ),
        ("listeners=FOO://127.0.0.1:0", "not a security protocol"),
        (
            "sasl.enabled.mechanisms=GSSAPI",
            "does not implement SASL mechanism 'GSSAPI'",
        ),
        (
            "super.users=admin",
            "is not a principal of the form User:NAME",
        ),
        ("ssl.keystore.type=JKS", "kafkabox reads PEM files only"),
        ("ssl.keystore.location=/nonexistent.pem", ""),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafkabox"));
        cmd.args(["serve", "--data-dir"]).arg(&data).args([
            "--http-listen",
            "",
            "--listen",
            "127.0.0.1:0",
            "--set",
            set,
        ]);
        if set.starts_with("ssl.keystore.location") {
            cmd.args(["--set", "listeners=SSL://127.0.0.1:0"]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains(expected), "{set}: {err}");
        if set.starts_with("ssl.keystore.location") {
            assert!(err.contains("cannot read /nonexistent.pem"), "{err}");
        }
    }
}

#[test]
fn https_http_listener_with_the_kafka_certificate_and_a_token() {
    let _watchdog = common::watchdog("https_http_listener_with_the_kafka_certificate_and_a_token");
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), &[]);
    let data = dir.path().join("data");
    add_user(&data, "alice", "alice-secret", &["SCRAM-SHA-512"]);
    let b = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            "listeners=SASL_SSL://127.0.0.1:0",
            "--set",
            &format!("ssl.keystore.location={}", certs.server.display()),
            "--set",
            "ssl.keystore.type=PEM",
            "--set",
            "http.listen=https://127.0.0.1:0",
            "--set",
            "http.token=s3cret-token",
        ],
    );
    let http = b.http_addr();
    assert!(b
        .log_text()
        .contains(&format!("dashboard at https://{http}/")));
    let curl = |path: &str, token: Option<&str>| -> (String, String) {
        let mut cmd = Command::new("curl");
        cmd.env_remove("LD_LIBRARY_PATH")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&certs.ca)
            .arg(format!("https://localhost:{}{path}", http.port()));
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = run(&mut cmd);
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    assert_eq!(curl("/health", None).0, "200");
    assert_eq!(curl("/api/topics", None).0, "401");
    let (code, body) = curl("/api/topics", Some("s3cret-token"));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("customer-events"), "{body}");
    // Plain HTTP to the TLS port gets no answer.
    let out = Command::new("curl")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-sS", "-m", "5"])
        .arg(format!("http://127.0.0.1:{}/health", http.port()))
        .output()
        .unwrap();
    assert!(!out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn named_listeners_and_allow_everyone_if_no_acl_found() {
    let _watchdog = common::watchdog("named_listeners_and_allow_everyone_if_no_acl_found");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A listener name mapped to its protocol; ACLs on, but a resource no ACL names is open.
    let b = BrokerProcess::spawn(
        &data,
        &[
            "--set",
            "listeners=INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
            "--set",
            "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
            "--set",
            "advertised.listeners=EXTERNAL://advertised.example:1234",
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set",
            "allow.everyone.if.no.acl.found=true",
            "--set",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    );
    assert!(b
        .log_text()
        .contains("listener=INTERNAL protocol=\"PLAINTEXT\""));
    let bs = b.addr.to_string();
    let (ok, _, err) = kcat(&["-P", "-b", &bs, "-t", "open"], Some("x\n"));
    assert!(ok, "anonymous produce to a topic no ACL names: {err}");
    let (ok, out, err) = kcat(
        &["-C", "-b", &bs, "-t", "open", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok && out.trim() == "x", "{out} {err}");
    let (ok, out, _) = kcat(&["-L", "-b", &bs, "-t", "open"], None);
    assert!(ok && out.contains(&format!("at {bs}")), "{out}");
    // Each listener advertises its own address: EXTERNAL the one configured.
    let log = b.log_text();
    let external = log
        .lines()
        .find(|l| l.contains("Kafka listener ready") && l.contains("listener=EXTERNAL"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .expect("EXTERNAL listener in the log")
        .to_string();
    let (ok, out, _) = kcat(&["-L", "-b", &external, "-t", "open"], None);
    assert!(ok && out.contains("at advertised.example:1234"), "{out}");
}
