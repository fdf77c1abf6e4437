//! The Compose deployment run for real: `deploy/docker-compose.yml` brings
//! up three `kv` containers (image from `deploy/Dockerfile.runtime` around
//! the kv binary cargo built, on a base image made locally by
//! `scripts/docker-base-image.sh`), and a fourth node runs on the host as a
//! client. The test kills a container, cuts one off with `docker network
//! disconnect`, brings each back, and checks through the operations
//! endpoint's API and the example's own answers that the cluster saw every
//! event and lost no key.
//!
//! Needs a Docker engine, Compose (`docker-compose`) and root (debootstrap):
//! `.ci/run` runs it where there is an engine, with
//! `cargo test --test deploy_compose -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Lines, example};

const WAIT: Duration = Duration::from_secs(90);
const PROJECT: &str = "footlighttest";
const NODES: [&str; 3] = ["kv1", "kv2", "kv3"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args`, failing the test with its output if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn compose(certs: &Path, args: &[&str]) -> String {
    let file = repo().join("deploy/docker-compose.yml");
    let out = Command::new("docker-compose")
        .args(["-p", PROJECT, "-f"])
        .arg(&file)
        .args(args)
        .env("FOOTLIGHT_CERTS", certs)
        .output()
        .expect("docker-compose");
    assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn container(node: &str) -> String {
    format!("footlight-{node}")
}

/// A container's address on the Compose network.
fn ip(node: &str) -> String {
    run("docker", &["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &container(node)])
}

/// GETs `path` from `node`'s operations endpoint: (status, body), or None
/// if it does not answer.
fn get(node: &str, path: &str) -> Option<(u16, String)> {
    let addr = format!("{}:9100", ip(node));
    let mut stream = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

/// The members `node` sees as reachable, sorted.
fn reachable(node: &str) -> Option<Vec<String>> {
    let (status, body) = get(node, "/api/members")?;
    if status != 200 {
        return None;
    }
    let members: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut ids: Vec<String> = members
        .as_array()?
        .iter()
        .filter(|m| m["reachable"] == true)
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Some(ids)
}

/// Waits until `check` holds, polling; fails with `what` after [`WAIT`].
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < WAIT, "never: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn members(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    ids.sort();
    ids
}

/// The host's kv node: commands in, answers out.
struct Client {
    child: Child,
    out: Lines,
}

impl Client {
    fn ask(&mut self, line: &str, answer: &str) -> String {
        self.out.mark();
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write a command");
        self.out
            .find(answer, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{line:?}: no {answer:?} in {:?}", self.out.seen()))
    }

    /// Writes `key` until a write is acknowledged by every owner.
    fn put(&mut self, key: &str, value: &str) {
        let started = Instant::now();
        loop {
            let answer = self.ask(&format!("put {key} {value}"), "");
            if answer.contains("ok (") {
                return;
            }
            assert!(started.elapsed() < WAIT, "put {key}: {answer}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Cleans up whatever a run left, before and after.
fn down(certs: &Path) {
    let _ = Command::new("docker-compose")
        .args(["-p", PROJECT, "-f"])
        .arg(repo().join("deploy/docker-compose.yml"))
        .args(["down", "--remove-orphans", "-t", "2"])
        .env("FOOTLIGHT_CERTS", certs)
        .output();
    for node in NODES {
        let _ = Command::new("docker").args(["rm", "-f", &container(node)]).output();
    }
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        down(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs a Docker engine, docker-compose and root: run by .ci/run"]
fn a_compose_cluster_survives_a_kill_a_disconnect_and_restarts_losing_nothing() {
    let work = std::env::temp_dir().join(format!("footlight-compose-{}", std::process::id()));
    let certs = work.join("certs");
    down(&certs);
    let _cleanup = Cleanup(work.clone());

    // The image: a locally made base, the kv binary cargo built.
    run("bash", &[repo().join("scripts/docker-base-image.sh").to_str().unwrap()]);
    let context = work.join("image");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(example("kv"), context.join("kv")).unwrap();
    let dockerfile = repo().join("deploy/Dockerfile.runtime");
    run(
        "docker",
        &["build", "-q", "-f", dockerfile.to_str().unwrap(), "-t", "footlight-examples:dev", context.to_str().unwrap()],
    );

    // Certificates for the three containers and the host's node, readable
    // by the containers' user (10001).
    let certs_arg = certs.to_str().unwrap();
    let ca = work.join("ca");
    let ca_arg = ca.to_str().unwrap();
    run(example("dev_certs").to_str().unwrap(), &["--ca-dir", ca_arg, "--out", certs_arg, "kv1", "kv2", "kv3", "kv4"]);
    assert!(!certs.join("ca.key").exists(), "the CA's key stays off the nodes");
    run("chown", &["-R", "10001:10001", certs_arg]);

    compose(&certs, &["up", "-d", "--no-build"]);
    for node in NODES {
        until(&format!("{node} ready"), || get(node, "/health/ready").is_some_and(|(s, _)| s == 200));
    }
    until("three members", || reachable("kv1") == Some(members(&["kv1", "kv2", "kv3"])));

    // The host's node joins through kv1, advertising its address on the
    // Compose network (the gateway's).
    let network = format!("{PROJECT}_default");
    let gateway = run("docker", &["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &network]);
    let cert = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let mut child = Command::new(example("kv"))
        .args(["--node", "kv4", "--listen", &format!("{gateway}:0"), "--seeds", &format!("{}:7000", ip("kv1"))])
        .args(["--cert", &cert("kv4.crt"), "--key", &cert("kv4.key"), "--ca", &cert("ca.crt")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kv4");
    let out = Lines::read(child.stdout.take().unwrap());
    let mut kv4 = Client { child, out };
    kv4.out.find("kv shard up", WAIT).expect("kv4 up");
    until("four members", || reachable("kv1") == Some(members(&["kv1", "kv2", "kv3", "kv4"])));
    for i in 0..20 {
        kv4.put(&format!("k{i}"), &format!("v{i}"));
    }

    // A container killed: the others see it go, and it comes back as a new
    // member once started again.
    run("docker", &["kill", &container("kv3")]);
    until("kv3 gone", || reachable("kv1").is_some_and(|m| !m.contains(&"kv3".to_owned())));
    run("docker", &["start", &container("kv3")]);
    until("kv3 back", || reachable("kv1") == Some(members(&["kv1", "kv2", "kv3", "kv4"])));

    // A container cut off the network: the majority downs it, it downs
    // itself, and rejoins as a new member once connected again.
    run("docker", &["network", "disconnect", &network, &container("kv2")]);
    until("kv2 cut off", || reachable("kv1").is_some_and(|m| !m.contains(&"kv2".to_owned())));
    run("docker", &["network", "connect", &network, &container("kv2")]);
    until("kv2 rejoined", || reachable("kv1") == Some(members(&["kv1", "kv2", "kv3", "kv4"])));

    // A rolling restart of the containers that join through a seed.
    for node in ["kv2", "kv3"] {
        run("docker", &["restart", "-t", "10", &container(node)]);
        until(&format!("{node} ready again"), || get(node, "/health/ready").is_some_and(|(s, _)| s == 200));
        until(&format!("{node} a member again"), || reachable("kv1") == Some(members(&["kv1", "kv2", "kv3", "kv4"])));
    }

    // Nothing written was lost.
    for i in 0..20 {
        kv4.ask(&format!("get k{i}"), &format!("k{i} = v{i}"));
    }
    let _ = kv4.child.kill();
    let _ = kv4.child.wait();
}
