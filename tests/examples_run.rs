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
