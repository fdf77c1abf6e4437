//! Local runtime benchmarks, each beside a raw-Tokio baseline measured in the
//! same process (a task + `mpsc::unbounded_channel` per actor, `oneshot`
//! replies), on a 2-worker multi-thread runtime.
//!
//! Run: `cargo bench -p actor-core --bench runtime` (add `-- --quick` for a
//! tenth of the work, `-- --only NAME` for one scenario, `-- --processes N`
//! for the number of fresh processes, `-- --outside` to drive the load from
//! the main thread instead of a worker task, which flatters the ratio). The
//! load is driven from a task on a worker, as actor code runs, with the I/O
//! driver on. Each scenario checks its own count; each process measures
//! once, and the table gives the medians over the processes, with the range
//! of the ratio across them (the spawn rate is the median of three
//! alternating rounds within a process, after a first round that grew the
//! heap: see the scenario). `scripts/instructions.sh` counts instructions
//! per ask, tell, ring hop and spawn (with `--ops`, under callgrind), which
//! noise does not move.
#![allow(clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
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
/// Allocations made (for `--ops`: allocations per operation).
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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

/// The raw actor's handler: counts, or answers the count.
fn raw_handle(n: &mut u64, msg: RawMsg) {
    match msg {
        RawMsg::Inc => *n += 1,
        RawMsg::Get(reply) => {
            let _ = reply.send(*n);
        }
    }
}

