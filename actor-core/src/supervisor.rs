//! Supervision trees, as in Erlang/OTP's `supervisor`.
//!
//! A [`Supervisor`] is an actor that starts its children in order, watches
//! them, and restarts them according to a **strategy** and each child's
//! **restart type**:
//!
//! | strategy | when a child must be restarted |
//! |---|---|
//! | [`one_for_one`](Supervisor::one_for_one) | only that child |
//! | [`one_for_all`](Supervisor::one_for_all) | every child: the others are stopped youngest first, then all start again oldest first |
//! | [`rest_for_one`](Supervisor::rest_for_one) | that child and every child started after it |
//!
//! | restart type | restarted after |
//! |---|---|
//! | [`Restart::Permanent`] | any exit, normal or not |
//! | [`Restart::Transient`] | an abnormal exit only ([`ExitReason::is_abnormal`]) |
//! | [`Restart::Temporary`] | never (and not restarted with its siblings either) |
//!
//! **Restart intensity.** If more than `max_restarts` restarts happen within
//! `window` (default: 3 in 5 s), the supervisor gives up: it stops all its
//! children and exits with [`ExitReason::MaxRestartsExceeded`], which its own
//! supervisor sees as a failure (escalation).
//!
//! **Backoff.** With [`Supervisor::backoff`], a child that keeps failing waits
//! `min × 2^k` (capped at `max`) before its k-th consecutive restart; the count
//! resets once the child has run for a whole intensity window.
//!
//! **Refs stay valid.** A restart replaces the actor's state, not its mailbox:
//! [`ActorRef`]s taken before a restart reach the new instance, and messages
//! queued during the restart are kept. The message being handled when the
//! child failed is lost (at-most-once). A child stopped for good (with
//! [`ActorRef::stop`], or not restarted per its type) leaves the supervisor.
//!
//! Starting is ordered: each child's `started` hook has returned before the
//! next child is created, at first start and at every group restart.
//!
//! **Watchers and links see the actor, not its instances.** A restart is not
//! a termination: watchers of a supervised child get `Terminated` and its links
//! fire only when it stops for good. Watches and links an instance set up
//! survive its restart, and notices that arrive while it waits to be
//! restarted are delivered to the next instance.
//!
//! **Dynamic children.** Children can be added while the supervisor runs
//! ([`start_child`](ActorRef::<Supervisor>::start_child), for an actor per
//! customer, connection or device), terminated, restarted and deleted by
//! name, listed ([`children`](ActorRef::<Supervisor>::children)) and
//! counted; they are supervised like the others. Children are indexed by
//! id and name, so a supervisor with 100 000 children handles each report
//! in O(log n).
//!
//! **Shutdown.** Each child has a [`Shutdown`] policy (its type's
//! [`Actor::shutdown_policy`], or its [`ChildSpec::shutdown`]): workers get
//! 5 s, then are killed ([`ExitReason::Killed`]); supervisors wait for their
//! children. [`ActorRef::kill`] kills at once.
//!
//! **Requests wait for the supervisor.** `start_child`, `child`,
//! `children` and the others are answered by the supervisor itself, in
//! turn, without a timeout (a start may take as long as the child's
//! `started`): a child must not make them from its own `started` or
//! `stopping` hook, which its supervisor is waiting for.
//!
//! **Events.** [`subscribe`](ActorRef::<Supervisor>::subscribe) reports
//! restarts, children leaving and giving up ([`SupervisorEvent`]).
//!
//! **OTP's behaviour, and Footlight's.**
//!
//! | OTP | Footlight |
//! |---|---|
//! | `one_for_one`, `one_for_all`, `rest_for_one` | the same; group stops youngest first, starts oldest first |
//! | `simple_one_for_one` / `DynamicSupervisor` | any supervisor takes children at run time ([`start_child`](ActorRef::<Supervisor>::start_child)) |
//! | restart types `permanent`, `transient`, `temporary` | [`Restart`], the same meaning |
//! | intensity and period | [`max_restarts`](Supervisor::max_restarts), the same; giving up exits with `MaxRestartsExceeded` |
//! | — | optional exponential [`Backoff`] between restarts |
//! | a restart gives a new pid | the same [`ActorRef`] reaches the new instance; its mailbox is kept (messages queued meanwhile are not lost); the message being handled is |
//! | `shutdown`: timeout, `brutal_kill`, `infinity` | [`Shutdown`], the same; a kill takes effect at the handler's next `.await` (a handler that never yields cannot be interrupted; this is logged) |
//! | a child failing `init` fails `start_link` of the supervisor | the same by default; [`OnStartFailure::Restart`] restarts it instead |
//! | `start_child`, `terminate_child`, `restart_child`, `delete_child`, `which_children`, `count_children` | the methods of the same names on `ActorRef<Supervisor>` (`children` for `which_children`), children addressed by name |
//! | the child that made the supervisor give up exits with its own reason | the same (unless its policy is a brutal kill: then `Killed`) |
//! | a killed permanent or transient child is restarted | a killed child ([`ActorRef::kill`], or a shutdown timeout) is not restarted: a kill is a stop for good |
//! | siblings stopped for a group restart (`one_for_all`, `rest_for_one`) obey their `shutdown` | not yet: a sibling stuck in a handler delays the restart until it returns |
//! | `restart_child` keeps the child's place in the start order | the restarted child goes last (a new actor) |
//! | a transient child that exits normally keeps its spec | its spec goes with it (start it again with `start_child`) |
//! | `noconnection` for a link to a process on a lost node | [`ExitReason::NodeDown`] |
//! | `Terminated`/`'EXIT'` after the messages the dead process sent | not kept, on purpose: notices are system signals, so they never wait behind (or are refused by) a full bounded mailbox and a failure is acted on before a backlog; they may overtake messages the dead actor sent just before it died (the README says what to do when order matters) |
//! | `monitor`/`demonitor` from any process | [`Context::watch`] inside an actor; [`ActorSystem::monitor`](crate::ActorSystem::monitor) outside one (a [`Monitor`](crate::Monitor) future, distinct and cancellable) |
//! | linking to a dead process gives `noproc` | the same: [`ExitReason::NoProc`], abnormal |
//!
//! ```
//! use std::time::Duration;
//! use actor_core::{Actor, ActorSystem, Backoff, Restart, Supervisor};
//!
//! struct Db;
//! impl Actor for Db {}
//! #[derive(Default)]
//! struct Cache;
//! impl Actor for Cache {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let system = ActorSystem::new("app");
//! let sup = system.spawn(
//!     Supervisor::one_for_one()
//!         .max_restarts(3, Duration::from_secs(5))
//!         .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)))
//!         .child("db", Restart::Permanent, || Db)
//!         .child("cache", Restart::Transient, Cache::default),
//! );
//! let db = sup.child::<Db>("db").await.unwrap();
//! assert!(db.is_alive());
//! system.shutdown().await;
//! # }
//! ```

