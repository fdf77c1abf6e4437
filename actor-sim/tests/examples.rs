//! The examples' services under deterministic simulation: the code the
//! example binaries run (their `app.rs`), on every node of a simulated
//! cluster, with faults drawn from each seed, held to what each example
//! promises. A failing seed prints what went wrong and its trace's hash;
//! `cargo test -p actor-sim --test examples` replays it (a run is a
//! function of its seed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../examples/chat/app.rs"]
mod chat;
#[path = "../../examples/kv/app.rs"]
mod kv;
#[path = "../../examples/work_queue/app.rs"]
mod work_queue;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_sim::{Event, Phase, Sim, SimError, Trace, World, check};

/// The most real time one seed may take.
const WALL_LIMIT: Duration = Duration::from_secs(120);

/// Seeds each scenario runs (three nodes, every kind of fault).
const SEEDS: std::ops::Range<u64> = 0..100;

/// Runs `scenario` on every seed of [`SEEDS`]; a run's problems are what
/// `problems` finds in its output and trace, and what the general checker
/// finds. Panics listing every failing seed; returns the outputs, by seed.
fn sweep<F, Fut, R>(scenario: F, problems: impl Fn(&R, &Trace) -> Vec<String>) -> Vec<R>
where
    F: FnOnce(World) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    let mut failed = Vec::new();
    let mut outputs = Vec::new();
    for seed in SEEDS {
        match Sim::new(seed).nodes(3).run_within(WALL_LIMIT, scenario) {
            Ok(report) => {
                let mut found = problems(&report.output, &report.trace);
                found.extend(check(&report.trace).iter().map(ToString::to_string));
                if !found.is_empty() {
                    failed.push(format!(
                        "seed {seed}:\n  {}\n  trace hash {:016x}",
                        found.join("\n  "),
                        report.trace.hash()
                    ));
                }
                outputs.push(report.output);
            }
            Err(e) => {
                failed.push(format!("seed {seed}: {e}"));
                if matches!(e, SimError::Stalled(_)) {
                    // Its thread still spins: the seeds after it would crawl.
                    break;
                }
            }
        }
    }
    assert!(failed.is_empty(), "{} seeds failed:\n{}", failed.len(), failed.join("\n"));
    outputs
}

/// What the kv scenario saw: every write a node acknowledged (each to a
/// key of its own), and at the end what each of those keys reads back.
#[derive(Default, Debug)]
struct KvLog {
    /// Writes made.
    made: u64,
    /// Acknowledged writes: key → value.
    acked: BTreeMap<String, String>,
    /// What a live node read at the end, per acknowledged key.
    read: BTreeMap<String, Option<String>>,
}

/// Every run of every node serves its kv shard and, while the faults play,
/// writes a new key every 150 ms (virtual); at the end, with the cluster
/// healed and settled, every acknowledged key is read back from one live
/// node.
async fn kv_scenario(world: World) -> KvLog {
    let log = Arc::new(Mutex::new(KvLog::default()));
    let writers = log.clone();
    world.each_node(move |world, node| {
        if let Err(e) = kv::serve(&node) {
            return world.note(format!("{}: serve: {e}", node.id()));
        }
        let log = writers.clone();
        tokio::spawn(async move {
            let (me, run) = (node.id().to_owned(), node.run());
            let mut i = 0u64;
            while world.phase() < Phase::Settling && world.is_live(&me, run) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                i += 1;
                let (key, value) = (format!("{me}-{run}-{i}"), format!("v{i}"));
                log.lock().unwrap().made += 1;
                let put = tokio::time::timeout(Duration::from_secs(5), kv::put(&node, &key, &value)).await;
                if let Ok(Ok(_)) = put {
                    world.note(format!("{me}/{run} acknowledged {key}"));
                    log.lock().unwrap().acked.insert(key, value);
                }
            }
        });
    });
    world.reached(Phase::Done).await;
    let keys: Vec<String> = log.lock().unwrap().acked.keys().cloned().collect();
    if let Some(node) = world.nodes().first() {
        for key in keys {
            let got = tokio::time::timeout(Duration::from_secs(5), kv::get(node, &key)).await;
            log.lock().unwrap().read.insert(key, got.ok().and_then(Result::ok).flatten());
        }
    }
    // The hooks keep their clones of the log: take what it holds.
    std::mem::take(&mut *log.lock().unwrap())
}

