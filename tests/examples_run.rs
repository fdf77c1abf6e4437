//! The examples run to completion and say what they promise. Cargo builds
//! examples before integration tests, next to the test binaries.
#![allow(clippy::expect_used)]

mod support;

use std::process::Command;

use support::example;

fn run(name: &str) -> String {
    let out = Command::new(example(name)).output().expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hello_restarts_its_supervised_counter() {
    let out = run("hello");
    assert!(out.contains("counter says 3"), "{out}");
    assert!(out.contains("after a panic and a restart it says 2"), "{out}");
    assert!(out.contains("all actors stopped"), "{out}");
}

#[test]
fn supervision_demo_completes_every_step() {
    let out = run("supervision_demo");
    for step in ["1. ", "2. ", "3. ", "4. ", "5. ", "6. "] {
        assert!(out.lines().any(|l| l.starts_with(step)), "step {step} missing:\n{out}");
    }
    assert!(out.contains("all steps behaved as promised"), "{out}");
}

/// The flagship demo end to end: three OS processes over real QUIC on
/// loopback, one killed and restarted.
#[test]
fn cluster_demo_completes_every_step() {
    let out = run("cluster_demo");
    for step in ["1. ", "2. ", "3. ", "4. ", "5. "] {
        assert!(out.lines().any(|l| l.starts_with(step)), "step {step} missing:\n{out}");
    }
    assert!(out.contains("2400 / 2400 (none lost)"), "{out}");
    assert!(out.contains("all steps behaved as promised"), "{out}");
}

/// Runs `name` with `args` and `RUST_LOG`, stderr not a terminal; gives
/// (stdout, stderr).
fn run_logged(name: &str, args: &[&str], rust_log: &str) -> (String, String) {
    let out = Command::new(example(name)).args(args).env("RUST_LOG", rust_log).output().expect("run example");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{name} failed ({}):\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

/// A node's logs for an operator: `--log-format json` writes one JSON
/// object per line with a timestamp, level and message; the text format
/// has no colour codes when stderr is not a terminal; `RUST_LOG` decides
/// what is logged.
#[test]
fn a_nodes_logs_are_json_or_plain_text_and_follow_rust_log() {
    let node = ["--node", "solo", "--jobs", "20", "--workers", "2"];
    let (_, json) = run_logged("work_queue", &[&node[..], &["--log-format", "json"]].concat(), "info");
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at info");
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
        for key in ["\"timestamp\":", "\"level\":", "\"fields\":"] {
            assert!(line.contains(key), "{key} missing: {line}");
        }
    }
    let (_, text) = run_logged("work_queue", &node, "info");
    assert!(!text.is_empty(), "no log lines at info");
    assert!(!text.contains('\u{1b}'), "colour codes in logs written to a pipe:\n{text}");
    let (_, quiet) = run_logged("work_queue", &node, "off");
    assert!(quiet.trim().is_empty(), "RUST_LOG=off still logged:\n{quiet}");
}

/// `hello` follows `RUST_LOG` too (it logged at its own fixed level before).
#[test]
fn hello_follows_rust_log() {
    let (_, quiet) = run_logged("hello", &[], "off");
    assert!(quiet.trim().is_empty(), "RUST_LOG=off still logged:\n{quiet}");
    let (_, loud) = run_logged("hello", &[], "info");
    assert!(!loud.trim().is_empty(), "nothing logged at info");
}

/// `dev_certs` keeps its CA: certificates issued in a later run are
/// trusted by nodes holding the first run's, and every private key is
/// readable by its owner only.
#[tokio::test]
async fn dev_certs_issues_later_certificates_from_the_kept_ca_with_private_keys() {
    use footlight::Node;
    use footlight::remote::transport::quic::Quic;
    use footlight::remote::transport::tls::Tls;

    let dir = std::env::temp_dir().join(format!("footlight-dev-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().expect("utf-8 path");
    for nodes in [&["a1"][..], &["a2"][..]] {
        let status = Command::new(example("dev_certs")).args(["--out", out]).args(nodes).status().expect("run");
        assert!(status.success());
    }
    #[cfg(unix)]
    for file in ["ca.key", "a1.key", "a2.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(file)).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is readable by others: {mode:o}");
    }
    let tls = |id: &str| {
        Tls::from_pem_files(dir.join(format!("{id}.crt")), dir.join(format!("{id}.key")), dir.join("ca.crt"))
            .expect("certificate loads")
    };
    let a1 = Node::builder("a1").transport(Quic::new(tls("a1"))).listen("127.0.0.1:0").start().await.expect("a1");
    let a2 = Node::builder("a2").transport(Quic::new(tls("a2"))).listen("127.0.0.1:0").start().await.expect("a2");
    // Mutual TLS: each side checks the other's certificate against ca.crt.
    tokio::time::timeout(std::time::Duration::from_secs(10), a2.dial(a1.addr()))
        .await
        .expect("no hang")
        .expect("a node issued later is trusted");
    a1.shutdown().await;
    a2.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One event per happening: a line names its actor once, not once per
/// supervisor above it and again in the event's own fields.
#[test]
fn a_log_line_names_its_actor_once() {
    // At warn the actor is named too: its span is on whatever the filter.
    let (_, warn) = run_logged("supervision_demo", &[], "warn");
    let panic = warn.lines().find(|l| l.contains("handler panicked")).expect("a panic logged at warn");
    assert!(panic.contains("actor=parser#"), "the panicking actor is named at warn: {panic}");
    let (_, logs) = run_logged("supervision_demo", &[], "info");
    let panics: Vec<&str> = logs.lines().filter(|l| l.contains("handler panicked")).collect();
    assert!(!panics.is_empty(), "the demo's panics are logged:\n{logs}");
    for line in logs.lines() {
        assert!(line.matches("actor=").count() <= 1, "the actor is named more than once: {line}");
        assert!(!line.contains(" id="), "the actor's id is repeated beside its name: {line}");
    }
    for line in panics {
        assert!(line.contains("actor=parser#"), "the panicking actor is named: {line}");
    }
}

/// `traced` prints its spans: `checkout` on node a and `handle` on node b
/// share one trace id.
#[test]
fn traced_puts_both_nodes_spans_in_one_trace() {
    let out = run("traced");
    let trace_of = |name: &str| -> Vec<String> {
        let mut ids = Vec::new();
        let mut lines = out.lines();
        while let Some(line) = lines.next() {
            if line.trim() == format!("Name         : {name}") {
                let id = lines.next().and_then(|l| l.trim().strip_prefix("TraceId      : ")).expect("a trace id");
                ids.push(id.to_owned());
            }
        }
        ids
    };
    let (checkout, handle) = (trace_of("checkout"), trace_of("handle"));
    assert_eq!(checkout.len(), 1, "{out}");
    assert!(handle.contains(&checkout[0]), "the handler on b is in a's trace:\n{out}");
}
