//! Failover figures: how long a partition takes to be decided by the
//! split-brain resolver, and how long a cluster singleton takes to run
//! elsewhere after its owner is lost.
//!
//! Run: `cargo bench --bench failover` (`-- --trials N`, default 20 on the
//! paused clock and 3 on the real one).
//!
//! Each scenario runs on the in-memory network, first on tokio's paused
//! clock (time advances only when every task waits: the figures are the
//! protocol's own timing, probe order and all, without CPU noise), then on
//! the real clock (the same plus scheduling on this machine). Defaults
//! throughout: `FailureDetection` (probe 500 ms, suspicion 2.5 s),
//! keep-majority with `stable_after` 2 s, the singleton's removal margin
//! (8.5 s with those).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use footlight::cluster::lease::{Lease, MemoryLeases};
use footlight::cluster::{Singleton, SplitBrainResolver};
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{ClusterEvent, Node};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(120);

#[derive(Actor)]
struct Probe {
    node: String,
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = String, remote = "bench.Where")]
struct Where;

impl Handler<Where> for Probe {
    async fn handle(&mut self, _: Where, _ctx: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl RemoteActor for Probe {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Where>();
    }
}

async fn cluster(net: &MemoryNetwork, ids: &[String]) -> Vec<Cluster> {
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let seeds: Vec<String> = if i == 0 { Vec::new() } else { vec![ids[0].clone()] };
        let node = Cluster::builder(Node::builder(id.as_str()).transport(net.transport()).listen(id.as_str()))
            .seeds(seeds)
            .split_brain_resolver(SplitBrainResolver::keep_majority())
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    for node in &nodes {
        let mut events = node.subscribe();
        let formed = async {
            while node.members().len() != ids.len() || !node.is_joined() {
                events.recv().await.unwrap();
            }
        };
        tokio::time::timeout(WAIT, formed)
            .await
            .unwrap_or_else(|_| panic!("{} never saw {ids:?}: {:?}", node.id(), node.members()));
    }
    nodes
}

/// Shuts `nodes` down, in bounded time.
async fn shutdown(nodes: Vec<Cluster>) {
    for node in nodes {
        let id = node.id().to_owned();
        tokio::time::timeout(WAIT, node.shutdown()).await.unwrap_or_else(|_| panic!("{id} did not shut down"));
    }
}

fn ids(trial: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{trial}n{i}")).collect()
}

/// 3|2: (the minority's nodes have all downed themselves, the majority's
/// have all downed the minority), each from the cut.
async fn partition(trial: usize) -> (Duration, Duration) {
    let net = MemoryNetwork::new();
    let ids = ids(trial, 5);
    let nodes = cluster(&net, &ids).await;
    let cut = Instant::now();
    for a in &ids[..3] {
        for b in &ids[3..] {
            net.partition(a, b);
        }
    }
    let minority = async {
        for node in &nodes[3..] {
            let mut events = node.subscribe();
            while !node.is_downed() {
                events.recv().await;
            }
        }
        cut.elapsed()
    };
    let majority = async {
        for node in &nodes[..3] {
            let mut events = node.subscribe();
            while node.members().len() != 3 {
                events.recv().await.unwrap();
            }
        }
        cut.elapsed()
    };
    let (minority, majority) = tokio::time::timeout(WAIT, async { tokio::join!(minority, majority) })
        .await
        .expect("the partition was decided");
    shutdown(nodes).await;
    (minority, majority)
}

/// The singleton's owner (the oldest of 3) lost (cut off; with a lease,
/// its renewals stop too, as when its process dies): the time until the
/// proxy on a survivor gets an answer from the new owner.
async fn singleton_owner_lost(trial: usize, lease: bool) -> Duration {
    let net = MemoryNetwork::new();
    let ids = ids(trial, 3);
    let nodes = cluster(&net, &ids).await;
    let leases = MemoryLeases::new();
    let singletons: Vec<Singleton<Probe>> = nodes
        .iter()
        .map(|n| {
            let me = n.id().to_owned();
            let mut builder = n.singleton("probe", move || Probe { node: me.clone() });
            if lease {
                let held: Arc<dyn Lease> = leases.lease("probe", n.id(), Duration::from_secs(5));
                builder = builder.lease(held).removal_margin(Duration::ZERO);
            }
            builder.start().unwrap()
        })
        .collect();
    let answers_from = |s: &Singleton<Probe>, node: String| {
        let s = s.clone();
        async move {
            loop {
                if s.ask_timeout(Where, Duration::from_millis(100)).await.ok().as_ref() == Some(&node) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(WAIT, answers_from(&singletons[2], ids[0].clone()))
        .await
        .expect("the singleton ran on the oldest");
    let lost = Instant::now();
    net.isolate(&ids[0]);
    leases.freeze(&ids[0]);
    tokio::time::timeout(WAIT, answers_from(&singletons[2], ids[1].clone())).await.expect("the singleton moved");
    let took = lost.elapsed();
    let mut events = nodes[0].subscribe();
    let downed = async {
        while !nodes[0].is_downed() {
            match events.recv().await {
                Some(ClusterEvent::SelfDowned { .. }) | None => break,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, downed).await.expect("the lost owner downed itself");
    shutdown(nodes).await;
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<72} p50 {:>6.2} s   min {:>6.2} s   max {:>6.2} s   ({} trials)",
        percentile(&samples, 0.5).as_secs_f64(),
        samples[0].as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
        samples.len()
    );
}

fn run(label: &str, paused: bool, trials: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rt = if paused {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
    } else {
        rt
    };
    rt.block_on(async {
        let (mut minority, mut majority) = (Vec::new(), Vec::new());
        for t in 0..trials {
            let (a, b) = partition(t).await;
            minority.push(a);
            majority.push(b);
        }
        report(&format!("3|2 partition -> minority downed itself ({label})"), minority);
        report(&format!("3|2 partition -> majority downed the minority ({label})"), majority);
        let lost: Vec<Duration> = {
            let mut v = Vec::new();
            for t in 0..trials {
                v.push(singleton_owner_lost(t, false).await);
            }
            v
        };
        report(&format!("singleton owner lost -> running on the next ({label})"), lost);
        let leased: Vec<Duration> = {
            let mut v = Vec::new();
            for t in 0..trials {
                v.push(singleton_owner_lost(t, true).await);
            }
            v
        };
        report(&format!("same, fenced by a 5 s lease, no removal margin ({label})"), leased);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials = args.iter().position(|a| a == "--trials").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
    if args.iter().any(|a| a == "--list") {
        return;
    }
    println!("failover figures, in memory; defaults (probe 500 ms, suspicion 2.5 s, stable_after 2 s, margin 8.5 s)\n");
    run("paused clock", true, trials.unwrap_or(20));
    run("real clock, 2 workers", false, trials.map_or(3, |t: usize| t.min(3)));
}