use crate::entropy::HashMap;
use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cell::{ActorCell, Signal, StartAck};
use crate::runtime::{ChildReport, Supervision};
use crate::{
    Actor, ActorError, ActorId, ActorRef, AskError, Context, ExitReason, Handler, Mailbox, Message, Shutdown,
    SpawnOptions,
};

/// When a child is restarted (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children a failure restarts (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// All children.
    OneForAll,
    /// The failed child and those started after it.
    RestForOne,
}

/// Delay before restarting a child that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// `min` before the first consecutive restart, doubling each time, never
    /// more than `max`.
    pub fn exponential(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min) }
    }

    /// The delay before the restart that follows `consecutive` earlier ones.
    pub fn delay(&self, consecutive: u32) -> Duration {
        let factor = 1u32.checked_shl(consecutive.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// How to start and supervise one child: its name, restart type, shutdown
/// policy and factory (OTP's child spec). Given to
/// [`Supervisor::child_spec`] at build time or to
/// [`ActorRef::<Supervisor>::start_child`] while the supervisor runs.
pub struct ChildSpec<A> {
    spec: Spec,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> ChildSpec<A> {
    /// A child called `name` (unique among the supervisor's children; a
    /// label in logs, not a registered name), restarted as `restart` says,
    /// built by `factory` at every start and restart; its shutdown policy is
    /// `A`'s [`Actor::shutdown_policy`] until [`shutdown`](Self::shutdown)
    /// sets another.
    pub fn new<F>(name: impl Into<String>, restart: Restart, factory: F) -> Self
    where
        F: Fn() -> A + Send + Sync + 'static,
    {
        let spec = Spec {
            name: Arc::from(name.into()),
            restart,
            shutdown: A::shutdown_policy(),
            start: Arc::new(Factory { make: Arc::new(factory), _actor: PhantomData }),
            type_name: std::any::type_name::<A>(),
        };
        Self { spec, _actor: PhantomData }
    }

    /// How long the child may take to stop before it is killed (see
    /// [`Shutdown`]).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.spec.shutdown = shutdown;
        self
    }
}

impl<A> fmt::Debug for ChildSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.spec.name)
            .field("restart", &self.spec.restart)
            .field("shutdown", &self.spec.shutdown)
            .finish()
    }
}

/// A child spec with its actor type erased.
#[derive(Clone)]
struct Spec {
    name: Arc<str>,
    restart: Restart,
    shutdown: Shutdown,
    start: Arc<dyn StartChild>,
    type_name: &'static str,
}