fn raw_counter() -> mpsc::UnboundedSender<RawMsg> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(msg) = rx.recv().await {
            raw_handle(&mut n, msg);
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

/// The raw baseline for a bounded mailbox: `mpsc::channel(1024)`, the
/// sender waiting for room as a bounded mailbox's sender does.
async fn raw_bounded_tell_throughput(n: u64) -> f64 {
    let (tx, mut rx) = mpsc::channel::<RawMsg>(1024);
    tokio::spawn(async move {
        let mut count = 0u64;
        while let Some(msg) = rx.recv().await {
            raw_handle(&mut count, msg);
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        tx.send(RawMsg::Inc).await.expect("alive");
    }
    let (reply, got) = oneshot::channel();
    tx.send(RawMsg::Get(reply)).await.expect("alive");
    let got = got.await.expect("raw reply");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, n, "raw bounded tell count");
    n as f64 / secs
}

/// Sequential asks, Footlight and raw interleaved in chunks of 5,000 so both
/// see the same machine noise. Returns ((mean, p99) ours, (mean, p99) raw) in
/// microseconds.
async fn ask_latency(system: &ActorSystem, n: usize) -> ((f64, f64, f64), (f64, f64, f64)) {
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

/// Mean, p50 and p99, in microseconds.
fn summarize(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)].as_secs_f64() * 1e6;
    (mean * 1e6, at(50), at(99))
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

/// One scenario's figure: Footlight's and the baseline's (NaN: none).
struct Figure {
    label: &'static str,
    unit: &'static str,
    ours: f64,
    raw: f64,
}

/// What one process measured, a round of each scenario.
async fn measure(scale: &Scale, run: impl Fn(&str) -> bool) -> Vec<Figure> {
    let system = ActorSystem::new("bench");
    let mut out = Vec::new();
    let mut fig = |label, unit, ours, raw| out.push(Figure { label, unit, ours, raw });
    if run("tell") {
        let raw = raw_tell_throughput(scale.tells).await;
        let raw_bounded = raw_bounded_tell_throughput(scale.tells).await;
        let ours = tell_throughput(&system, scale.tells, Mailbox::default()).await;
        let unbounded = tell_throughput(&system, scale.tells, Mailbox::unbounded()).await;
        fig("tell (bounded 1024 mailbox)", "M/s", ours / 1e6, raw / 1e6);
        fig("  same, vs a bounded raw channel", "M/s", ours / 1e6, raw_bounded / 1e6);
        fig("tell (unbounded mailbox)", "M/s", unbounded / 1e6, raw / 1e6);
    }
    if run("ask") {
        let ((om, o50, op), (rm, r50, rp)) = ask_latency(&system, scale.asks).await;
        fig("ask mean latency", "us", om, rm);
        fig("ask p50 latency", "us", o50, r50);
        fig("ask p99 latency", "us", op, rp);
    }
    if run("spawn") {
        // Footlight first: it sees a fresh heap, so its RSS growth is not
        // hidden by pages the baseline freed.
        let first = spawn_cycle(&system, scale.spawns).await;
        // The rates come from later rounds, alternating, on the heap the
        // first round grew: whichever ran first on a fresh heap would pay
        // the page faults of growing it (about half its time), and the
        // other not. Median of three rounds each.
        let (mut ours, mut raw, mut raw_heap) = (Vec::new(), Vec::new(), 0.0);
        for _ in 0..3 {
            let r = raw_spawn_cycle(scale.spawns).await;
            raw_heap = r.1;
            raw.push(r.0);
            ours.push(spawn_cycle(&system, scale.spawns).await.0);
        }
        fig("spawn + stop + wait", "k/s", median(&mut ours) / 1e3, median(&mut raw) / 1e3);
        fig("heap per idle actor", "B", first.1, raw_heap);
        fig("RSS per idle actor", "B", first.2, f64::NAN);
    }
    if run("children") {
        let plain = children_cycle(&system, scale.spawns, false).await;
        let sup = children_cycle(&system, scale.spawns, true).await;
        fig("start_child (vs spawn), awaited", "k/s", sup.0 / 1e3, plain.0 / 1e3);
        fig("heap per child (vs spawn)", "B", sup.1, plain.1);
    }
    if run("ring") {
        let raw = raw_ring(scale.ring, scale.hops).await;
        let ours = ring(&system, scale.ring, scale.hops).await;
        fig("ring (1000 actors, hops)", "M/s", ours / 1e6, raw / 1e6);
    }
    if run("fan-in") {
        let raw = raw_fan_in(scale.fan_senders, scale.fan_each).await;
        let ours = fan_in(&system, scale.fan_senders, scale.fan_each).await;
        fig("fan-in (4 senders)", "M/s", ours / 1e6, raw / 1e6);
    }
    system.shutdown().await;
    out
}

/// `--ops WHAT N`: only `N` operations of one kind and nothing else, for
/// counting instructions under `valgrind --tool=callgrind` (see
/// `scripts/instructions.sh`, which subtracts two counts so that set-up
/// cancels out): `ask`, `ask-raw`, `tell`, `tell-raw` (2 workers, driven from
/// a task on a worker, as the headline figures).
async fn ops(what: &str, n: u64) {
    let system = ActorSystem::new("bench");
    let counter = system.spawn(Counter(0));
    let raw = raw_counter();
    // Warm up both (first-use allocations), then count.
    black_box(counter.ask(Get).await.expect("reply"));
    black_box(raw_get(&raw).await);
    let allocs = ALLOCS.load(Ordering::Relaxed);
    match what {
        "ask" => {
            for _ in 0..n {
                black_box(counter.ask(Get).await.expect("reply"));
            }
        }
        "ask-raw" => {
            for _ in 0..n {
                black_box(raw_get(&raw).await);
            }
        }
        "tell" => {
            for _ in 0..n {
                counter.tell(Inc).await.expect("alive");
            }
            assert_eq!(counter.ask(Get).await.expect("count"), n);
        }
        "tell-raw" => {
            for _ in 0..n {
                raw.send(RawMsg::Inc).expect("alive");
            }
            assert_eq!(raw_get(&raw).await, n);
        }
        "ring" => {
            black_box(ring(&system, 100, n).await);
        }
        "ring-raw" => {
            black_box(raw_ring(100, n).await);
        }
        "spawn" => {
            let fresh = ActorSystem::new("spawn");
            black_box(spawn_cycle(&fresh, n as usize).await);
        }
        "spawn-raw" => {
            black_box(raw_spawn_cycle(n as usize).await);
        }
        other => panic!("--ops takes ask, ask-raw, tell, tell-raw, ring, ring-raw, spawn or spawn-raw, not {other}"),
    }
    let per_op = (ALLOCS.load(Ordering::Relaxed) - allocs) as f64 / n as f64;
    eprintln!("{what}: {per_op:.2} allocations per operation");
    system.shutdown().await;
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    // `--only NAME` runs one scenario: tell, ask, spawn, children, ring or fan-in.
    let only = value("--only");
    let run = move |name: &str| only.as_deref().is_none_or(|o| o == name);
    let div = if flag("--quick") { 10 } else { 1 };
    let scale = Scale {
        tells: 2_000_000 / div,
        asks: 200_000 / div as usize,
        spawns: 100_000 / div as usize,
        ring: 1_000,
        hops: 1_000_000 / div,
        fan_senders: 4,
        fan_each: 500_000 / div,
    };
    // The driver (the code sending the tells and asks) runs as a task on a
    // worker, where actor code runs. `--outside` runs it on the main thread
    // through `block_on` instead, outside the two workers, where every
    // operation of the baseline pays a cross-thread wake-up: it flatters
    // the ratio, and is shown only labelled as such.
    let outside = flag("--outside");
    // Time every handler into the (recorder-less) histogram: the cost of
    // turning handler times on.
    if flag("--handler-times") {
        actor_core::stats::set_handler_times(true);
    }
    if let Some(what) = value("--ops") {
        let n: u64 = args
            .iter()
            .position(|a| *a == what)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move { tokio::spawn(async move { ops(&what, n).await }).await.expect("driver") });
        return;
    }
    if flag("--child") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let figures = if outside {
            rt.block_on(measure(&scale, run))
        } else {
            rt.block_on(async move { tokio::spawn(async move { measure(&scale, run).await }).await.expect("driver") })
        };
        for f in figures {
            println!("FIGURE\t{}\t{}\t{}\t{}", f.label, f.unit, f.ours, f.raw);
        }
        return;
    }
    // Each process measures once; the figures are the medians over fresh
    // processes (`--processes N`, default 3), so that one process's heap,
    // scheduling or luck does not decide them.
    let processes: usize = value("--processes").and_then(|n| n.parse().ok()).unwrap_or(3).max(1);
    let place = if outside {
        "driven from the main thread (--outside: flatters the ratio)"
    } else {
        "driven from a task on a worker"
    };
    println!(
        "footlight local runtime benchmarks: 2 worker threads, I/O driver on, {place}; median of {processes} fresh processes (ratio range across them)\n"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut runs: Vec<Vec<(String, String, f64, f64)>> = Vec::new();
    for _ in 0..processes {
        let mut child_args: Vec<String> = args.iter().filter(|a| *a != "--bench").cloned().collect();
        child_args.push("--child".into());
        let out = std::process::Command::new(&exe).args(&child_args).output().expect("run a measuring process");
        assert!(out.status.success(), "a measuring process failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        runs.push(
            text.lines()
                .filter_map(|l| {
                    let mut p = l.strip_prefix("FIGURE\t")?.split('\t');
                    let (label, unit) = (p.next()?.to_owned(), p.next()?.to_owned());
                    Some((label, unit, p.next()?.parse().ok()?, p.next()?.parse().ok()?))
                })
                .collect(),
        );
    }
    println!("{:<34} {:>14} {:>14} {:>8} {:>15}", "scenario", "footlight", "raw tokio", "ratio", "ratio range");
    for (i, (label, unit, _, _)) in runs[0].iter().enumerate() {
        let mut ours: Vec<f64> = runs.iter().map(|r| r[i].2).collect();
        let mut raw: Vec<f64> = runs.iter().map(|r| r[i].3).collect();
        let mut ratios: Vec<f64> = runs.iter().map(|r| r[i].2 / r[i].3).collect();
        let (o, r, q) = (median(&mut ours), median(&mut raw), median(&mut ratios));
        if r.is_nan() {
            println!("{label:<34} {:>10.2} {unit:<3} {:>14} {:>8} {:>15}", o, "-", "-", "-");
        } else {
            let range = format!("{:.2}-{:.2}", ratios[0], ratios[ratios.len() - 1]);
            println!("{label:<34} {:>10.2} {unit:<3} {:>10.2} {unit:<3} {:>7.2}x {range:>15}", o, r, q);
        }
    }
}