/// An acknowledged write is never lost: at the end every acknowledged key
/// reads back its value.
fn kv_violations(log: &KvLog) -> Vec<String> {
    log.acked
        .iter()
        .filter(|(key, value)| log.read.get(*key).and_then(Option::as_ref) != Some(*value))
        .map(|(key, value)| format!("{key}={value} was acknowledged; the end reads {:?}", log.read.get(key)))
        .collect()
}

#[test]
fn kv_keeps_every_acknowledged_write_under_faults() {
    let logs = sweep(kv_scenario, |log, _| kv_violations(log));
    for (seed, log) in logs.iter().enumerate() {
        assert!(log.acked.len() > 100, "seed {seed}: {} of {} writes acknowledged", log.acked.len(), log.made);
    }
    let refused: u64 = logs.iter().map(|log| log.made - log.acked.len() as u64).sum();
    assert!(refused > 0, "the faults refused no write: they did not reach the store");
}

/// What the work_queue scenario saw: each batch a dispatcher finished,
/// and the batch run once the cluster had settled.
#[derive(Default, Debug)]
struct WorkLog {
    /// Batches that finished during the faults: (first id, report).
    batches: Vec<(u64, Result<work_queue::Report, String>)>,
    /// The batch run after the heal, if it ended in time.
    last: Option<Result<work_queue::Report, String>>,
}

/// Jobs per batch.
const BATCH: u64 = 20;

/// Every run of every node runs a pool of two supervised workers; every
/// run of `n1` dispatches batches of jobs (some of them poison, crashing
/// their worker) one after another while the faults play; once the cluster
/// has settled, one more batch runs from a live node.
async fn work_queue_scenario(world: World) -> WorkLog {
    let log = Arc::new(Mutex::new(WorkLog::default()));
    let batches = Arc::new(AtomicU64::new(0));
    let dispatchers = (log.clone(), batches.clone());
    world.each_node(move |world, node| {
        work_queue::start_pool(&node, 2);
        if node.id() != "n1" {
            return;
        }
        let (log, batches) = dispatchers.clone();
        tokio::spawn(async move {
            let (me, run) = (node.id().to_owned(), node.run());
            while world.phase() < Phase::Settling && world.is_live(&me, run) {
                let first = batches.fetch_add(1, Ordering::Relaxed) * 1000;
                let batch = work_queue::run_jobs(&node, first..first + BATCH, 20, |_| {});
                let Ok(report) = tokio::time::timeout(Duration::from_secs(60), batch).await else { continue };
                if world.is_live(&me, run) {
                    log.lock().unwrap().batches.push((first, report));
                }
            }
        });
    });
    world.reached(Phase::Settling).await;
    // The heal, restarts and the resolver's decisions take their time.
    tokio::time::sleep(Duration::from_secs(20)).await;
    if let Some(node) = world.nodes().first() {
        let first = batches.fetch_add(1, Ordering::Relaxed) * 1000;
        let batch = work_queue::run_jobs(node, first..first + BATCH, 20, |_| {});
        let last = tokio::time::timeout(Duration::from_secs(9), batch).await.ok();
        log.lock().unwrap().last = last;
    }
    world.reached(Phase::Done).await;
    std::mem::take(&mut *log.lock().unwrap())
}

/// Every batch that finished had each job completed, with the right
/// result; the batch after the heal finished.
fn work_queue_violations(log: &WorkLog) -> Vec<String> {
    let mut out = Vec::new();
    let finished = log.batches.iter().map(|(first, r)| (Some(*first), r));
    for (first, report) in finished.chain(log.last.iter().map(|r| (None, r))) {
        let which = first.map_or("the batch after the heal".to_owned(), |f| format!("batch {f}"));
        match report {
            Ok(r) if r.completed == BATCH && r.wrong == 0 => {}
            Ok(r) => out.push(format!("{which}: {} of {BATCH} jobs completed, {} wrong", r.completed, r.wrong)),
            Err(e) => out.push(format!("{which}: {e}")),
        }
    }
    if log.last.is_none() {
        out.push("the batch after the heal did not finish within 9 s".to_owned());
    }
    out
}