/// What a supervisor does when one of its children fails to start while
/// the supervisor itself starts (see [`Supervisor::on_start_failure`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnStartFailure {
    /// As OTP: the supervisor's own start fails (the children started
    /// before it are stopped), and its parent or supervisor sees that.
    #[default]
    FailSupervisor,
    /// The child is restarted like any failing child, within the restart
    /// intensity; the supervisor starts regardless.
    Restart,
}

/// What a supervisor's child is doing (see [`ChildInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildState {
    /// An instance is running.
    Running,
    /// Between two instances: stopped by a failure (or with its group),
    /// waiting for its restart (a backoff delay, or a sibling's restart).
    Restarting,
    /// Stopped with [`terminate_child`](ActorRef::<Supervisor>::terminate_child):
    /// its spec is kept until [`restart_child`](ActorRef::<Supervisor>::restart_child)
    /// or [`delete_child`](ActorRef::<Supervisor>::delete_child).
    Terminated,
}

/// One child of a supervisor, as [`children`](ActorRef::<Supervisor>::children)
/// lists it (OTP's `which_children`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// Its name in the supervisor.
    pub name: String,
    /// Its actor id; `None` once terminated.
    pub id: Option<ActorId>,
    /// Its actor type.
    pub type_name: &'static str,
    /// Its restart type.
    pub restart: Restart,
    /// What it is doing.
    pub state: ChildState,
}

/// How many children a supervisor has (OTP's `count_children`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildCounts {
    /// Every child spec the supervisor holds, terminated children included.
    pub specs: usize,
    /// Children with a live actor (running or restarting).
    pub active: usize,
    /// Of the specs, those whose actor is a [`Supervisor`].
    pub supervisors: usize,
    /// Of the specs, the others.
    pub workers: usize,
}

/// A supervisor refused a request about its children.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// No child has that name.
    #[error("no child is called {0:?}")]
    NotFound(String),
    /// A child with that name exists already.
    #[error("a child called {0:?} exists already")]
    AlreadyPresent(String),
    /// The child is of another actor type than the one asked for.
    #[error("the child {name:?} is a {actual}, not a {expected}")]
    WrongType {
        /// The child's name.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// The child's type.
        actual: &'static str,
    },
    /// The child is running: terminate it first.
    #[error("the child {0:?} is running")]
    Running(String),
    /// The child's `started` hook (or its factory) failed; it was not added
    /// (or, for a restart, stays terminated).
    #[error("the child {name:?} failed to start: {reason}")]
    StartFailed {
        /// The child's name.
        name: String,
        /// Why.
        reason: ExitReason,
    },
    /// The supervisor has stopped (or did not answer).
    #[error("the supervisor has stopped")]
    SupervisorStopped,
}

/// An event of a supervisor's children, from
/// [`subscribe`](ActorRef::<Supervisor>::subscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A child failed (or exited) and is being restarted (with its group,
    /// per the strategy).
    Restarting {
        /// The child's name.
        name: String,
        /// Its actor id (the same after the restart).
        id: ActorId,
        /// Why its instance ended.
        reason: ExitReason,
    },
    /// A child stopped for good and left the supervisor (stopped, not
    /// restarted per its type, or killed).
    ChildExited {
        /// The child's name.
        name: String,
        /// Its actor id.
        id: ActorId,
        /// Its exit reason.
        reason: ExitReason,
    },
    /// The restart intensity was exceeded: the supervisor stops its children
    /// and exits with [`ExitReason::MaxRestartsExceeded`].
    GaveUp {
        /// The child whose failure was one too many.
        name: String,
        /// Its failure.
        reason: ExitReason,
    },
}

/// An actor that starts, watches and restarts children (see the
/// [module docs](self) for the strategies and how they compare with OTP).
///
/// ```
/// use std::time::Duration;
/// use actor_core::{Actor, ActorSystem, Context, Handler, Message, Restart, Supervisor};
///
/// #[derive(Default)]
/// struct Worker(u32);
/// impl Actor for Worker {}
///
/// struct Crash;
/// impl Message for Crash {
///     type Reply = ();
/// }
/// impl Handler<Crash> for Worker {
///     async fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
///         ctx.fail("asked to");
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = ActorSystem::new("app");
/// let sup = system.spawn(
///     Supervisor::one_for_one()
///         .max_restarts(3, Duration::from_secs(5))
///         .child("worker", Restart::Permanent, Worker::default),
/// );
/// let worker = sup.child::<Worker>("worker").await.unwrap();
/// let mut events = sup.subscribe().await;
/// worker.tell(Crash).await.unwrap();
/// // Restarted in place: the same ref reaches the new instance.
/// let restarted = events.recv().await.unwrap();
/// assert!(matches!(restarted, actor_core::supervisor::SupervisorEvent::Restarting { .. }));
/// assert!(worker.is_alive());
/// system.shutdown().await;
/// # }
/// ```
pub struct Supervisor {
    strategy: Strategy,
    max_restarts: u32,
    window: Duration,
    backoff: Option<Backoff>,
    specs: Vec<Spec>,
    children: Children,
    restarts: VecDeque<Instant>,
    events: tokio::sync::broadcast::Sender<SupervisorEvent>,
    on_start_failure: OnStartFailure,
}

