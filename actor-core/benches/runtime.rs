//! Local runtime benchmarks, each beside a raw-Tokio baseline measured in the
//! same process (a task + `mpsc::unbounded_channel` per actor, `oneshot`
//! replies), on a 2-worker multi-thread runtime.
//!
//! Run: `cargo bench -p actor-core --bench runtime` (add `-- --quick` for a
//! tenth of the work, `-- --only NAME` for one scenario, `-- --on-worker` to
//! drive from a worker task instead of the main thread). Each scenario checks its own count and prints the
//! Footlight figure, the raw figure and their ratio. Figures are the best of
//! three rounds, which tames noise on a shared machine.
#![allow(clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use actor_core::{
    Actor, ActorRef, ActorSystem, ChildSpec, Context, Handler, Mailbox, Message, Restart, SpawnOptions, Supervisor,
};
use tokio::sync::{mpsc, oneshot};

// ---------------------------------------------------------------- memory

/// Counts live heap bytes, so memory per actor is measured exactly rather
/// than through RSS, which the allocator's reuse of freed pages blurs.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_heap() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- actors

struct Counter(u64);
impl Actor for Counter {}

struct Inc;
impl Message for Inc {
    type Reply = ();
}
impl Handler<Inc> for Counter {
    async fn handle(&mut self, _: Inc, _ctx: &mut Context<Self>) {
        self.0 += 1;
    }
}

struct Get;
impl Message for Get {
    type Reply = u64;
}
impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _ctx: &mut Context<Self>) -> u64 {
        self.0
    }
}

struct Hop {
    next: Option<ActorRef<Hop>>,
    done: mpsc::UnboundedSender<u64>,
}
impl Actor for Hop {}

struct Token(u64);
impl Message for Token {
    type Reply = ();
}
impl Handler<Token> for Hop {
    async fn handle(&mut self, Token(left): Token, _ctx: &mut Context<Self>) {
        if left == 0 {
            let _ = self.done.send(left);
        } else if let Some(next) = &self.next {
            let _ = next.tell(Token(left - 1)).await;
        }
    }
}

struct Link(ActorRef<Hop>);
impl Message for Link {
    type Reply = ();
}
impl Handler<Link> for Hop {
    async fn handle(&mut self, Link(next): Link, _ctx: &mut Context<Self>) {
        self.next = Some(next);
    }
}

// ---------------------------------------------------------------- raw tokio

enum RawMsg {
    Inc,
    Get(oneshot::Sender<u64>),
}

fn raw_counter() -> mpsc::UnboundedSender<RawMsg> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(msg) = rx.recv().await {
            match msg {
                RawMsg::Inc => n += 1,
                RawMsg::Get(reply) => {
                    let _ = reply.send(n);
                }
            }
        }
    });
    tx
}

async fn raw_get(tx: &mpsc::UnboundedSender<RawMsg>) -> u64 {
    let (reply, rx) = oneshot::channel();
    tx.send(RawMsg::Get(reply)).expect("raw actor alive");
    if std::env::var_os("RAW_TIMEOUT").is_some() {
        return tokio::time::timeout(Duration::from_secs(5), rx).await.expect("in time").expect("raw reply");
    }
    rx.await.expect("raw reply")
}

// ---------------------------------------------------------------- scenarios

struct Scale {
    tells: u64,
    asks: usize,
    spawns: usize,
    ring: usize,
    hops: u64,
    fan_senders: u64,
    fan_each: u64,
}

async fn tell_throughput(system: &ActorSystem, n: u64, mailbox: Mailbox) -> f64 {
    let counter = system.spawn_with(Counter(0), SpawnOptions::new().mailbox(mailbox)).expect("unnamed");
    let start = Instant::now();
    for _ in 0..n {
        counter.tell(Inc).await.expect("alive");
    }
    let got = counter.ask(Get).timeout(Duration::from_secs(60)).await.expect("count");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, n, "tell count");
    counter.stop();
    counter.wait_for_stop().await;
    n as f64 / secs
}

async fn raw_tell_throughput(n: u64) -> f64 {
    let tx = raw_counter();
    let start = Instant::now();
    for _ in 0..n {
        tx.send(RawMsg::Inc).expect("alive");
    }
    let got = raw_get(&tx).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, n, "raw tell count");
    n as f64 / secs
}

