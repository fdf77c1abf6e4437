//! Deterministic simulation of a whole Footlight cluster in one thread.
//!
//! A [`Sim`] runs N cluster nodes over the in-memory network on a
//! single-threaded Tokio runtime with virtual time. Every source of
//! randomness (actor and handle ids, node runs, the membership protocol's
//! choices, the keys of every hash map, Tokio's own `select!` choices) and
//! every fault (partitions both ways and one way, isolation, connection
//! resets, kills and restarts, delays) is drawn from one seed, so a seed
//! gives the same run, event for event, every time: a failure seen once is
//! replayed by its seed. The runtime keeps one code path; only the source of
//! its numbers changes (see [`footlight::entropy`]).
//!
//! Each run keeps an ordered [`Trace`] of what happened; its
//! [`hash`](Trace::hash) tells two runs apart. The built-in workload
//! ([`traffic`]) sends tells, asks and watches between every pair of nodes
//! while the faults play, and runs the cluster [`services`] (a singleton,
//! sharded entities, reliable delivery); [`check`] holds the trace to the
//! runtime's guarantees (asks resolve once and agree with what was handled,
//! per-pair FIFO, at-most-once, nothing reaches a later run, watches fire,
//! a node is declared down only when it was down or cut off, the cluster
//! re-forms, never two instances of a singleton or an entity id at once,
//! reliable delivery in order and without a gap).
//!
//! ```
//! use actor_sim::{Sim, check, traffic};
//! use std::time::Duration;
//!
//! let sim = Sim::new(42).nodes(3).duration(Duration::from_secs(20));
//! let report = sim.run(traffic::run)?;
//! let violations = check(&report.trace);
//! assert!(violations.is_empty(), "{violations:?}\nreplay: {}", sim.replay_command());
//! println!("trace {:016x}", report.trace.hash());
//! # Ok::<(), actor_sim::SimError>(())
//! ```
//!
//! Your own scenario is any `async fn(World) -> R`: start what you want on
//! each node with [`World::each_node`], record what you observe with
//! [`World::note`], and return when [`World::phase`] reaches
//! [`Phase::Done`].
//!
//! Replaying needs Tokio's seeded `select!`, which is behind
//! `--cfg tokio_unstable` (this workspace sets it in `.cargo/config.toml`);
//! without it a run is still a valid test, but not bit-for-bit replayable:
//! [`Sim::replayable`] says which.

mod check;
mod faults;
pub mod scale;
pub mod services;
mod trace;
pub mod traffic;
mod world;

use std::future::Future;
use std::time::Duration;

pub use check::{AFTERMATH, Violation, check};
pub use faults::{Fault, FaultKind, Faults, Plan, UnknownFault};
pub use trace::{Entry, Event, Outcome, Seen, Trace};
pub use world::{Phase, World};

/// Why a simulation could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The runtime could not be built.
    #[error("building the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A node failed to start.
    #[error("starting node {node}: {error}")]
    Start {
        /// The node.
        node: String,
        /// What went wrong.
        error: String,
    },
    /// The nodes did not form one cluster at the start.
    #[error("the nodes did not form a cluster within {0:?} (virtual time)")]
    NoCluster(Duration),
    /// The scenario did not return within its bound after [`Phase::Done`].
    #[error("the scenario did not finish within {0:?} after the end (virtual time)")]
    Stuck(Duration),
    /// The run did not end within its bound of real time
    /// ([`Sim::run_within`]): virtual time advances only when every task
    /// waits, so a task that never waits (a busy loop) stops it.
    #[error(
        "the run did not end within {0:?} of real time: virtual time stood still (a task busy-looping never lets it advance)"
    )]
    Stalled(Duration),
    /// The run panicked (on the thread of [`Sim::run_within`]).
    #[error("the run panicked: {0}")]
    Panicked(String),
}

/// One simulated run: its seed, its size, how long faults play, and which.
#[derive(Clone, Debug)]
pub struct Sim {
    seed: u64,
    nodes: usize,
    duration: Duration,
    settle: Duration,
    faults: Faults,
    latency: Duration,
}

/// What a run gives back: the scenario's output and the trace.
#[derive(Debug)]
pub struct Report<R> {
    /// The seed the run was drawn from.
    pub seed: u64,
    /// What the scenario returned.
    pub output: R,
    /// Everything that happened, in order.
    pub trace: Trace,
}