/// The children, in start order, found by id and by name in O(log n).
#[derive(Default)]
struct Children {
    by_seq: BTreeMap<u64, Child>,
    by_id: HashMap<ActorId, u64>,
    by_name: HashMap<Arc<str>, u64>,
    next_seq: u64,
}

impl Children {
    fn push(&mut self, child: Child) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(cell) = &child.cell {
            self.by_id.insert(cell.id(), seq);
        }
        self.by_name.insert(child.spec.name.clone(), seq);
        self.by_seq.insert(seq, child);
    }

    fn seq(&self, id: ActorId) -> Option<u64> {
        self.by_id.get(&id).copied()
    }

    fn get(&self, id: ActorId) -> Option<&Child> {
        self.seq(id).and_then(|seq| self.by_seq.get(&seq))
    }

    fn get_mut(&mut self, id: ActorId) -> Option<&mut Child> {
        let seq = self.seq(id)?;
        self.by_seq.get_mut(&seq)
    }

    fn named(&self, name: &str) -> Option<&Child> {
        self.by_name.get(name).and_then(|seq| self.by_seq.get(seq))
    }

    fn named_mut(&mut self, name: &str) -> Option<&mut Child> {
        let seq = *self.by_name.get(name)?;
        self.by_seq.get_mut(&seq)
    }

    /// Removes the child (its spec too).
    fn remove(&mut self, id: ActorId) -> Option<Child> {
        let seq = self.by_id.remove(&id)?;
        let child = self.by_seq.remove(&seq)?;
        if self.by_name.get(&child.spec.name) == Some(&seq) {
            self.by_name.remove(&child.spec.name);
        }
        Some(child)
    }

    /// Removes a terminated child's spec, by name.
    fn forget(&mut self, name: &str) {
        if let Some(seq) = self.by_name.remove(name) {
            self.by_seq.remove(&seq);
        }
    }

    /// Forgets the child's actor, keeping its spec (terminated).
    fn detach(&mut self, id: ActorId) {
        if let Some(seq) = self.by_id.remove(&id)
            && let Some(child) = self.by_seq.get_mut(&seq)
        {
            child.cell = None;
            child.actor_ref = None;
        }
    }

    /// Ids of the live children from `from` (a child's id) on, in start
    /// order; all of them for `None`.
    fn ids_from(&self, from: Option<ActorId>) -> Vec<ActorId> {
        let start = from.and_then(|id| self.seq(id)).unwrap_or(0);
        self.by_seq.range(start..).filter_map(|(_, c)| c.cell.as_ref().map(|cell| cell.id())).collect()
    }
}

struct Child {
    spec: Spec,
    /// `None` once terminated.
    cell: Option<Arc<ActorCell>>,
    actor_ref: Option<Box<dyn Any + Send + Sync>>,
    /// The instance now running (or waiting): 0 at first, one more per restart.
    generation: u64,
    consecutive: u32,
    last_restart: Option<Instant>,
    /// Between two instances.
    restarting: bool,
}

impl Child {
    /// A child as first started (`cell` and `actor_ref`), or kept
    /// terminated with its spec (`None`s).
    fn new(spec: Spec, cell: Option<Arc<ActorCell>>, actor_ref: Option<Box<dyn Any + Send + Sync>>) -> Child {
        Child { spec, cell, actor_ref, generation: 0, consecutive: 0, last_restart: None, restarting: false }
    }

    fn info(&self) -> ChildInfo {
        ChildInfo {
            name: self.spec.name.to_string(),
            id: self.cell.as_ref().map(|c| c.id()),
            type_name: self.spec.type_name,
            restart: self.spec.restart,
            state: match (&self.cell, self.restarting) {
                (None, _) => ChildState::Terminated,
                (Some(_), true) => ChildState::Restarting,
                (Some(_), false) => ChildState::Running,
            },
        }
    }
}

trait StartChild: Send + Sync {
    fn start(&self, ctx: &mut Context<Supervisor>, spec: &Spec, started: StartAck) -> Started;
}

/// A child just spawned: its cell, its ref to keep, and one to hand out.
struct Started {
    cell: Arc<ActorCell>,
    kept: Box<dyn Any + Send + Sync>,
    handed: Box<dyn Any + Send + Sync>,
}

