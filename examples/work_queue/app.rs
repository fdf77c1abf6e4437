//! The work_queue service, on reliable delivery's work pulling: every node
//! runs a supervised pool of `Worker`s, each a reliable worker of the group
//! `jobs`; a dispatcher on any node hands jobs to them through a
//! [`WorkProducer`], each job to one worker with room in its window.
//!
//! Nothing here resubmits a job by hand:
//! - a job that makes its worker panic comes again (the consumer did not
//!   acknowledge it), to the same worker once its supervisor restarted it;
//! - the jobs a lost node's workers had not acknowledged go to the other
//!   workers once the node is declared down; one that had already run there
//!   runs again, with the same key (jobs are idempotent).
//!
//! Workers report each finished job, with its key, to the batch's
//! `Collector` on the dispatcher's node, and acknowledge the job only once
//! the report was answered (so every acknowledged job has been counted);
//! the report counts distinct jobs completed, jobs reported twice, crashes
//! and reassignments. Job ids come from the `Dispenser`, a cluster
//! singleton: dispatchers on several nodes never hand out the same id.
//! Shared by the example binary, the flagship demo and the in-process test.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footlight::cluster::Singleton;
use footlight::cluster::delivery::Delivered;
use footlight::prelude::*;
use footlight::{Restart, Supervisor};

/// The process group of all worker actors in the cluster (for counting).
pub const GROUP: &str = "workers";
/// The reliable workers' group that dispatchers hand jobs to.
pub const JOBS: &str = "jobs";
/// Jobs in flight per worker: a worker gets more only as it finishes some.
pub const WINDOW: u32 = 4;

/// A unit of work.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Job {
    /// The job's id.
    pub id: u64,
    /// How long the job takes.
    pub millis: u64,
}

/// Whether job `id` is poison: it crashes the first worker of each node
/// that runs it.
pub fn poison(id: u64) -> bool {
    id % 50 == 7
}

/// Runs jobs, one at a time.
pub struct Worker {
    node: Cluster,
    /// Poison jobs that already crashed a worker of this node (the pool's).
    crashed: Arc<Mutex<HashSet<u64>>>,
    /// Whether this worker slot is a reliable worker yet: once, as its ref
    /// stays the same across restarts.
    registered: Arc<AtomicBool>,
    /// The batches' collectors, by work producer id.
    collectors: HashMap<String, ActorRef<Collector>>,
}