thread_local! {
    /// When the run on this thread began (its runtime's virtual clock).
    static BEGAN: std::cell::Cell<Option<tokio::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Virtual time since the simulated run on this thread began, if one is
/// running: for stamping logs (`footlight-sim` does).
pub fn elapsed() -> Option<Duration> {
    BEGAN.with(|b| b.get()).map(|began| began.elapsed())
}

/// The most nodes a simulation runs (each is a full node with its
/// membership, registry and connections).
pub const MAX_NODES: usize = 1_000;

impl Sim {
    /// A run drawn from `seed`: 3 nodes, 30 s of faults of every kind, then
    /// 30 s to settle (virtual time).
    pub fn new(seed: u64) -> Self {
        Sim {
            seed,
            nodes: 3,
            duration: Duration::from_secs(30),
            settle: Duration::from_secs(30),
            faults: Faults::all(),
            latency: Duration::ZERO,
        }
    }

    /// How many nodes (at least 1, at most [`MAX_NODES`]); they are called
    /// `n1`, `n2`, … and listen at their names.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.clamp(1, MAX_NODES);
        self
    }

    /// How long faults play (virtual time).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How long the healed cluster runs before [`Phase::Done`] (virtual
    /// time): long enough to detect what the faults left, restart downed
    /// nodes and re-form.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Which faults the plan may draw.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The network's latency: what each node receives arrives this long
    /// after it was sent (none by default; a delay fault adds to it).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fault plan this run plays.
    pub fn plan(&self) -> Plan {
        Plan::draw(self.seed, &self.node_ids(), self.duration, &self.faults)
    }

    /// Whether a run is replayable bit for bit (Tokio's `select!` seeded:
    /// built with `--cfg tokio_unstable`).
    pub fn replayable() -> bool {
        cfg!(tokio_unstable)
    }

    /// The command that replays this run of the built-in workload and
    /// prints its trace.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p actor-sim --release --bin footlight-sim -- --seed {} --nodes {} --duration {} --settle {} --faults {} --trace",
            self.seed,
            self.nodes,
            self.duration.as_secs(),
            self.settle.as_secs(),
            self.faults
        )
    }

    fn node_ids(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }

    /// Runs `scenario` on a fresh world: every node started and joined,
    /// faults played from the seed for the duration, then healed (killed
    /// nodes restarted) and left to settle; the scenario should return once
    /// [`World::phase`] is [`Phase::Done`]. Then every node is shut down.
    pub fn run<F, Fut, R>(&self, scenario: F) -> Result<Report<R>, SimError>
    where
        F: FnOnce(World) -> Fut,
        Fut: Future<Output = R>,
    {
        footlight::entropy::seeded(self.seed, || {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time().start_paused(true);
            #[cfg(tokio_unstable)]
            builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&self.seed.to_le_bytes()));
            let runtime = builder.build()?;
            let result = runtime.block_on(self.run_on(scenario));
            BEGAN.with(|b| b.set(None));
            // Dropped in the seeded scope: what it still runs numbers from the seed.
            drop(runtime);
            result
        })
    }

    /// [`run`](Self::run) on a thread of its own, giving up after `wall`
    /// of real time with [`SimError::Stalled`]: a task that never waits
    /// stops virtual time, and the run would otherwise never return. The
    /// stalled thread is left running (the process should end soon after).
    pub fn run_within<F, Fut, R>(&self, wall: Duration, scenario: F) -> Result<Report<R>, SimError>
    where
        F: FnOnce(World) -> Fut + Send + 'static,
        Fut: Future<Output = R>,
        R: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let sim = self.clone();
        let thread = std::thread::Builder::new().name(format!("sim-{}", self.seed)).spawn(move || {
            let _ = tx.send(sim.run(scenario));
        })?;
        match rx.recv_timeout(wall) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(SimError::Stalled(wall)),
            // The thread ended without an answer: the run panicked.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let panic = thread.join().err();
                let what = panic
                    .as_ref()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    })
                    .unwrap_or_else(|| "no message".to_owned());
                Err(SimError::Panicked(what))
            }
        }
    }

    async fn run_on<F, Fut, R>(&self, scenario: F) -> Result<Report<R>, SimError>
    where
        F: FnOnce(World) -> Fut,
        Fut: Future<Output = R>,
    {
        BEGAN.with(|b| b.set(Some(tokio::time::Instant::now())));
        let world = World::new(self.node_ids(), self.latency);
        // Joining is one member at a time through the first: allow for it.
        world.start_all(Duration::from_secs(60) + Duration::from_millis(200) * self.nodes as u32).await?;
        let plan = self.plan();
        let phases = tokio::spawn(world.clone().play(plan, self.duration, self.settle));
        let done = self.duration + self.settle;
        let bound = done + Duration::from_secs(600);
        let output = match tokio::time::timeout(bound, scenario(world.clone())).await {
            Ok(output) => output,
            Err(_) => {
                world.stop_all().await;
                return Err(SimError::Stuck(bound - done));
            }
        };
        let _ = phases.await;
        world.stop_all().await;
        Ok(Report { seed: self.seed, output, trace: world.trace() })
    }
}