struct Factory<A, F> {
    make: Arc<F>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor, F: Fn() -> A + Send + Sync + 'static> StartChild for Factory<A, F> {
    fn start(&self, ctx: &mut Context<Supervisor>, spec: &Spec, started: StartAck) -> Started {
        let sup = ctx.myself().downgrade();
        let report = Arc::new(move |report: ChildReport| {
            if let Some(sup) = sup.upgrade() {
                // The supervisor's mailbox is unbounded: this only fails once it stopped.
                let _ = sup.try_tell(ChildExit(report));
            }
        });
        let make = self.make.clone();
        let supervision = Supervision { factory: Arc::new(move || make()), report, started: Some(started) };
        let options =
            SpawnOptions { label: Some(spec.name.to_string()), ..SpawnOptions::new() }.shutdown(spec.shutdown);
        let child = ctx.spawn_supervised::<A>(options, supervision);
        Started { cell: child.cell().clone(), kept: Box::new(child.clone()), handed: Box::new(child) }
    }
}

impl Supervisor {
    fn with(strategy: Strategy) -> Self {
        Self {
            strategy,
            max_restarts: 3,
            window: Duration::from_secs(5),
            backoff: None,
            specs: Vec::new(),
            children: Children::default(),
            restarts: VecDeque::new(),
            events: tokio::sync::broadcast::channel(256).0,
            on_start_failure: OnStartFailure::default(),
        }
    }

    /// Restarts only the failed child.
    pub fn one_for_one() -> Self {
        Self::with(Strategy::OneForOne)
    }

    /// Restarts every child when one must be restarted.
    pub fn one_for_all() -> Self {
        Self::with(Strategy::OneForAll)
    }

    /// Restarts the failed child and every child started after it.
    pub fn rest_for_one() -> Self {
        Self::with(Strategy::RestForOne)
    }

    /// Allows at most `max_restarts` restarts within `window`; one more stops
    /// the supervisor with [`ExitReason::MaxRestartsExceeded`]. Default: 3 in 5 s.
    pub fn max_restarts(mut self, max_restarts: u32, window: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.window = window;
        self
    }

    /// Delays restarts of a child that keeps failing. Default: no delay.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// What happens when a child fails to start while the supervisor starts.
    /// Default: the supervisor's start fails, as in OTP
    /// ([`OnStartFailure::FailSupervisor`]).
    pub fn on_start_failure(mut self, on_start_failure: OnStartFailure) -> Self {
        self.on_start_failure = on_start_failure;
        self
    }

    /// Adds a child, built by `factory` at start and at every restart. Children
    /// start in the order they are added. `name` labels the child in logs and
    /// in [`child`](ActorRef::child) queries; it is not registered in the system.
    /// The child's shutdown policy is its type's
    /// [`Actor::shutdown_policy`]; [`child_spec`](Self::child_spec) sets another.
    pub fn child<A, F>(self, name: impl Into<String>, restart: Restart, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.child_spec(ChildSpec::new(name, restart, factory))
    }

    /// Adds a child from a full [`ChildSpec`].
    pub fn child_spec<A: Actor>(mut self, spec: ChildSpec<A>) -> Self {
        self.specs.push(spec.spec);
        self
    }

    /// The configured strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn emit(&self, event: SupervisorEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// Records a restart; false when the intensity is exceeded.
    fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.max_restarts as usize
    }

    /// Starts a child from `spec` and waits for its `started` hook: its ref,
    /// or why it failed (then it is stopped and forgotten).
    async fn start_one(
        &mut self,
        ctx: &mut Context<Self>,
        spec: Spec,
        keep_on_failure: bool,
    ) -> Result<Box<dyn Any + Send + Sync>, ExitReason> {
        let (ack, started) = oneshot::channel();
        let Started { cell, kept, handed } = spec.start.clone().start(ctx, &spec, ack);
        self.children.push(Child::new(spec, Some(cell.clone()), Some(kept)));
        match started.await {
            Ok(Ok(())) => Ok(handed),
            // Its exit report, handled later, restarts it.
            Ok(Err(reason)) if keep_on_failure => Err(reason),
            // A dropped ack: the child was stopped before its start ended.
            failed => {
                let reason = match failed {
                    Ok(Err(reason)) => reason,
                    _ => ExitReason::Shutdown,
                };
                self.children.remove(cell.id());
                cell.signal(Signal::Stop(reason.clone()));
                cell.wait_exit().await;
                Err(reason)
            }
        }
    }

    /// Ends the running instances of `group` (except the failed child, whose
    /// instance already ended), youngest first. Temporary children are stopped
    /// for good and dropped from the group.
    async fn suspend(&mut self, group: &mut Vec<ActorId>, failed: ActorId) {
        for id in group.clone().into_iter().rev() {
            if id == failed {
                continue;
            }
            let Some(child) = self.children.get_mut(id) else { continue };
            let Some(cell) = child.cell.clone() else { continue };
            if child.spec.restart == Restart::Temporary {
                cell.stop_by_policy(ExitReason::Shutdown).await;
                self.children.remove(id);
                group.retain(|g| *g != id);
            } else {
                child.restarting = true;
                let (ack, done) = oneshot::channel();
                cell.signal(Signal::Suspend(ack));
                // A dropped ack means the child stopped for good meanwhile.
                let _ = done.await;
            }
        }
    }

    /// Starts fresh instances of `group`, oldest first, each after the previous
    /// one's `started` returned. Each entry names the instance that was
    /// stopped; a child restarted since (by a newer failure) is left alone.
    async fn restart_group(&mut self, group: &[(ActorId, u64)]) {
        for &(id, generation) in group {
            let Some(child) = self.children.get_mut(id) else { continue };
            if child.generation != generation {
                continue;
            }
            let Some(cell) = child.cell.clone() else { continue };
            child.generation += 1;
            child.restarting = false;
            let (ack, started) = oneshot::channel();
            cell.signal(Signal::Restart(Some(ack)));
            let _ = started.await;
        }
    }
}