#[test]
fn work_queue_completes_every_job_of_every_batch_under_faults() {
    let logs = sweep(work_queue_scenario, |log, _| work_queue_violations(log));
    let batches: usize = logs.iter().map(|log| log.batches.len()).sum();
    assert!(batches > 100, "{batches} batches finished during the faults");
}

/// What the chat scenario saw: the lines each user received, by user
/// (`<node>/<run>`).
#[derive(Default, Debug)]
struct ChatLog {
    /// Lines received, per user, as the user's inbox printed them.
    heard: BTreeMap<String, Vec<String>>,
    /// The users whose final line went out (after the heal).
    finals: Vec<String>,
}

/// Every run of every node has a user in room `lobby` saying numbered
/// lines every 300 ms while the faults play; once the cluster has settled
/// every user says a line (which rejoins the room where it had moved), and
/// then its final line.
async fn chat_scenario(world: World) -> ChatLog {
    let log = Arc::new(Mutex::new(ChatLog::default()));
    let users = log.clone();
    world.each_node(move |world, node| {
        if let Err(e) = chat::setup(&node) {
            return world.note(format!("{}: chat setup: {e}", node.id()));
        }
        let log = users.clone();
        let user = format!("{}/{}", node.id(), node.run());
        let (mut client, mut lines) = chat::Client::new(&node, &user);
        let heard = (log.clone(), user.clone());
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                heard.0.lock().unwrap().heard.entry(heard.1.clone()).or_default().push(line);
            }
        });
        tokio::spawn(async move {
            let (me, run) = (node.id().to_owned(), node.run());
            while world.is_live(&me, run) && client.join("lobby").await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut i = 0;
            while world.phase() < Phase::Settling && world.is_live(&me, run) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                i += 1;
                let _ = client.say(&format!("{user} {i}")).await;
            }
            world.reached(Phase::Settling).await;
            tokio::time::sleep(Duration::from_secs(15)).await;
            if !world.is_live(&me, run) {
                return;
            }
            let _ = client.say(&format!("{user} settled")).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            if client.say(&format!("{user} final")).await.is_ok() {
                log.lock().unwrap().finals.push(user);
            }
        });
    });
    world.reached(Phase::Done).await;
    std::mem::take(&mut *log.lock().unwrap())
}

/// No user hears a line twice; every user live at the end heard every
/// other live user's final line.
fn chat_violations(log: &ChatLog, live: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (user, lines) in &log.heard {
        let mut seen = std::collections::BTreeSet::new();
        for line in lines.iter().filter(|l| !l.contains("] *: ")) {
            if !seen.insert(line) {
                out.push(format!("{user} heard {line:?} twice"));
            }
        }
    }
    for user in live {
        let heard = log.heard.get(user).map(Vec::as_slice).unwrap_or_default();
        for other in live.iter().filter(|o| *o != user) {
            let final_line = format!("[lobby] {other}: {other} final");
            if !heard.contains(&final_line) {
                out.push(format!("{user} never heard {other}'s final line"));
            }
        }
    }
    if live.iter().any(|u| !log.finals.contains(u)) {
        out.push(format!("not every live user said its final line: {:?} of {live:?}", log.finals));
    }
    out
}

#[test]
fn chat_delivers_each_line_once_and_every_user_hears_the_others_after_the_heal() {
    let logs = sweep(chat_scenario, |log, trace| {
        let live: Vec<String> = trace
            .entries()
            .iter()
            .filter_map(|e| match &e.event {
                Event::View { node, run, .. } => Some(format!("{node}/{run}")),
                _ => None,
            })
            .collect();
        chat_violations(log, &live)
    });
    let heard: usize = logs.iter().flat_map(|log| log.heard.values()).map(Vec::len).sum();
    let finals: usize = logs.iter().map(|log| log.finals.len()).sum();
    assert!(heard > 10_000 && finals > 100, "{heard} lines heard, {finals} final lines said");
}