/// Sequential asks, Footlight and raw interleaved in chunks of 5,000 so both
/// see the same machine noise. Returns ((mean, p99) ours, (mean, p99) raw) in
/// microseconds.
async fn ask_latency(system: &ActorSystem, n: usize) -> ((f64, f64), (f64, f64)) {
    const CHUNK: usize = 5_000;
    let counter = system.spawn(Counter(7));
    let raw = raw_counter();
    let (mut ours, mut theirs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut done = 0;
    while done < n {
        let chunk = CHUNK.min(n - done);
        for _ in 0..chunk {
            let t = Instant::now();
            let v = raw_get(&raw).await;
            theirs.push(t.elapsed());
            assert_eq!(black_box(v), 0);
        }
        for _ in 0..chunk {
            let t = Instant::now();
            let v = counter.ask(Get).await.expect("reply");
            ours.push(t.elapsed());
            assert_eq!(black_box(v), 7);
        }
        done += chunk;
    }
    counter.stop();
    counter.wait_for_stop().await;
    (summarize(ours), summarize(theirs))
}

fn summarize(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)].as_secs_f64();
    (mean * 1e6, p99 * 1e6)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Returns (actors per second for spawn + stop + wait, heap bytes per idle
/// actor, RSS bytes per idle actor).
async fn spawn_cycle(system: &ActorSystem, n: usize) -> (f64, f64, f64) {
    let before = rss_bytes();
    let heap_before = live_heap();
    let start = Instant::now();
    let refs: Vec<ActorRef<Counter>> = (0..n).map(|_| system.spawn(Counter(0))).collect();
    let spawned = start.elapsed();
    // Make sure every actor ran `started` and parked on its mailbox: idle.
    for r in &refs {
        r.tell(Inc).await.expect("alive");
    }
    assert_eq!(refs[n - 1].ask(Get).await.expect("reply"), 1);
    tokio::task::yield_now().await;
    let per_actor = rss_bytes().saturating_sub(before) as f64 / n as f64;
    // The refs vector itself is the benchmark's, not the actors'.
    let heap = (live_heap() - heap_before - (n * std::mem::size_of::<ActorRef<Counter>>()) as isize) as f64 / n as f64;
    let stop_start = Instant::now();
    for r in &refs {
        r.stop();
    }
    for r in &refs {
        r.wait_for_stop().await;
    }
    let secs = (spawned + stop_start.elapsed()).as_secs_f64();
    assert_eq!(system.top_level_count(), 0, "all stopped");
    (n as f64 / secs, heap, per_actor)
}

/// Starts `n` children under one dynamic supervisor, each returned after its
/// `started` hook (`start_child`), or `n` plain spawns each awaited the same
/// way (`wait_started`): the start rate and the heap per live child, then
/// everything stopped.
async fn children_cycle(system: &ActorSystem, n: usize, supervised: bool) -> (f64, f64) {
    let heap_before = live_heap();
    let start = Instant::now();
    let sup = system.spawn(Supervisor::one_for_one());
    let mut refs: Vec<ActorRef<Counter>> = Vec::with_capacity(n);
    for i in 0..n {
        let child = if supervised {
            sup.start_child(ChildSpec::new(format!("c{i}"), Restart::Permanent, || Counter(0))).await.expect("started")
        } else {
            let child = system.spawn(Counter(0));
            child.wait_started().await.expect("started");
            child
        };
        refs.push(child);
    }
    let secs = start.elapsed().as_secs_f64();
    let heap = (live_heap() - heap_before - (n * std::mem::size_of::<ActorRef<Counter>>()) as isize) as f64 / n as f64;
    for r in &refs {
        r.stop();
    }
    sup.stop();
    for r in &refs {
        r.wait_for_stop().await;
    }
    sup.wait_for_stop().await;
    (n as f64 / secs, heap)
}

async fn raw_spawn_cycle(n: usize) -> (f64, f64, f64) {
    let before = rss_bytes();
    let heap_before = live_heap();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    let mut txs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, mut rx) = mpsc::unbounded_channel::<RawMsg>();
        handles.push(tokio::spawn(async move {
            let mut count = 0u64;
            while let Some(msg) = rx.recv().await {
                match msg {
                    RawMsg::Inc => count += 1,
                    RawMsg::Get(reply) => {
                        let _ = reply.send(count);
                    }
                }
            }
            count
        }));
        txs.push(tx);
    }
    let spawned = start.elapsed();
    for tx in &txs {
        tx.send(RawMsg::Inc).expect("alive");
    }
    raw_get(&txs[n - 1]).await;
    tokio::task::yield_now().await;
    let per_task = rss_bytes().saturating_sub(before) as f64 / n as f64;
    let bookkeeping = n
        * (std::mem::size_of::<tokio::task::JoinHandle<u64>>() + std::mem::size_of::<mpsc::UnboundedSender<RawMsg>>());
    let heap = (live_heap() - heap_before - bookkeeping as isize) as f64 / n as f64;
    let stop_start = Instant::now();
    drop(txs);
    for h in handles {
        assert_eq!(h.await.expect("task"), 1);
    }
    let secs = (spawned + stop_start.elapsed()).as_secs_f64();
    (n as f64 / secs, heap, per_task)
}