impl Actor for Supervisor {
    /// Supervisors get an unbounded mailbox so a child's exit report is never
    /// refused.
    fn default_mailbox() -> Mailbox {
        Mailbox::unbounded()
    }

    /// A supervisor waits for its children, whose own policies bound the wait
    /// (OTP's `infinity` for supervisors).
    fn shutdown_policy() -> Shutdown {
        Shutdown::Infinity
    }

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for spec in std::mem::take(&mut self.specs) {
            let name = spec.name.clone();
            if self.children.named(&name).is_some() {
                return Err(ActorError::msg(format!("two children are called {name:?}")));
            }
            let keep = self.on_start_failure == OnStartFailure::Restart;
            if let Err(reason) = self.start_one(ctx, spec, keep).await
                && !keep
            {
                // OTP: a child that fails to start fails its supervisor's
                // start; the children started so far are stopped with it.
                return Err(ActorError::msg(format!("child {name:?} failed to start: {reason}")));
            }
        }
        Ok(())
    }
}

/// A supervised child's exit report (internal to supervision).
#[doc(hidden)]
pub struct ChildExit(ChildReport);

#[diagnostic::do_not_recommend]
impl Message for ChildExit {
    type Reply = ();
}

#[diagnostic::do_not_recommend]
impl Handler<ChildExit> for Supervisor {
    async fn handle(&mut self, ChildExit(report): ChildExit, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get(report.id) else { return };
        let name = child.spec.name.to_string();
        if report.terminal {
            self.children.remove(report.id);
            self.emit(SupervisorEvent::ChildExited { name, id: report.id, reason: report.reason });
            return;
        }
        if report.generation != child.generation {
            // An instance already replaced by a group restart: nothing to do.
            tracing::debug!(child = %name, "stale exit report ignored");
            return;
        }
        let Some(cell) = child.cell.clone() else { return };
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => report.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            tracing::debug!(child = %cell, reason = %report.reason, "child not restarted");
            // It ends with its own reason; the terminal report removes it.
            cell.signal(Signal::Stop(report.reason));
            return;
        }
        if !self.allow_restart() {
            tracing::error!(
                child = %cell, reason = %report.reason,
                max_restarts = self.max_restarts, window = ?self.window,
                "restart intensity exceeded; supervisor gives up"
            );
            // The child that failed once too often ends with its failure,
            // for its watchers, links and `wait_for_stop` (its siblings are
            // shut down with the supervisor).
            cell.signal(Signal::Stop(report.reason.clone()));
            self.emit(SupervisorEvent::GaveUp { name, reason: report.reason });
            ctx.stop = Some(Box::new(ExitReason::MaxRestartsExceeded));
            return;
        }
        tracing::warn!(child = %cell, reason = %report.reason, "restarting child");
        crate::stats::restarting(cell.type_name());
        self.emit(SupervisorEvent::Restarting { name, id: report.id, reason: report.reason.clone() });
        if let Some(child) = self.children.get_mut(report.id) {
            child.restarting = true;
        }
        let mut group: Vec<ActorId> = match self.strategy {
            Strategy::OneForOne => vec![report.id],
            Strategy::OneForAll => self.children.ids_from(None),
            Strategy::RestForOne => self.children.ids_from(Some(report.id)),
        };
        self.suspend(&mut group, report.id).await;
        let delay = {
            let window = self.window;
            let backoff = self.backoff;
            let Some(child) = self.children.get_mut(report.id) else { return };
            let now = Instant::now();
            child.consecutive = match child.last_restart {
                Some(t) if now.duration_since(t) <= window => child.consecutive.saturating_add(1),
                _ => 0,
            };
            child.last_restart = Some(now);
            backoff.map(|b| b.delay(child.consecutive)).unwrap_or_default()
        };
        let group: Vec<(ActorId, u64)> =
            group.into_iter().filter_map(|id| self.children.get(id).map(|c| (id, c.generation))).collect();
        if delay.is_zero() {
            self.restart_group(&group).await;
        } else {
            ctx.send_after(delay, RestartGroup(group));
        }
    }
}

