//! Reliable delivery over the in-memory network on the paused clock:
//! every message handled once and in order while the connection between
//! producer and consumer is reset again and again; nothing lost when the
//! consumer's node dies and another consumer takes its name (duplicates
//! only with the same key); the window bounds what is in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use footlight::ClusterEvent;
use footlight::cluster::delivery::{Delivered, DeliveryError};
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use support::eventually;

const WAIT: Duration = Duration::from_secs(60);

/// What a handler got: (node, producer, seq, message).
type Log = Arc<Mutex<Vec<(String, String, u64, u64)>>>;

struct Sink {
    node: String,
    log: Log,
    /// Handles nothing while closed (to fill the window).
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Actor for Sink {}

impl Handler<Delivered<u64>> for Sink {
    async fn handle(&mut self, d: Delivered<u64>, _ctx: &mut Context<Self>) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        self.log.lock().unwrap().push((self.node.clone(), d.producer.to_string(), d.seq, d.msg));
    }
}

async fn cluster(net: &MemoryNetwork, ids: &[&str]) -> Vec<Cluster> {
    support::cluster_resolved(net, ids, WAIT).await
}

/// Sends 1..=n from a task, letting time pass every 50 messages (so a
/// fault lands mid-stream).
fn send_all<F, Fut>(n: u64, send: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        for i in 1..=n {
            send(i).await;
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
}

/// Cuts `id` off the network and waits until `watcher` declares it down
/// (keep-majority downs it).
async fn cut_off_until_down(net: &MemoryNetwork, watcher: &Cluster, id: &str) {
    let mut events = watcher.subscribe();
    net.isolate(id);
    let down = async {
        loop {
            if let Some(ClusterEvent::MemberDown(m)) = events.recv().await
                && m.id == id
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, down).await.expect("declared down");
}

fn consumer(node: &Cluster, log: &Log, gate: Option<Arc<tokio::sync::Semaphore>>) {
    let sink = node.system().spawn(Sink { node: node.id().to_owned(), log: log.clone(), gate });
    node.reliable_consumer::<u64>("jobs", sink.recipient(), 64).unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_message_is_handled_once_in_order_while_the_connection_is_reset() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"]).await;
    let log = Log::default();
    consumer(&nodes[1], &log, None);
    let producer = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    const N: u64 = 100_000;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resets = {
        let (net, done) = (net.clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(30)).await;
                net.reset("a", "b");
                n += 1;
            }
            n
        })
    };
    for n in 1..=N {
        let seq = producer.send(n * 10).await.unwrap();
        assert_eq!(seq, n);
        if n % 20 == 0 {
            // Time passes while sending: the resets land mid-stream.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    producer.flush().await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let resets = resets.await.unwrap();
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len() as u64, N, "each handled once");
    for (i, (_, p, seq, msg)) in got.iter().enumerate() {
        assert_eq!((p.as_str(), *seq, *msg), ("p1", i as u64 + 1, (i as u64 + 1) * 10), "in order");
    }
    assert!(resets >= 100, "the connection was reset {resets} times while sending");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_lost_when_the_consumer_dies_and_duplicates_keep_their_key() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"]).await;
    let log = Log::default();
    consumer(&nodes[1], &log, None);
    let producer = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    const N: u64 = 3_000;
    let sending = {
        let producer = producer.clone();
        send_all(N, move |n| {
            let producer = producer.clone();
            async move {
                producer.send(n).await.unwrap();
            }
        })
    };
    eventually(WAIT, || async { log.lock().unwrap().len() > 500 }).await;
    // b dies (cut off; keep-majority downs it); c takes the consumer's name.
    cut_off_until_down(&net, &nodes[0], "b").await;
    consumer(&nodes[2], &log, None);
    sending.await.unwrap();
    tokio::time::timeout(WAIT, producer.flush()).await.expect("everything acknowledged");
    let got = log.lock().unwrap().clone();
    // No message lost.
    let mut seqs: Vec<u64> = got.iter().map(|(_, _, s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "every message handled at least once");
    // Duplicates carry the key of the original, and only around the switch.
    let on_c: Vec<u64> = got.iter().filter(|(n, ..)| n == "c").map(|(_, _, s, _)| *s).collect();
    let on_b: Vec<u64> = got.iter().filter(|(n, ..)| n == "b").map(|(_, _, s, _)| *s).collect();
    assert!(!on_b.is_empty() && !on_c.is_empty());
    for (_, _, seq, msg) in &got {
        assert_eq!(seq, msg, "a message keeps its key");
    }
    let duplicates = got.len() as u64 - N;
    assert!(duplicates <= 64, "at most a window's worth again: {duplicates}");
    assert!(on_c.windows(2).all(|w| w[0] < w[1]), "the replacement got them in order");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_lost_when_the_consumers_node_is_killed_and_restarted() {
    let net = MemoryNetwork::new();
    let mut nodes = cluster(&net, &["a", "b", "c"]).await;
    let log = Log::default();
    consumer(&nodes[1], &log, None);
    let producer = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    const N: u64 = 3_000;
    let sending = {
        let producer = producer.clone();
        send_all(N, move |n| {
            let producer = producer.clone();
            async move {
                producer.send(n).await.unwrap();
            }
        })
    };
    eventually(WAIT, || async { log.lock().unwrap().len() > 500 }).await;
    // b's process dies: cut off until the others down it, then gone.
    cut_off_until_down(&net, &nodes[0], "b").await;
    let old_run = nodes[1].run();
    nodes[1].shutdown().await;
    let handled_before = log.lock().unwrap().len();
    // b starts again (a new run, same id) with its consumer: the only one.
    net.rejoin("b");
    let b = support::start_resolved(&net, "b", &["a"]).await;
    assert_ne!(b.run(), old_run);
    tokio::time::timeout(WAIT, b.joined()).await.expect("b admitted again").unwrap();
    consumer(&b, &log, None);
    nodes[1] = b;
    sending.await.unwrap();
    tokio::time::timeout(WAIT, producer.flush()).await.expect("everything acknowledged");
    let got = log.lock().unwrap().clone();
    assert!(handled_before < got.len(), "the restarted consumer handled the rest");
    let mut seqs: Vec<u64> = got.iter().map(|(_, _, s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "every message handled at least once");
    for (_, _, seq, msg) in &got {
        assert_eq!(seq, msg, "a message keeps its key");
    }
    let duplicates = got.len() as u64 - N;
    assert!(duplicates <= 64, "at most a window's worth again: {duplicates}");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_window_bounds_what_is_in_flight() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"]).await;
    let log = Log::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    consumer(&nodes[1], &log, Some(gate.clone()));
    let producer = nodes[0].reliable_producer::<u64>("p1", "jobs").window(4).start().unwrap();
    for n in 1..=4 {
        producer.try_send(n).unwrap();
    }
    match producer.try_send(5) {
        Err(DeliveryError::WindowFull(5)) => {}
        other => panic!("expected WindowFull(5), got {other:?}"),
    }
    // The handler lets them through; the window stays at 4 (the
    // consumer's grant of 64 is capped by the producer's own window).
    gate.add_permits(1000);
    tokio::time::timeout(WAIT, producer.flush()).await.unwrap();
    for n in 5..=8 {
        producer.try_send(n).unwrap();
    }
    assert!(matches!(producer.try_send(9), Err(DeliveryError::WindowFull(9))));
    for n in 9..=60 {
        producer.send(n).await.unwrap(); // waits for room
    }
    tokio::time::timeout(WAIT, producer.flush()).await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 60);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_starts_late_gets_everything_from_the_first() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"]).await;
    let log = Log::default();
    let producer = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    for n in 1..=50 {
        producer.try_send(n).unwrap();
    }
    // The producer has been trying for a while; the consumer appears.
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer(&nodes[1], &log, None);
    tokio::time::timeout(WAIT, producer.flush()).await.unwrap();
    let seqs: Vec<u64> = log.lock().unwrap().iter().map(|(_, _, s, _)| *s).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_producer_started_again_with_its_id_is_followed_not_silenced() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"]).await;
    let log = Log::default();
    consumer(&nodes[1], &log, None);
    let first = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    for n in 1..=100 {
        first.send(n).await.unwrap();
    }
    first.flush().await;
    drop(first);
    // A new run, an empty store: it numbers from 1 again.
    let again = nodes[0].reliable_producer::<u64>("p1", "jobs").start().unwrap();
    for n in 101..=200 {
        again.send(n).await.unwrap();
    }
    tokio::time::timeout(WAIT, again.flush()).await.unwrap();
    let msgs: Vec<u64> = log.lock().unwrap().iter().map(|(_, _, _, m)| *m).collect();
    assert_eq!(msgs, (1..=200).collect::<Vec<_>>(), "the second run's messages were handled, not acknowledged unseen");
    for node in &nodes {
        node.shutdown().await;
    }
}

fn worker(node: &Cluster, log: &Log) {
    let sink = node.system().spawn(Sink { node: node.id().to_owned(), log: log.clone(), gate: None });
    node.reliable_worker::<u64>("jobs", sink.recipient(), 8).unwrap();
}

/// A work producer hands each message to one worker with room: every
/// message handled once, the load spread over the workers, each message's
/// key the same as the producer gave it. A worker that starts after the
/// first sends (which wait for one) gets its share.
#[tokio::test(start_paused = true)]
async fn a_work_producer_spreads_messages_over_its_workers_each_handled_once() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"]).await;
    let log = Log::default();
    let producer = nodes[0].work_producer::<u64>("w1", "jobs").window(8).start().unwrap();
    assert!(matches!(producer.try_send(0), Err(DeliveryError::WindowFull(0))), "no worker yet");
    let first = {
        let producer = producer.clone();
        tokio::spawn(async move { producer.send(1).await.unwrap() })
    };
    worker(&nodes[1], &log);
    assert_eq!(tokio::time::timeout(WAIT, first).await.unwrap().unwrap(), 1, "sent once a worker showed up");
    worker(&nodes[2], &log);
    worker(&nodes[0], &log);
    eventually(WAIT, || async { producer.workers() == 3 }).await;
    const N: u64 = 3_000;
    for n in 2..=N {
        assert_eq!(producer.send(n).await.unwrap(), n);
    }
    tokio::time::timeout(WAIT, producer.flush()).await.expect("everything acknowledged");
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len() as u64, N, "each handled once");
    let mut keys: Vec<u64> = got.iter().map(|(_, _, k, _)| *k).collect();
    keys.sort_unstable();
    assert_eq!(keys, (1..=N).collect::<Vec<_>>());
    for (_, producer_id, key, msg) in &got {
        assert_eq!((producer_id.as_str(), key), ("w1", msg), "the key the producer gave");
    }
    for id in ["a", "b", "c"] {
        let share = got.iter().filter(|(n, ..)| n == id).count();
        assert!(share as u64 > N / 10, "{id} handled only {share}");
    }
    assert_eq!(producer.reassigned(), 0);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// A worker's node is lost mid-run: what it had not acknowledged goes to
/// the other worker, nothing is lost, and a message handled twice keeps
/// its key (at most the lost worker's window again).
#[tokio::test(start_paused = true)]
async fn a_lost_workers_messages_go_to_the_others_and_keep_their_keys() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"]).await;
    let log = Log::default();
    worker(&nodes[1], &log);
    worker(&nodes[2], &log);
    let producer = nodes[0].work_producer::<u64>("w1", "jobs").window(8).start().unwrap();
    eventually(WAIT, || async { producer.workers() == 2 }).await;
    const N: u64 = 3_000;
    let sending = {
        let producer = producer.clone();
        send_all(N, move |n| {
            let producer = producer.clone();
            async move {
                producer.send(n).await.unwrap();
            }
        })
    };
    eventually(WAIT, || async { log.lock().unwrap().len() > 500 }).await;
    cut_off_until_down(&net, &nodes[0], "b").await;
    sending.await.unwrap();
    tokio::time::timeout(WAIT, producer.flush()).await.expect("everything acknowledged");
    let got = log.lock().unwrap().clone();
    let mut keys: Vec<u64> = got.iter().map(|(_, _, k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys, (1..=N).collect::<Vec<_>>(), "every message handled at least once");
    for (_, _, key, msg) in &got {
        assert_eq!(key, msg, "a message keeps its key");
    }
    let duplicates = got.len() as u64 - N;
    assert!(duplicates <= 8, "at most the lost worker's window again: {duplicates}");
    assert!(producer.reassigned() > 0, "b's unacknowledged messages went to c");
    assert!(got.iter().any(|(n, ..)| n == "b") && got.iter().any(|(n, ..)| n == "c"));
    assert_eq!(producer.workers(), 1);
    for node in &nodes {
        node.shutdown().await;
    }
}