impl Actor for Worker {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // Also after a restart (idempotent): the ref stays the same.
        self.node.join(GROUP, ctx.myself())?;
        if !self.registered.load(Ordering::SeqCst) {
            self.node.reliable_worker::<Job>(JOBS, ctx.myself().recipient(), WINDOW)?;
            self.registered.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Handler<Delivered<Job>> for Worker {
    async fn handle(&mut self, delivered: Delivered<Job>, _ctx: &mut Context<Self>) {
        let job = delivered.msg;
        let me = self.node.id().to_owned();
        tokio::time::sleep(Duration::from_millis(job.millis)).await;
        // Not acknowledged (a panic): the job comes again.
        let Some(collector) = self.collector(&delivered.producer).await else {
            panic!("job {}: its batch's collector is not reachable; it comes again", job.id);
        };
        let first_crash = poison(job.id) && self.crashed.lock().unwrap_or_else(|p| p.into_inner()).insert(job.id);
        if first_crash {
            let _ = collector.ask(Crashed { job: job.id, by: me }).timeout(REPORT_TIMEOUT).await;
            panic!("job {} is poison the first time", job.id);
        }
        // Reported, and the report answered, before the job is acknowledged
        // (when this returns): an acknowledged job has been reported.
        let done = Done { key: delivered.seq, job: job.id, by: me, result: job.id.wrapping_mul(job.id) };
        if let Err(e) = collector.ask(done).timeout(REPORT_TIMEOUT).await {
            panic!("job {}: not reported ({e}); it comes again", job.id);
        }
    }
}

impl Worker {
    /// The collector of the batch a work producer runs (looked up by name,
    /// waiting a little for the name to spread).
    async fn collector(&mut self, producer: &str) -> Option<ActorRef<Collector>> {
        self.collectors.retain(|_, c| c.is_alive());
        if let Some(found) = self.collectors.get(producer) {
            return Some(found.clone());
        }
        let name = collector_name(producer);
        for _ in 0..50 {
            if let Ok(found) = self.node.lookup::<Collector>(&name).await {
                self.collectors.insert(producer.to_owned(), found.clone());
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl RemoteActor for Worker {
    fn remote_messages(_: &mut RemoteMessages<Self>) {}
}

/// Starts a pool of `workers` supervised workers on `node`: a worker that
/// panics is restarted in place (up to 1000 times in 10 s).
pub fn start_pool(node: &Cluster, workers: usize) -> ActorRef<Supervisor> {
    let crashed = Arc::new(Mutex::new(HashSet::new()));
    let mut supervisor = Supervisor::one_for_one().max_restarts(1000, Duration::from_secs(10));
    for i in 0..workers {
        let (node, crashed, registered) = (node.clone(), crashed.clone(), Arc::new(AtomicBool::new(false)));
        supervisor = supervisor.child(format!("worker-{i}"), Restart::Permanent, move || Worker {
            node: node.clone(),
            crashed: crashed.clone(),
            registered: registered.clone(),
            collectors: HashMap::new(),
        });
    }
    node.system().spawn(supervisor)
}

/// How long a worker waits for its report to be taken.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A finished job, as a worker reports it (asked: the answer says it was
/// counted).
#[derive(Message, Serialize, Deserialize, Debug)]
#[message(reply = (), remote = "work.Done")]
pub struct Done {
    /// The job's key from the work producer (the same on every delivery).
    pub key: u64,
    /// The job's id.
    pub job: u64,
    /// The node whose worker ran it.
    pub by: String,
    /// The job's result (its id squared).
    pub result: u64,
}

/// A poison job crashed a worker (it comes again).
#[derive(Message, Serialize, Deserialize, Debug)]
#[message(reply = (), remote = "work.Crashed")]
pub struct Crashed {
    /// The job's id.
    pub job: u64,
    /// The node whose worker crashed.
    pub by: String,
}

/// Collects one batch's reports, on the dispatcher's node.
pub struct Collector {
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    report: Report,
    seen: HashSet<u64>,
    progress: Box<dyn Fn(u64) + Send>,
}

impl Actor for Collector {}

impl Handler<Done> for Collector {
    async fn handle(&mut self, done: Done, _ctx: &mut Context<Self>) {
        if done.result != done.job.wrapping_mul(done.job) {
            self.report.wrong += 1;
            return;
        }
        self.report.handled += 1;
        if self.seen.insert(done.job) {
            *self.report.by_node.entry(done.by).or_default() += 1;
            let sent = self.sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&done.job);
            self.report.latencies.push(sent.map(|t| t.elapsed()).unwrap_or_default());
            self.report.completed += 1;
            (self.progress)(self.report.completed);
        }
    }
}

impl Handler<Crashed> for Collector {
    async fn handle(&mut self, _: Crashed, _ctx: &mut Context<Self>) {
        self.report.retried_after_panic += 1;
    }
}

/// The report so far (local).
struct Snapshot;

impl Message for Snapshot {
    type Reply = Report;
}

impl Handler<Snapshot> for Collector {
    async fn handle(&mut self, _: Snapshot, _ctx: &mut Context<Self>) -> Report {
        self.report.clone()
    }
}

impl RemoteActor for Collector {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Done>().add::<Crashed>();
    }
}

/// The cluster-wide name of the collector of work producer `producer`.
fn collector_name(producer: &str) -> String {
    format!("work.collector.{producer}")
}

/// Hands out job ids, each once: one instance in the cluster (a singleton
/// on the oldest member), reached from every node.
#[derive(Default)]
pub struct Dispenser {
    next: u64,
    node: String,
}

impl Actor for Dispenser {}

/// Reserves this many consecutive job ids; the reply is the first one and
/// the node the dispenser runs on.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = (u64, String), remote = "work.Reserve")]
pub struct Reserve(pub u64);

impl Handler<Reserve> for Dispenser {
    async fn handle(&mut self, Reserve(n): Reserve, _ctx: &mut Context<Self>) -> (u64, String) {
        let first = self.next;
        self.next = self.next.saturating_add(n);
        (first, self.node.clone())
    }
}

impl RemoteActor for Dispenser {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Reserve>();
    }
}

/// This node's handle on the dispenser singleton (every node starts it).
/// An instance starts counting at the wall-clock time in milliseconds times
/// 1000, so an instance that replaces another (its node left or was lost)
/// never repeats an id without any state passed between them, as long as
/// fewer than 1000 ids a millisecond were handed out on average and the
/// nodes' clocks agree to within the time between two moves.
pub fn dispenser(node: &Cluster) -> Result<Singleton<Dispenser>, ClusterError> {
    let id = node.id().to_owned();
    node.singleton("job-ids", move || {
        let millis =
            footlight::entropy::system_time().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Dispenser { next: u64::try_from(millis).unwrap_or(u64::MAX / 1000) * 1000, node: id.clone() }
    })
    .start()
}

/// Waits until the group holds `n` workers as seen from `node`.
pub async fn wait_for_workers(node: &Cluster, n: usize, within: Duration) -> bool {
    let wait = async {
        while node.group::<Worker>(GROUP).await.len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

/// What a batch of jobs did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Jobs submitted.
    pub submitted: u64,
    /// Distinct jobs completed (reported by a worker with a correct result).
    pub completed: u64,
    /// Reports of a finished job: more than `completed` when a job ran twice
    /// and both runs were reported (its first worker's node was lost after
    /// reporting, before the job was acknowledged).
    pub handled: u64,
    /// Reports with a wrong result.
    pub wrong: u64,
    /// Crashes of a worker on a poison job (the job came again).
    pub retried_after_panic: u64,
    /// Jobs handed to another worker after theirs was lost.
    pub reassigned: u64,
    /// Jobs completed per node.
    pub by_node: BTreeMap<String, u64>,
    /// Time from a job's submission to its first completion, per job.
    pub latencies: Vec<Duration>,
}

impl Report {
    /// A latency percentile (`q` in 0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    }

    /// Jobs reported twice (with the same key).
    pub fn duplicates(&self) -> u64 {
        self.handled - self.completed
    }
}

/// Runs jobs `ids`, each taking `millis`, over the cluster's workers
/// through a work producer of its own; `progress` is told the count of
/// completed jobs as it grows. Returns once every job was acknowledged.
pub async fn run_jobs(
    node: &Cluster,
    ids: std::ops::Range<u64>,
    millis: u64,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<Report, String> {
    // One producer (and collector) per batch: its id is the first half of
    // every job's key.
    let id = format!("{}-{}", node.id(), ids.start);
    let sent_at = Arc::new(Mutex::new(HashMap::new()));
    let collector = Collector {
        sent_at: sent_at.clone(),
        report: Report::default(),
        seen: HashSet::new(),
        progress: Box::new(progress),
    };
    let collector = node.system().spawn(collector);
    let name = collector_name(&id);
    let sent = async {
        node.register(&name, &collector).map_err(|e| format!("collector not registered: {e}"))?;
        let producer = node.work_producer::<Job>(&id, JOBS).window(WINDOW).start().map_err(|e| e.to_string())?;
        for job in ids.clone() {
            sent_at.lock().unwrap_or_else(|p| p.into_inner()).insert(job, Instant::now());
            producer.send(Job { id: job, millis }).await.map_err(|e| format!("job {job} not sent: {e}"))?;
        }
        producer.flush().await;
        Ok::<_, String>(producer)
    };
    let producer = match sent.await {
        Ok(producer) => producer,
        Err(e) => {
            node.unregister(&name);
            collector.stop();
            return Err(e);
        }
    };
    // Every acknowledged job's report was answered before it was
    // acknowledged: the collector has counted it.
    let mut report = collector.ask(Snapshot).await.map_err(|e| format!("no report: {e}"))?;
    report.submitted = ids.end - ids.start;
    report.reassigned = producer.reassigned();
    node.unregister(&name);
    collector.stop();
    if report.wrong > 0 {
        return Err(format!("{} jobs reported a wrong result", report.wrong));
    }
    Ok(report)
}
