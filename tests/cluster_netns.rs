//! The cluster on real separate hosts: `kv` example nodes, each in its own
//! Linux network namespace on a virtual switch, over QUIC with mutual TLS,
//! made by `../shared/tools/netns-cluster.sh`. Three hosts: a short
//! isolation of one host causes no down; a SIGKILLed host is declared down
//! by both survivors within the 5 s budget. Five hosts cut 3|2 (keep-
//! majority): the minority downs itself and refuses writes, saying why,
//! the majority takes writes; after the heal the minority's nodes rejoin as
//! new members and read what the majority wrote.
//!
//! Needs root and the tool: where either is missing, the test says so and
//! does nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Lines, example};

const BUDGET: Duration = Duration::from_secs(5);

fn tool() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/netns-cluster.sh");
    path.exists().then_some(path)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throw-away namespace cluster, removed (with its processes) on drop.
struct Hosts {
    tool: PathBuf,
    prefix: String,
}

impl Hosts {
    fn run(&self, args: &[&str]) -> bool {
        Command::new(&self.tool)
            .arg("-p")
            .arg(&self.prefix)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.run(&["down"]);
    }
}

/// A node process on one host: its stdin (kv commands), its stdout lines
/// (answers) and its stderr lines (its cluster events).
struct Host {
    _process: Child,
    stdin: std::process::ChildStdin,
    out: Lines,
    lines: Lines,
}