/// Hops per second around a ring.
async fn ring(system: &ActorSystem, size: usize, hops: u64) -> f64 {
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let nodes: Vec<ActorRef<Hop>> = (0..size).map(|_| system.spawn(Hop { next: None, done: done.clone() })).collect();
    for (i, node) in nodes.iter().enumerate() {
        node.ask(Link(nodes[(i + 1) % size].clone())).await.expect("link");
    }
    let start = Instant::now();
    nodes[0].tell(Token(hops)).await.expect("alive");
    assert_eq!(done_rx.recv().await, Some(0));
    let secs = start.elapsed().as_secs_f64();
    for n in &nodes {
        n.stop();
    }
    for n in &nodes {
        n.wait_for_stop().await;
    }
    hops as f64 / secs
}

async fn raw_ring(size: usize, hops: u64) -> f64 {
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let mut txs = Vec::with_capacity(size);
    let mut rxs = Vec::with_capacity(size);
    for _ in 0..size {
        let (tx, rx) = mpsc::unbounded_channel::<u64>();
        txs.push(tx);
        rxs.push(rx);
    }
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let next = txs[(i + 1) % size].clone();
        let done = done.clone();
        tokio::spawn(async move {
            while let Some(left) = rx.recv().await {
                if left == 0 {
                    let _ = done.send(left);
                } else {
                    let _ = next.send(left - 1);
                }
            }
        });
    }
    let start = Instant::now();
    txs[0].send(hops).expect("alive");
    assert_eq!(done_rx.recv().await, Some(0));
    hops as f64 / start.elapsed().as_secs_f64()
}

async fn fan_in(system: &ActorSystem, senders: u64, each: u64) -> f64 {
    let counter = system.spawn(Counter(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let c = counter.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    c.tell(Inc).await.expect("alive");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
    let got = counter.ask(Get).timeout(Duration::from_secs(60)).await.expect("count");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, senders * each, "fan-in count");
    counter.stop();
    counter.wait_for_stop().await;
    (senders * each) as f64 / secs
}

async fn raw_fan_in(senders: u64, each: u64) -> f64 {
    let tx = raw_counter();
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    tx.send(RawMsg::Inc).expect("alive");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender");
    }
    let got = raw_get(&tx).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, senders * each, "raw fan-in count");
    (senders * each) as f64 / secs
}

// ---------------------------------------------------------------- driver

