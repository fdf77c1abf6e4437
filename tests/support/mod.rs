//! Helpers shared by the cross-crate tests: in-memory clusters, waiting for
//! a condition with a deadline, and the output lines of child processes.
//! Each test file uses some of them.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use footlight::Node;
use footlight::cluster::SplitBrainResolver;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{Cluster, FailureDetection};

/// A node on `net` listening at `id`, joining through `seeds`.
pub async fn start(net: &MemoryNetwork, id: &str, seeds: &[&str]) -> Cluster {
    start_with(net, id, seeds, Options::default()).await
}

/// Keep-majority, deciding once the view has been stable for 2 s: for the
/// tests that lose a node and need its peers to down it.
pub fn keep_majority() -> SplitBrainResolver {
    SplitBrainResolver::keep_majority().stable_after(Duration::from_secs(2))
}

/// As [`start`], with [`keep_majority`].
pub async fn start_resolved(net: &MemoryNetwork, id: &str, seeds: &[&str]) -> Cluster {
    start_with(net, id, seeds, Options { sbr: Some(keep_majority()), ..Options::default() }).await
}

/// What a test node is started with besides its defaults.
#[derive(Clone, Default)]
struct Options {
    sbr: Option<SplitBrainResolver>,
    detection: Option<FailureDetection>,
}

async fn start_with(net: &MemoryNetwork, id: &str, seeds: &[&str], options: Options) -> Cluster {
    let mut builder =
        Cluster::builder(Node::builder(id).transport(net.transport()).listen(id)).seeds(seeds.iter().copied());
    if let Some(sbr) = options.sbr {
        builder = builder.split_brain_resolver(sbr);
    }
    if let Some(detection) = options.detection {
        builder = builder.failure_detection(detection);
    }
    builder.start().await.unwrap()
}

/// Nodes `ids` on `net`, all joining through the first, once every one sees
/// all as members, is connected to all (so registry copies have been
/// exchanged), is admitted, and the views have converged (so every member
/// counts in a split-brain decision). Waits up to `within` per condition.
pub async fn cluster(net: &MemoryNetwork, ids: &[&str], within: Duration) -> Vec<Cluster> {
    cluster_with(net, ids, within, Options::default()).await
}

/// As [`cluster`], with [`keep_majority`].
pub async fn cluster_resolved(net: &MemoryNetwork, ids: &[&str], within: Duration) -> Vec<Cluster> {
    cluster_with(net, ids, within, Options { sbr: Some(keep_majority()), ..Options::default() }).await
}

/// As [`cluster`], with a suspected member declared down only after
/// `suspect_timeout`: a member cut off stays unreachable that long, for the
/// tests that look at it in that state (slowly, like a browser under load).
pub async fn cluster_slow_to_down(
    net: &MemoryNetwork,
    ids: &[&str],
    within: Duration,
    suspect_timeout: Duration,
) -> Vec<Cluster> {
    let detection = FailureDetection { suspect_timeout, ..FailureDetection::default() };
    cluster_with(net, ids, within, Options { detection: Some(detection), ..Options::default() }).await
}

async fn cluster_with(net: &MemoryNetwork, ids: &[&str], within: Duration, options: Options) -> Vec<Cluster> {
    let mut nodes = vec![start_with(net, ids[0], &[], options.clone()).await];
    for id in &ids[1..] {
        nodes.push(start_with(net, id, &[ids[0]], options.clone()).await);
    }
    for node in &nodes {
        eventually(within, || async {
            let mut seen: Vec<String> = node.members().into_iter().map(|m| m.id).collect();
            seen.sort();
            let mut all: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
            all.sort();
            seen == all && node.peers().len() == ids.len() - 1 && node.is_joined() && node.is_converged()
        })
        .await;
    }
    nodes
}

/// Waits until `check` holds, checking every 10 ms (of virtual time under
/// a paused clock); panics if it does not within `within`.
pub async fn eventually<F, Fut>(within: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let wait = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(within, wait).await.expect("condition not reached in time");
}

/// Where cargo built example `name` (examples are built before integration
/// tests, next to their binaries).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "example {name} not built at {}", path.display());
    path
}

/// The lines a child process writes, read by a thread as they come.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Lines received since the last [`mark`](Self::mark).
    seen: std::cell::RefCell<Vec<String>>,
}

impl Lines {
    /// Reads `output` (a child's stdout or stderr) line by line.
    pub fn read(output: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: std::cell::RefCell::new(Vec::new()) }
    }

    /// The first line since the last mark holding `text` (from `text` on:
    /// the test harness may print its own words first on a line), waiting
    /// up to `within` for it.
    pub fn find(&self, text: &str, within: Duration) -> Option<String> {
        let from = |line: &str| line.find(text).map(|i| line[i..].to_owned());
        if let Some(found) = self.seen.borrow().iter().find_map(|l| from(l)) {
            return Some(found);
        }
        let deadline = Instant::now() + within;
        loop {
            let line = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
            let found = from(&line);
            self.seen.borrow_mut().push(line);
            if found.is_some() {
                return found;
            }
        }
    }

    /// The lines received since the last mark that were looked at.
    pub fn seen(&self) -> Vec<String> {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.borrow_mut().push(line);
        }
        self.seen.borrow().clone()
    }

    /// Forgets the lines received so far.
    pub fn mark(&self) {
        while self.rx.try_recv().is_ok() {}
        self.seen.borrow_mut().clear();
    }
}