/// Restart a suspended group after a backoff delay (internal to supervision).
#[doc(hidden)]
pub struct RestartGroup(Vec<(ActorId, u64)>);

#[diagnostic::do_not_recommend]
impl Message for RestartGroup {
    type Reply = ();
}

#[diagnostic::do_not_recommend]
impl Handler<RestartGroup> for Supervisor {
    async fn handle(&mut self, RestartGroup(group): RestartGroup, _ctx: &mut Context<Self>) {
        self.restart_group(&group).await;
    }
}

/// Requests to a [`Supervisor`] about its children, sent through the methods
/// of [`ActorRef<Supervisor>`] (internal).
#[doc(hidden)]
pub struct ChildRequest(Request);

/// The answer to a [`ChildRequest`] (internal).
#[doc(hidden)]
pub struct ChildReply(Reply);

/// Takes a typed ref out of a child's boxed one, if the type matches.
type Downcast = Box<dyn Fn(&(dyn Any + Send + Sync)) -> Option<Box<dyn Any + Send>> + Send>;

enum Request {
    Get(String, Downcast, &'static str),
    Start(Spec),
    Terminate(String),
    Restart(String),
    Delete(String),
    Which,
    Count,
    Subscribe,
}

enum Reply {
    Ref(Result<Box<dyn Any + Send>, ChildError>),
    Started(Result<Box<dyn Any + Send + Sync>, ChildError>),
    Done(Result<(), ChildError>),
    Which(Vec<ChildInfo>),
    Count(ChildCounts),
    Events(tokio::sync::broadcast::Receiver<SupervisorEvent>),
}

#[diagnostic::do_not_recommend]
impl Message for ChildRequest {
    type Reply = ChildReply;
}

#[diagnostic::do_not_recommend]
impl Handler<ChildRequest> for Supervisor {
    async fn handle(&mut self, ChildRequest(request): ChildRequest, ctx: &mut Context<Self>) -> ChildReply {
        ChildReply(self.answer(request, ctx).await)
    }
}

impl Supervisor {
    async fn answer(&mut self, request: Request, ctx: &mut Context<Self>) -> Reply {
        match request {
            Request::Get(name, downcast, expected) => Reply::Ref(match self.children.named(&name) {
                Some(Child { actor_ref: Some(actor_ref), spec, .. }) => downcast(actor_ref.as_ref())
                    .ok_or(ChildError::WrongType { name: name.clone(), expected, actual: spec.type_name }),
                _ => Err(ChildError::NotFound(name)),
            }),
            Request::Start(spec) => {
                let name = spec.name.to_string();
                if self.children.named(&name).is_some() {
                    return Reply::Started(Err(ChildError::AlreadyPresent(name)));
                }
                Reply::Started(
                    self.start_one(ctx, spec, false).await.map_err(|reason| ChildError::StartFailed { name, reason }),
                )
            }
            Request::Terminate(name) => {
                let Some(child) = self.children.named_mut(&name) else {
                    return Reply::Done(Err(ChildError::NotFound(name)));
                };
                let Some(cell) = child.cell.clone() else { return Reply::Done(Ok(())) };
                let temporary = child.spec.restart == Restart::Temporary;
                // Forgotten first, so that its exit report finds nothing to
                // restart; a temporary child's spec goes too (OTP).
                if temporary {
                    self.children.remove(cell.id());
                } else {
                    self.children.detach(cell.id());
                }
                cell.stop_by_policy(ExitReason::Shutdown).await;
                Reply::Done(Ok(()))
            }
            Request::Restart(name) => {
                let Some(child) = self.children.named(&name) else {
                    return Reply::Done(Err(ChildError::NotFound(name)));
                };
                if child.cell.is_some() {
                    return Reply::Done(Err(ChildError::Running(name)));
                }
                let spec = child.spec.clone();
                self.children.forget(&spec.name);
                match self.start_one(ctx, spec.clone(), false).await {
                    Ok(_) => Reply::Done(Ok(())),
                    Err(reason) => {
                        // It stays terminated, its spec kept.
                        self.children.push(Child::new(spec, None, None));
                        Reply::Done(Err(ChildError::StartFailed { name, reason }))
                    }
                }
            }
            Request::Delete(name) => Reply::Done(match self.children.named(&name) {
                None => Err(ChildError::NotFound(name)),
                Some(child) if child.cell.is_some() => Err(ChildError::Running(name)),
                Some(_) => {
                    self.children.forget(&name);
                    Ok(())
                }
            }),
            Request::Which => Reply::Which(self.children.by_seq.values().map(Child::info).collect()),
            Request::Count => {
                let mut counts = ChildCounts::default();
                for child in self.children.by_seq.values() {
                    counts.specs += 1;
                    counts.active += usize::from(child.cell.is_some());
                    if child.spec.type_name == std::any::type_name::<Supervisor>() {
                        counts.supervisors += 1;
                    } else {
                        counts.workers += 1;
                    }
                }
                Reply::Count(counts)
            }
            Request::Subscribe => Reply::Events(self.events.subscribe()),
        }
    }
}

impl ActorRef<Supervisor> {
    /// A request answered with `Done`.
    async fn done(&self, request: Request) -> Result<(), ChildError> {
        match self.request(request).await? {
            Reply::Done(done) => done,
            _ => Err(ChildError::SupervisorStopped),
        }
    }

