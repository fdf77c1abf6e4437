//! The work_queue service: a supervised pool of `Worker`s on every node, all
//! in the process group `workers`; a dispatcher on any node spreads jobs over
//! the group with asks. A job that makes its worker panic is retried (the
//! supervisor restarts the worker in place); a job whose worker does not
//! answer in time (its node is lost, say) is resubmitted to a worker on a
//! reachable node. The report counts distinct completed jobs:
//! nothing may be lost. Job ids come from the `Dispenser`, a cluster
//! singleton: dispatchers on several nodes never hand out the same id.
//! Shared by the example binary, the flagship demo and the in-process test.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use footlight::cluster::Singleton;
use footlight::prelude::*;
use footlight::{AskError, Restart, Supervisor};

/// The process group of all workers in the cluster.
pub const GROUP: &str = "workers";

/// Runs jobs, one at a time.
pub struct Worker {
    node: Cluster,
}

impl Actor for Worker {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // Also after a restart (idempotent): the ref stays the same.
        self.node.join(GROUP, ctx.myself())?;
        Ok(())
    }
}

/// A unit of work.
#[derive(Message, Serialize, Deserialize, Clone, Copy, Debug)]
#[message(reply = Done, remote = "work.Job")]
pub struct Job {
    /// The job's id.
    pub id: u64,
    /// 0 at first, then one more per retry.
    pub attempt: u32,
    /// How long the job takes.
    pub millis: u64,
}

/// A finished job.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Done {
    /// The job's id.
    pub id: u64,
    /// The node whose worker ran it.
    pub by: String,
    /// The job's result (its id squared).
    pub result: u64,
}

/// Whether job `id` is poison: it crashes its worker the first time.
pub fn poison(id: u64) -> bool {
    id % 50 == 7
}

impl Handler<Job> for Worker {
    async fn handle(&mut self, job: Job, _ctx: &mut Context<Self>) -> Done {
        tokio::time::sleep(Duration::from_millis(job.millis)).await;
        if poison(job.id) && job.attempt == 0 {
            panic!("job {} is poison on its first attempt", job.id);
        }
        Done { id: job.id, by: self.node.id().to_owned(), result: job.id.wrapping_mul(job.id) }
    }
}

impl RemoteActor for Worker {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Job>();
    }
}

/// Starts a pool of `workers` supervised workers on `node`: a worker that
/// panics is restarted in place (up to 1000 times in 10 s).
pub fn start_pool(node: &Cluster, workers: usize) -> ActorRef<Supervisor> {
    let mut supervisor = Supervisor::one_for_one().max_restarts(1000, Duration::from_secs(10));
    for i in 0..workers {
        let node = node.clone();
        supervisor = supervisor.child(format!("worker-{i}"), Restart::Permanent, move || Worker { node: node.clone() });
    }
    node.system().spawn(supervisor)
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
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
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
#[derive(Debug, Default)]
pub struct Report {
    /// Jobs submitted.
    pub submitted: u64,
    /// Distinct jobs completed (with a correct result).
    pub completed: u64,
    /// Retries after a worker panicked.
    pub retried_after_panic: u64,
    /// Resubmissions after a worker's node was lost or did not answer in
    /// time (500 ms plus 20 times the job's duration).
    pub resubmitted_after_loss: u64,
    /// Jobs completed per node.
    pub by_node: BTreeMap<String, u64>,
    /// Time from a job's first submission to its completion (retries
    /// included), per job.
    pub latencies: Vec<Duration>,
}

impl Report {
    /// A latency percentile (`q` in 0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    }
}

enum Outcome {
    Done(Done),
    Panicked,
    Lost,
}

/// How long a job of `millis` may take before it is resubmitted elsewhere,
/// by default: half a second more than its work.
pub fn default_patience(millis: u64) -> Duration {
    Duration::from_millis(500 + 20 * millis)
}

/// Runs jobs `ids` over the cluster's workers, `concurrency` at a time, each
/// taking `millis`; a job not answered within `patience` is resubmitted
/// elsewhere; `progress` is told the count of completed jobs as it grows.
/// Fails if a job cannot be completed after 50 attempts.
pub async fn run_jobs(
    node: &Cluster,
    ids: std::ops::Range<u64>,
    concurrency: usize,
    millis: u64,
    patience: Duration,
    progress: impl Fn(u64),
) -> Result<Report, String> {
    let node = Arc::new(node.clone());
    let mut report = Report { submitted: ids.end - ids.start, ..Report::default() };
    let mut completed = BTreeSet::new();
    let mut first_sent = std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = ids.clone();
    let spawn = |tasks: &mut tokio::task::JoinSet<(u64, u32, Outcome)>, job: Job| {
        let node = node.clone();
        tasks.spawn(async move { (job.id, job.attempt, attempt(&node, job, patience).await) });
    };
    for id in next.by_ref().take(concurrency.max(1)) {
        first_sent.insert(id, Instant::now());
        spawn(&mut tasks, Job { id, attempt: 0, millis });
    }
    while let Some(joined) = tasks.join_next().await {
        let (id, tries, outcome) = joined.map_err(|e| format!("a job task failed: {e}"))?;
        match outcome {
            Outcome::Done(done) => {
                if done.result != id.wrapping_mul(id) {
                    return Err(format!("job {id}: wrong result"));
                }
                if completed.insert(id) {
                    *report.by_node.entry(done.by).or_default() += 1;
                    report.latencies.push(first_sent.remove(&id).map(|t| t.elapsed()).unwrap_or_default());
                    progress(completed.len() as u64);
                }
                if let Some(id) = next.next() {
                    first_sent.insert(id, Instant::now());
                    spawn(&mut tasks, Job { id, attempt: 0, millis });
                }
                continue;
            }
            Outcome::Panicked => report.retried_after_panic += 1,
            Outcome::Lost => report.resubmitted_after_loss += 1,
        }
        if tries >= 50 {
            return Err(format!("job {id} failed 50 times"));
        }
        spawn(&mut tasks, Job { id, attempt: tries + 1, millis });
    }
    report.completed = completed.len() as u64;
    Ok(report)
}

/// One attempt at `job` on a worker chosen by the job's id and attempt,
/// among those on reachable nodes.
async fn attempt(node: &Cluster, job: Job, patience: Duration) -> Outcome {
    let mut workers = node.group::<Worker>(GROUP).await;
    // Skip workers on nodes suspected of failure, unless none is left.
    let reachable = |w: &ActorRef<Worker>| w.remote_addr().is_none_or(|at| node.is_reachable(&at.node));
    if workers.iter().any(reachable) {
        workers.retain(reachable);
    }
    if workers.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Outcome::Lost;
    }
    let worker = &workers[((job.id + u64::from(job.attempt)) % workers.len() as u64) as usize];
    // A job far slower than it should be is resubmitted elsewhere (it may
    // then run twice: jobs are idempotent, and completions are counted once).
    // This keeps a dead node from holding the dispatcher's slots until the
    // cluster declares it down.
    match worker.ask(job).timeout(patience).await {
        Ok(done) => Outcome::Done(done),
        // The worker panicked (and is being restarted).
        Err(AskError::NoReply) => Outcome::Panicked,
        // Its node is gone, or it did not answer in time.
        Err(_) => Outcome::Lost,
    }
}