fn best<T: Copy>(rounds: &[T], better: impl Fn(T, T) -> bool) -> T {
    let mut best = rounds[0];
    for r in &rounds[1..] {
        if better(*r, best) {
            best = *r;
        }
    }
    best
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--only NAME` runs one scenario: tell, ask, spawn, children, ring or fan-in.
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let run = move |name: &str| only.as_deref().is_none_or(|o| o == name);
    let div = if quick { 10 } else { 1 };
    let scale = Scale {
        tells: 2_000_000 / div,
        asks: 200_000 / div as usize,
        spawns: 100_000 / div as usize,
        ring: 1_000,
        hops: 1_000_000 / div,
        fan_senders: 4,
        fan_each: 500_000 / div,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // By default the driver (the code sending the tells and asks) runs on the
    // main thread through `block_on`, outside the two workers, as the peer
    // figures were measured. `--on-worker` runs it as a task on a worker
    // instead, like code inside an actor system; both sides get the same.
    let on_worker = args.iter().any(|a| a == "--on-worker");
    let driver = async move {
        let system = ActorSystem::new("bench");
        let rounds = 3;
        let place = if on_worker { "on a worker" } else { "on the main thread" };
        println!("footlight local runtime benchmarks (2 worker threads, driver {place}, best of {rounds} rounds)\n");
        println!("{:<34} {:>16} {:>16} {:>8}", "scenario", "footlight", "raw tokio", "ratio");

        if run("tell") {
            let mut ours = Vec::new();
            let mut unbounded = Vec::new();
            let mut raw = Vec::new();
            for _ in 0..rounds {
                raw.push(raw_tell_throughput(scale.tells).await);
                ours.push(tell_throughput(&system, scale.tells, Mailbox::default()).await);
                unbounded.push(tell_throughput(&system, scale.tells, Mailbox::unbounded()).await);
            }
            let (o, u, r) = (best(&ours, |a, b| a > b), best(&unbounded, |a, b| a > b), best(&raw, |a, b| a > b));
            println!(
                "{:<34} {:>12.2} M/s {:>12.2} M/s {:>7.2}x",
                "tell (bounded 1024 mailbox)",
                o / 1e6,
                r / 1e6,
                o / r
            );
            println!("{:<34} {:>12.2} M/s {:>12.2} M/s {:>7.2}x", "tell (unbounded mailbox)", u / 1e6, r / 1e6, u / r);
        }

        if run("ask") {
            let ((om, op), (rm, rp)) = ask_latency(&system, scale.asks).await;
            println!("{:<34} {:>13.2} us {:>13.2} us {:>7.2}x", "ask mean latency", om, rm, om / rm);
            println!("{:<34} {:>13.2} us {:>13.2} us {:>7.2}x", "ask p99 latency", op, rp, op / rp);
        }

        if run("spawn") {
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                // Footlight first: its first round sees a fresh heap, so its
                // RSS growth is not hidden by pages the baseline freed.
                ours.push(spawn_cycle(&system, scale.spawns).await);
                raw.push(raw_spawn_cycle(scale.spawns).await);
            }
            let orate = best(&ours, |a, b| a.0 > b.0).0;
            let rrate = best(&raw, |a, b| a.0 > b.0).0;
            println!(
                "{:<34} {:>12.0} k/s {:>12.0} k/s {:>7.2}x",
                "spawn + stop + wait",
                orate / 1e3,
                rrate / 1e3,
                orate / rrate
            );
            println!(
                "{:<34} {:>14.0} B {:>14.0} B {:>7.2}x",
                "heap per idle actor",
                ours[0].1,
                raw[0].1,
                ours[0].1 / raw[0].1.max(1.0)
            );
            println!("{:<34} {:>14.0} B {:>16} {:>8}", "RSS per idle actor (first round)", ours[0].2, "-", "-");
        }

        if run("children") {
            let (mut sup, mut plain) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain.push(children_cycle(&system, scale.spawns, false).await);
                sup.push(children_cycle(&system, scale.spawns, true).await);
            }
            let (s, p) = (best(&sup, |a, b| a.0 > b.0), best(&plain, |a, b| a.0 > b.0));
            println!(
                "{:<34} {:>12.0} k/s {:>12.0} k/s {:>7.2}x",
                "start_child (vs spawn), awaited",
                s.0 / 1e3,
                p.0 / 1e3,
                s.0 / p.0
            );
            println!(
                "{:<34} {:>14.0} B {:>14.0} B {:>7.2}x",
                "heap per child (vs spawn)",
                s.1,
                p.1,
                s.1 / p.1.max(1.0)
            );
        }

        if run("ring") {
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                raw.push(raw_ring(scale.ring, scale.hops).await);
                ours.push(ring(&system, scale.ring, scale.hops).await);
            }
            let (o, r) = (best(&ours, |a, b| a > b), best(&raw, |a, b| a > b));
            println!("{:<34} {:>12.2} M/s {:>12.2} M/s {:>7.2}x", "ring (1000 actors, hops)", o / 1e6, r / 1e6, o / r);
        }

        if run("fan-in") {
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                raw.push(raw_fan_in(scale.fan_senders, scale.fan_each).await);
                ours.push(fan_in(&system, scale.fan_senders, scale.fan_each).await);
            }
            let (o, r) = (best(&ours, |a, b| a > b), best(&raw, |a, b| a > b));
            println!("{:<34} {:>12.2} M/s {:>12.2} M/s {:>7.2}x", "fan-in (4 senders)", o / 1e6, r / 1e6, o / r);
        }

        system.shutdown().await;
    };
    if on_worker {
        rt.block_on(async move { tokio::spawn(driver).await.expect("benchmark driver") });
    } else {
        rt.block_on(driver);
    }
}