    async fn request(&self, request: Request) -> Result<Reply, ChildError> {
        self.ask(ChildRequest(request))
            .timeout(Duration::MAX)
            .await
            .map(|ChildReply(reply)| reply)
            .map_err(|_: AskError<ChildRequest>| ChildError::SupervisorStopped)
    }

    /// A ref to the child called `name`, running or restarting (refs stay
    /// valid across restarts).
    pub async fn child<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, ChildError> {
        let downcast: Downcast =
            Box::new(|any| any.downcast_ref::<ActorRef<A>>().map(|r| Box::new(r.clone()) as Box<dyn Any + Send>));
        match self.request(Request::Get(name.to_owned(), downcast, std::any::type_name::<A>())).await? {
            Reply::Ref(found) => found.map(|any| match any.downcast::<ActorRef<A>>() {
                Ok(actor) => *actor,
                Err(_) => unreachable!("downcast checked by the supervisor"),
            }),
            _ => Err(ChildError::SupervisorStopped),
        }
    }

    /// Starts a child while the supervisor runs (OTP's `start_child`;
    /// Elixir's `DynamicSupervisor`): added after the existing children,
    /// supervised like them (restart type, intensity, strategy), and
    /// returned once its `started` hook has returned. A child whose start
    /// fails is not added ([`ChildError::StartFailed`]); a name in use is
    /// refused ([`ChildError::AlreadyPresent`]).
    pub async fn start_child<A: Actor>(&self, spec: ChildSpec<A>) -> Result<ActorRef<A>, ChildError> {
        match self.request(Request::Start(spec.spec)).await? {
            Reply::Started(started) => started.map(|any| match any.downcast::<ActorRef<A>>() {
                Ok(actor) => *actor,
                Err(_) => unreachable!("a ChildSpec<A> starts an A"),
            }),
            _ => Err(ChildError::SupervisorStopped),
        }
    }

    /// Stops the child called `name` as its shutdown policy says (OTP's
    /// `terminate_child`); it is not restarted. Its spec is kept for
    /// [`restart_child`](Self::restart_child), except a temporary child's,
    /// which is deleted.
    pub async fn terminate_child(&self, name: &str) -> Result<(), ChildError> {
        self.done(Request::Terminate(name.to_owned())).await
    }

    /// Starts a terminated child again from its spec (a new actor: take a
    /// new ref with [`child`](Self::child)).
    pub async fn restart_child(&self, name: &str) -> Result<(), ChildError> {
        self.done(Request::Restart(name.to_owned())).await
    }

    /// Deletes a terminated child's spec.
    pub async fn delete_child(&self, name: &str) -> Result<(), ChildError> {
        self.done(Request::Delete(name.to_owned())).await
    }

    /// Every child, in start order, with its state (OTP's `which_children`).
    pub async fn children(&self) -> Result<Vec<ChildInfo>, ChildError> {
        match self.request(Request::Which).await? {
            Reply::Which(children) => Ok(children),
            _ => Err(ChildError::SupervisorStopped),
        }
    }

    /// How many children there are (OTP's `count_children`).
    pub async fn count_children(&self) -> Result<ChildCounts, ChildError> {
        match self.request(Request::Count).await? {
            Reply::Count(counts) => Ok(counts),
            _ => Err(ChildError::SupervisorStopped),
        }
    }

    /// The supervisor's events from now on: restarts, children leaving,
    /// giving up. Events are kept for a slow reader up to 256; beyond that
    /// the oldest are dropped and the receiver reports how many it missed
    /// (`RecvError::Lagged`).
    pub async fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SupervisorEvent> {
        match self.request(Request::Subscribe).await {
            Ok(Reply::Events(events)) => events,
            // A stopped supervisor: a receiver that ends at once.
            _ => tokio::sync::broadcast::channel(1).1,
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("window", &self.window)
            .field("children", &self.children.by_seq.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(b.delay(0), Duration::from_millis(10));
        assert_eq!(b.delay(1), Duration::from_millis(20));
        assert_eq!(b.delay(3), Duration::from_millis(80));
        assert_eq!(b.delay(4), Duration::from_millis(100));
        assert_eq!(b.delay(200), Duration::from_millis(100));
    }
}
