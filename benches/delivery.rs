//! Reliable delivery figures: messages per second from a producer to a
//! consumer on another node over QUIC on 127.0.0.1, beside plain tells to
//! the same handler in the same process, and the window's effect.
//!
//! Run: `cargo bench --bench delivery` (`-- --runs N` fresh processes,
//! default 3; the median is reported, with the spread).
//!
//! Each run is a fresh process: two nodes over QUIC in one process, a
//! Tokio runtime with 2 workers and the I/O driver on, the load sent from a
//! task on a worker. "Handled" means the consumer's handler ran: the
//! reliable figure waits for every acknowledgement (`flush`), the plain one
//! for the handler's count.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use footlight::cluster::delivery::Delivered;
use footlight::prelude::*;
use footlight::remote::transport::quic::Quic;
use footlight::remote::transport::tls::DevCa;
use footlight::{ActorRef, Node};

const MESSAGES: u64 = 200_000;

struct Counter {
    hits: Arc<AtomicU64>,
}

impl Actor for Counter {}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "bench.delivery.Hit")]
struct Hit(u64);

impl Handler<Hit> for Counter {
    async fn handle(&mut self, _: Hit, _ctx: &mut Context<Self>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Handler<Delivered<u64>> for Counter {
    async fn handle(&mut self, _: Delivered<u64>, _ctx: &mut Context<Self>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

impl RemoteActor for Counter {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Hit>();
    }
}

fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let ca = DevCa::generate("bench").unwrap();
        let a = Cluster::builder(Node::builder("a").transport(Quic::new(ca.issue("a").unwrap())).listen("127.0.0.1:0"))
            .start()
            .await
            .unwrap();
        let b = Cluster::builder(Node::builder("b").transport(Quic::new(ca.issue("b").unwrap())).listen("127.0.0.1:0"))
            .seeds([a.addr().to_owned()])
            .start()
            .await
            .unwrap();
        b.joined().await.unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = b.spawn_named("counter", Counter { hits: hits.clone() }).unwrap();
        // Plain tells, from a task on a worker of a.
        let remote: ActorRef<Counter> = a.lookup("counter").await.unwrap();
        let started = Instant::now();
        tokio::spawn(async move {
            for n in 0..MESSAGES {
                remote.tell(Hit(n)).await.unwrap();
            }
        })
        .await
        .unwrap();
        while hits.load(Ordering::Relaxed) < MESSAGES {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let plain = MESSAGES as f64 / started.elapsed().as_secs_f64();
        println!("RESULT plain {plain:.0}");
        for window in [16u32, 64, 256, 1024] {
            let name = format!("counter-{window}");
            b.reliable_consumer::<u64>(&name, counter.recipient(), window).unwrap();
            let producer = a.reliable_producer::<u64>(&format!("p{window}"), &name).window(window).start().unwrap();
            let started = Instant::now();
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    producer.send(n).await.unwrap();
                }
                producer.flush().await;
            })
            .await
            .unwrap();
            let rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
            println!("RESULT reliable_{window} {rate:.0}");
            println!("RESULT ratio_{window} {:.3}", rate / plain);
        }
        std::process::exit(0);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        return child();
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let runs: usize =
        args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(3);
    let exe = std::env::current_exe().unwrap();
    let mut results: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..runs {
        let out = Command::new(&exe).arg("--child").output().unwrap();
        if !out.status.success() {
            eprintln!("child failed: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split_whitespace();
            if parts.next() == Some("RESULT")
                && let (Some(k), Some(v)) = (parts.next(), parts.next().and_then(|v| v.parse().ok()))
            {
                results.entry(k.to_owned()).or_default().push(v);
            }
        }
    }
    println!(
        "reliable delivery over QUIC on 127.0.0.1: {MESSAGES} messages, 2 workers, load from a task; median of {runs} fresh processes"
    );
    let show = |key: &str, label: &str| {
        if let Some(v) = results.get(key) {
            let mut v = v.clone();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let (m, lo, hi) = (v[v.len() / 2], v[0], v[v.len() - 1]);
            if m < 10.0 {
                println!("  {label:<44} {m:>10.3}   (min {lo:.3}, max {hi:.3})");
            } else {
                println!("  {label:<44} {m:>10.0}   (min {lo:.0}, max {hi:.0})");
            }
        }
    };
    show("plain", "plain tells, handled/s");
    for w in [16, 64, 256, 1024] {
        show(&format!("reliable_{w}"), &format!("reliable, window {w}, handled/s"));
        show(&format!("ratio_{w}"), "  ratio to plain tells");
    }
}
