//! Membership figures: time from a node's loss to `MemberDown` on every
//! survivor (in memory on a virtual clock, and over QUIC on 127.0.0.1 in real
//! time), gossip traffic per node at 5 and 20 members, and the time 20 nodes
//! take to converge when all join through one seed.
//!
//! Run: `cargo bench --bench cluster` (add `-- --quick` for fewer QUIC
//! trials).
//!
//! In memory, tokio's clock is paused: time advances only when every task
//! waits, so the figures are the protocol's own timing (probe interval,
//! timeouts, suspicion) with no CPU noise. Over QUIC the clock is real.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use footlight::Cluster;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::remote::transport::quic::Quic;
use footlight::remote::transport::tls::DevCa;
use footlight::{ClusterEvent, Node};

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

async fn mem_node(net: &MemoryNetwork, id: &str, seeds: &[&str]) -> Cluster {
    Cluster::builder(Node::builder(id).transport(net.transport()).listen(id))
        .seeds(seeds.iter().copied())
        .start()
        .await
        .unwrap()
}

async fn converge(nodes: &[Cluster], n: usize) {
    for node in nodes {
        let mut events = node.subscribe();
        while node.members().len() != n {
            events.recv().await.unwrap();
        }
    }
}

async fn mem_cluster(net: &MemoryNetwork, n: usize) -> Vec<Cluster> {
    let mut nodes = vec![mem_node(net, "n00", &[]).await];
    for i in 1..n {
        nodes.push(mem_node(net, &format!("n{i:02}"), &["n00"]).await);
    }
    nodes
}

/// Waits until every node in `watchers` has seen `lost` go down; returns
/// the time each took from `since`.
async fn down_everywhere(
    subs: Vec<footlight::cluster::Subscription>,
    lost: &str,
    since: tokio::time::Instant,
) -> Vec<Duration> {
    let mut times = Vec::new();
    for mut events in subs {
        loop {
            match events.recv().await.unwrap() {
                ClusterEvent::MemberDown(m) if m.id == lost => break,
                _ => {}
            }
        }
        times.push(since.elapsed());
    }
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<64} p50 {:>7.3} s   p99 {:>7.3} s   max {:>7.3} s   ({} samples)",
        percentile(&samples, 0.5).as_secs_f64(),
        percentile(&samples, 0.99).as_secs_f64(),
        samples.last().unwrap().as_secs_f64(),
        samples.len()
    );
}

fn mem_detection(trials: usize) {
    let mut samples = Vec::new();
    for trial in 0..trials {
        paused().block_on(async {
            let net = MemoryNetwork::new();
            let nodes = mem_cluster(&net, 5).await;
            converge(&nodes, 5).await;
            // Let membership settle, then lose a different node each trial.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let victim = trial % 5;
            let subs: Vec<_> =
                nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n.subscribe()).collect();
            let since = tokio::time::Instant::now();
            net.isolate(nodes[victim].addr());
            samples.extend(down_everywhere(subs, nodes[victim].id(), since).await);
            for node in nodes {
                node.shutdown().await;
            }
        });
    }
    report("kill -> MemberDown, 5 members, in memory", samples);
}

fn gossip_rate(n: usize) {
    paused().block_on(async {
        let net = MemoryNetwork::new();
        let nodes = mem_cluster(&net, n).await;
        converge(&nodes, n).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before: u64 = nodes.iter().map(|n| n.gossip_stats().bytes_sent).sum();
        let window = Duration::from_secs(60);
        tokio::time::sleep(window).await;
        let after: u64 = nodes.iter().map(|n| n.gossip_stats().bytes_sent).sum();
        let per_node = (after - before) as f64 / n as f64 / window.as_secs_f64();
        println!("{:<64} {per_node:>9.0} B/s per node sent", format!("gossip, {n} members, steady state"));
        for node in nodes {
            node.shutdown().await;
        }
    });
}

fn convergence(n: usize, trials: usize) {
    for (clock, make) in [
        ("virtual clock", paused as fn() -> tokio::runtime::Runtime),
        ("real clock, 2 workers", || {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        }),
    ] {
        let mut samples = Vec::new();
        for _ in 0..trials {
            samples.push(make().block_on(async {
                let net = MemoryNetwork::new();
                let start = tokio::time::Instant::now();
                let nodes = mem_cluster(&net, n).await;
                converge(&nodes, n).await;
                let took = start.elapsed();
                for node in nodes {
                    node.shutdown().await;
                }
                took
            }));
        }
        report(&format!("{n} nodes join through one seed, all see all ({clock})"), samples);
    }
}

fn quic_detection(trials: usize) {
    let ca = DevCa::generate("bench").unwrap();
    let mut samples = Vec::new();
    for trial in 0..trials {
        // Each node on a runtime of its own: dropping one's runtime makes it
        // vanish without a goodbye, as a killed process does.
        let runtimes: Vec<tokio::runtime::Runtime> = (0..3)
            .map(|_| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
            .collect();
        let mut nodes: Vec<Cluster> = Vec::new();
        for (i, rt) in runtimes.iter().enumerate() {
            let id = format!("q{i}");
            let seeds: Vec<String> = nodes.first().map(|n| n.addr().to_owned()).into_iter().collect();
            let tls = ca.issue(&id).unwrap();
            nodes.push(rt.block_on(async {
                Cluster::builder(Node::builder(id).transport(Quic::new(tls)).listen("127.0.0.1:0"))
                    .seeds(seeds)
                    .start()
                    .await
                    .unwrap()
            }));
        }
        for (node, rt) in nodes.iter().zip(&runtimes) {
            rt.block_on(converge(std::slice::from_ref(node), 3));
        }
        let victim = 1 + trial % 2;
        let survivor = 3 - victim;
        let subs = vec![
            runtimes[0].block_on(async { nodes[0].subscribe() }),
            runtimes[survivor].block_on(async { nodes[survivor].subscribe() }),
        ];
        let mut runtimes = runtimes;
        let doomed = runtimes.remove(victim);
        let lost = nodes.remove(victim);
        let lost_id = lost.id().to_owned();
        let killed = Instant::now();
        drop(lost);
        doomed.shutdown_background();
        let mut handles = Vec::new();
        for (sub, rt) in subs.into_iter().zip([&runtimes[0], &runtimes[1]]) {
            let lost = lost_id.clone();
            handles.push(rt.spawn(async move {
                down_everywhere(vec![sub], &lost, tokio::time::Instant::now()).await;
                Instant::now()
            }));
        }
        for (handle, rt) in handles.into_iter().zip([&runtimes[0], &runtimes[1]]) {
            samples.push(rt.block_on(handle).unwrap() - killed);
        }
        for (node, rt) in nodes.iter().zip(&runtimes) {
            rt.block_on(node.shutdown());
        }
    }
    report("kill -> MemberDown, 3 members, QUIC 127.0.0.1", samples);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let defaults = footlight::FailureDetection::default();
    println!(
        "failure detection: probe every {:?}, probe timeout {:?}, suspicion {:?}; budget 5 s",
        defaults.probe_interval, defaults.probe_timeout, defaults.suspect_timeout
    );
    mem_detection(20);
    quic_detection(if quick { 5 } else { 20 });
    gossip_rate(5);
    gossip_rate(20);
    convergence(20, 10);
}