impl Host {
    fn start(hosts: &Hosts, i: usize, ca_dir: &Path) -> Host {
        let mut process = Command::new(&hosts.tool)
            .args(["-p", &hosts.prefix, "exec", &i.to_string()])
            .arg(example("kv"))
            .args(["--node", &format!("n{i}"), "--listen", &format!("10.77.0.{i}:7000")])
            .args(["--seeds", "10.77.0.1:7000", "--dev-ca-dir"])
            .arg(ca_dir)
            .env("RUST_LOG", std::env::var("FOOTLIGHT_NETNS_LOG").unwrap_or_else(|_| "error".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::read(process.stderr.take().unwrap());
        let out = Lines::read(process.stdout.take().unwrap());
        let stdin = process.stdin.take().unwrap();
        Host { _process: process, stdin, out, lines }
    }

    /// Sends a kv command and returns its answer: the first stdout line
    /// holding one of `answers`.
    fn command(&mut self, line: &str, answers: &[&str]) -> String {
        use std::io::Write;
        self.out.mark();
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for answer in answers {
                if let Some(found) = self.out.find(answer, Duration::from_millis(100)) {
                    return found;
                }
            }
        }
        panic!("no answer to {line:?}: {:#?} {:#?}", self.out.seen(), self.lines.seen());
    }

    /// Whether a line holding `text` came since the last mark, waiting up
    /// to `within` for it.
    fn saw(&self, text: &str, within: Duration) -> bool {
        self.lines.find(text, within).is_some()
    }

    fn mark(&self) {
        self.lines.mark();
    }
}

#[test]
fn separate_hosts_short_isolation_no_down_killed_host_down_within_budget() {
    let (Some(tool), true) = (tool(), is_root()) else {
        eprintln!("skipped: needs root and ../shared/tools/netns-cluster.sh");
        return;
    };
    example("kv");
    let hosts = Hosts { tool, prefix: format!("fl{}", std::process::id() % 1_000_000) };
    if !hosts.run(&["up", "3"]) {
        eprintln!("skipped: network namespaces cannot be made here");
        return;
    }
    let ca_dir = std::env::temp_dir().join(format!("footlight-netns-{}", std::process::id()));
    let nodes: Vec<Host> = (1..=3).map(|i| Host::start(&hosts, i, &ca_dir)).collect();
    for (i, node) in nodes.iter().enumerate() {
        for j in (1..=3).filter(|j| *j != i + 1) {
            assert!(node.saw(&format!("member up: n{j}"), Duration::from_secs(30)), "n{} never saw n{j}", i + 1);
        }
    }

    // A pulled cable for one second: suspicion may come, down must not.
    for node in &nodes {
        node.mark();
    }
    assert!(hosts.run(&["isolate", "3"]));
    std::thread::sleep(Duration::from_secs(1));
    assert!(hosts.run(&["rejoin", "3"]));
    for node in &nodes[..2] {
        assert!(!node.saw("member down", BUDGET + Duration::from_secs(2)), "a short isolation caused a down");
    }

    // kill -9 of every process on host 3.
    for node in &nodes {
        node.mark();
    }
    assert!(hosts.run(&["kill", "3"]));
    let killed = Instant::now();
    for (i, node) in nodes[..2].iter().enumerate() {
        assert!(node.saw("member down: n3", BUDGET), "n{} did not declare n3 down within {BUDGET:?}", i + 1);
    }
    eprintln!("kill -> both survivors report down: {:?}", killed.elapsed());
    drop(nodes);
    drop(hosts);
    let _ = std::fs::remove_dir_all(ca_dir);
}

#[test]
fn separate_hosts_a_three_two_partition_the_minority_refuses_writes_and_rejoins_after_the_heal() {
    let (Some(tool), true) = (tool(), is_root()) else {
        eprintln!("skipped: needs root and ../shared/tools/netns-cluster.sh");
        return;
    };
    example("kv");
    let hosts = Hosts { tool, prefix: format!("fp{}", std::process::id() % 1_000_000) };
    if !hosts.run(&["up", "5"]) {
        eprintln!("skipped: network namespaces cannot be made here");
        return;
    }
    let ca_dir = std::env::temp_dir().join(format!("footlight-netns-p-{}", std::process::id()));
    let mut nodes: Vec<Host> = (1..=5).map(|i| Host::start(&hosts, i, &ca_dir)).collect();
    for (i, node) in nodes.iter().enumerate() {
        for j in (1..=5).filter(|j| *j != i + 1) {
            assert!(node.saw(&format!("member up: n{j}"), Duration::from_secs(30)), "n{} never saw n{j}", i + 1);
        }
    }
    assert!(nodes[0].command("put before 1", &["ok (", "error"]).starts_with("ok (2 copies)"));
    // Every member counts in the resolver's decisions once the views have
    // converged: a cut before that leaves members out (see the README).
    for (i, node) in nodes.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.command("members", &["(views "]).contains("(views converged)") {
            assert!(Instant::now() < deadline, "n{}'s view never converged", i + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for node in &nodes {
        node.mark();
    }
    assert!(hosts.run(&["split", "1,2,3", "4,5"]));
    let cut = Instant::now();
    for (i, node) in nodes[3..].iter().enumerate() {
        assert!(
            node.saw("this node downed itself", Duration::from_secs(20)),
            "n{} did not down itself: {:#?}",
            i + 4,
            node.lines.seen()
        );
    }
    eprintln!("partition -> minority downed itself: {:?}", cut.elapsed());
    for node in &nodes[..3] {
        assert!(
            node.saw("member down: n4", Duration::from_secs(20))
                && node.saw("member down: n5", Duration::from_secs(20)),
            "{:#?}",
            node.lines.seen()
        );
    }
    eprintln!("partition -> majority downed the minority: {:?}", cut.elapsed());
    let refused = nodes[3].command("put during 2", &["ok (", "error"]);
    assert!(refused.contains("refused") && refused.contains("losing side"), "{refused}");
    // The majority takes writes once it has decided: a member it suspects
    // meanwhile (a busy host) holds writes back until that is settled.
    let decided = Instant::now() + Duration::from_secs(20);
    let accepted = loop {
        let answer = nodes[0].command("put during 3", &["ok (", "error"]);
        if !answer.contains("writes wait until the cluster has decided") || Instant::now() >= decided {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(accepted.starts_with("ok (2 copies)"), "{accepted}");
    // The heal: the minority's nodes start again as new members and rejoin.
    assert!(hosts.run(&["heal", "all"]));
    for (i, node) in nodes[3..].iter().enumerate() {
        assert!(
            node.out.find("rejoined as a new member", Duration::from_secs(60)).is_some(),
            "n{} did not rejoin: {:#?} {:#?}",
            i + 4,
            node.out.seen(),
            node.lines.seen()
        );
    }
    for node in &mut nodes[3..] {
        let wait = Instant::now() + Duration::from_secs(20);
        loop {
            let got = node.command("get during", &["during =", "not found", "error"]);
            if got == "during = 3" {
                break;
            }
            assert!(Instant::now() < wait, "a rejoined node reads {got:?}");
        }
        assert_eq!(node.command("get before", &["before =", "not found", "error"]), "before = 1");
    }
    drop(nodes);
    drop(hosts);
    let _ = std::fs::remove_dir_all(ca_dir);
}
