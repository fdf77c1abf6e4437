//! Each multi-node example's scenario, in one process over the in-memory
//! network on tokio's paused clock: the same service code the example
//! binaries run (their `app.rs`), with nodes joined, partitioned and lost
//! deterministically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/chat/app.rs"]
mod chat;
#[path = "../examples/kv/app.rs"]
mod kv;
#[path = "../examples/ping_pong/app.rs"]
mod ping_pong;
#[path = "../examples/work_queue/app.rs"]
mod work_queue;

mod support;

use std::time::Duration;

use footlight::Cluster;
use footlight::remote::transport::mem::MemoryNetwork;
use support::{cluster, eventually};
use tokio::sync::mpsc;

/// How long (virtual time) a condition may take to hold.
const WAIT: Duration = Duration::from_secs(30);

/// The next line on `lines` containing `text`, within 10 s (virtual).
async fn line_with(lines: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    let wait = async {
        loop {
            let line = lines.recv().await.expect("client gone");
            if line.contains(text) {
                return line;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("no line with {text:?}"))
}

#[tokio::test(start_paused = true)]
async fn ping_pong_measures_round_trips_after_the_notes() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"], WAIT).await;
    for node in &nodes {
        ping_pong::serve(node).unwrap();
    }
    assert!(ping_pong::wait_for_name(&nodes[1], &ping_pong::name_of("a"), Duration::from_secs(10)).await);
    let latency = ping_pong::ping(&nodes[1], "a", 200, 50).await.unwrap();
    assert_eq!(latency.count, 200);
    assert_eq!(latency.peer, "a");
    assert_eq!(latency.notes_seen, 50, "every note arrives before the pings sent after it");
    assert!(latency.p50 <= latency.p99);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn chat_fans_out_across_nodes_and_drops_the_users_of_a_lost_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    for node in &nodes {
        chat::setup(node).unwrap();
    }
    let (mut alice, mut at_alice) = chat::Client::new(&nodes[0], "alice");
    let (mut bob, mut at_bob) = chat::Client::new(&nodes[1], "bob");
    let (mut carol, mut at_carol) = chat::Client::new(&nodes[2], "carol");
    alice.join("lobby").await.unwrap();
    // The room lives on a; its name reaches b and c.
    for node in &nodes[1..] {
        eventually(WAIT, || async { node.lookup::<chat::Room>("room:lobby").await.is_ok() }).await;
    }
    bob.join("lobby").await.unwrap();
    line_with(&mut at_alice, "bob joined").await;
    carol.join("lobby").await.unwrap();
    line_with(&mut at_alice, "carol joined").await;
    alice.say("hello from a").await.unwrap();
    assert_eq!(line_with(&mut at_bob, "hello").await, "[lobby] alice: hello from a");
    assert_eq!(line_with(&mut at_carol, "hello").await, "[lobby] alice: hello from a");
    assert_eq!(alice.who().await.unwrap(), ["alice", "bob", "carol"]);

    // c dies: the room (on a) drops carol and tells the others.
    net.isolate("c");
    assert_eq!(line_with(&mut at_alice, "carol left").await, "[lobby] *: carol left (their node is down)");
    line_with(&mut at_bob, "carol left").await;
    bob.say("still here").await.unwrap();
    assert_eq!(line_with(&mut at_alice, "still here").await, "[lobby] bob: still here");
    assert_eq!(alice.who().await.unwrap(), ["alice", "bob"]);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn kv_keeps_every_key_through_a_leave_and_a_node_loss() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c", "d"], WAIT).await;
    let shards: Vec<_> = nodes.iter().map(|n| kv::serve(n).unwrap()).collect();
    for node in &nodes {
        for id in ["a", "b", "c", "d"] {
            eventually(WAIT, || async { node.lookup::<kv::Shard>(&kv::name_of(id)).await.is_ok() }).await;
        }
    }
    // Writes from every node; two copies each.
    for i in 0..200 {
        let copies = kv::put(&nodes[i % 4], &format!("key{i}"), &format!("value{i}")).await.unwrap();
        assert_eq!(copies, kv::REPLICAS);
    }
    let total = |node: &Cluster| {
        let node = node.clone();
        async move { kv::counts(&node).await.iter().map(|(_, c)| c.unwrap_or(0)).sum::<usize>() }
    };
    assert_eq!(total(&nodes[0]).await, 400);
    for node in &nodes {
        for i in (0..200).step_by(7) {
            assert_eq!(kv::get(node, &format!("key{i}")).await.unwrap(), Some(format!("value{i}")));
        }
    }

    // c leaves: it hands its keys over first.
    kv::leave(&nodes[2], &shards[2]).await;
    eventually(WAIT, || async { nodes[0].members().len() == 3 }).await;
    eventually(WAIT, || async { total(&nodes[0]).await == 400 }).await;
    for i in 0..200 {
        assert_eq!(kv::get(&nodes[1], &format!("key{i}")).await.unwrap(), Some(format!("value{i}")), "key{i}");
    }

    // d is lost without a goodbye: its keys' other copies remain, and are
    // copied again to restore two of each.
    net.isolate("d");
    eventually(WAIT, || async { nodes[0].members().len() == 2 }).await;
    for i in 0..200 {
        assert_eq!(kv::get(&nodes[0], &format!("key{i}")).await.unwrap(), Some(format!("value{i}")), "key{i}");
    }
    eventually(WAIT, || async { total(&nodes[0]).await == 400 }).await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn work_queue_loses_no_job_to_panics_or_to_a_lost_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    for node in &nodes {
        work_queue::start_pool(node, 3);
    }
    assert!(work_queue::wait_for_workers(&nodes[0], 9, Duration::from_secs(10)).await);

    let report = work_queue::run_jobs(&nodes[0], 0..300, 16, 5, work_queue::default_patience(5), |_| {}).await.unwrap();
    assert_eq!(report.completed, 300);
    assert_eq!(report.retried_after_panic, 6, "jobs 7, 57, ..., 257 are poison once");
    assert_eq!(report.by_node.len(), 3);

    // c is lost while a batch runs.
    let batch = {
        let a = nodes[0].clone();
        tokio::spawn(async move {
            work_queue::run_jobs(&a, 1000..1600, 16, 5, work_queue::default_patience(5), |_| {}).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    net.isolate("c");
    let report = batch.await.unwrap().unwrap();
    assert_eq!(report.completed, 600, "no job lost");
    assert!(report.resubmitted_after_loss > 0, "jobs on c were resubmitted");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn work_queue_dispatchers_get_disjoint_job_ids_from_the_dispenser_even_after_it_moves() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    let dispensers: Vec<_> = nodes.iter().map(|n| work_queue::dispenser(n).unwrap()).collect();
    let mut ranges = Vec::new();
    for (i, d) in dispensers.iter().enumerate() {
        let (first, from) = d.ask(work_queue::Reserve(100 + i as u64)).await.unwrap();
        assert_eq!(from, "a", "the dispenser runs on the oldest member");
        ranges.push(first..first + 100 + i as u64);
    }
    // a leaves: the dispenser moves to b, and goes on with ids not handed out.
    nodes[0].shutdown().await;
    let (first, from) = dispensers[2].ask(work_queue::Reserve(10)).await.unwrap();
    assert_eq!(from, "b");
    ranges.push(first..first + 10);
    for (i, r) in ranges.iter().enumerate() {
        for other in &ranges[i + 1..] {
            assert!(r.end <= other.start || other.end <= r.start, "{r:?} and {other:?} overlap");
        }
    }
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}
