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
//! **Where this differs from OTP.**
//! - A child that fails while the supervisor starts does not fail the
//!   supervisor's own start; it is restarted like any failing child, within the
//!   intensity limit.
//! - There is no shutdown timeout or brutal kill yet: a child stuck in a
//!   handler delays its supervisor's restarts and shutdown until it returns.
//! - `Terminated` and link exits are system signals: they can overtake
//!   messages the dead actor sent before it died.
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
//! assert!(db.is_some());
//! system.shutdown().await;
//! # }
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cell::{ActorCell, Signal};
use crate::runtime::{ChildReport, Supervision};
use crate::{
    Actor, ActorError, ActorId, ActorRef, AskError, Context, ExitReason, Handler, Mailbox, Message, SpawnOptions,
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
/// let worker = sup.child::<Worker>("worker").await.unwrap().unwrap();
/// worker.tell(Crash).await.unwrap();
/// // Restarted in place: the same ref reaches the new instance.
/// while sup.child::<Worker>("worker").await.unwrap().is_none() {}
/// assert!(worker.is_alive());
/// system.shutdown().await;
/// # }
/// ```
pub struct Supervisor {
    strategy: Strategy,
    max_restarts: u32,
    window: Duration,
    backoff: Option<Backoff>,
    specs: Vec<ChildSpec>,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
}

struct ChildSpec {
    name: Arc<str>,
    restart: Restart,
    start: Arc<dyn StartChild>,
}

struct Child {
    name: Arc<str>,
    restart: Restart,
    cell: Arc<ActorCell>,
    actor_ref: Box<dyn Any + Send + Sync>,
    /// The instance now running (or waiting): 0 at first, one more per restart.
    generation: u64,
    consecutive: u32,
    last_restart: Option<Instant>,
}

trait StartChild: Send + Sync {
    fn start(
        &self,
        ctx: &mut Context<Supervisor>,
        name: &str,
        started: oneshot::Sender<()>,
    ) -> (Arc<ActorCell>, Box<dyn Any + Send + Sync>);
}

struct Factory<A, F> {
    make: Arc<F>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor, F: Fn() -> A + Send + Sync + 'static> StartChild for Factory<A, F> {
    fn start(
        &self,
        ctx: &mut Context<Supervisor>,
        name: &str,
        started: oneshot::Sender<()>,
    ) -> (Arc<ActorCell>, Box<dyn Any + Send + Sync>) {
        let sup = ctx.myself().downgrade();
        let report = Box::new(move |report: ChildReport| {
            if let Some(sup) = sup.upgrade() {
                // The supervisor's mailbox is unbounded: this only fails once it stopped.
                let _ = sup.try_tell(ChildExit(report));
            }
        });
        let make = self.make.clone();
        let supervision = Supervision { factory: Arc::new(move || make()), report, started: Some(started) };
        let options = SpawnOptions { label: Some(name.to_owned()), ..SpawnOptions::new() };
        let child = ctx.spawn_supervised::<A>(options, supervision);
        (child.cell().clone(), Box::new(child))
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
            children: Vec::new(),
            restarts: VecDeque::new(),
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

    /// Adds a child, built by `factory` at start and at every restart. Children
    /// start in the order they are added. `name` labels the child in logs and
    /// in [`child`](ActorRef::child) queries; it is not registered in the system.
    pub fn child<A, F>(mut self, name: impl Into<String>, restart: Restart, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let name: Arc<str> = Arc::from(name.into());
        self.specs.push(ChildSpec {
            name,
            restart,
            start: Arc::new(Factory { make: Arc::new(factory), _actor: PhantomData }),
        });
        self
    }

    /// The configured strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn position(&self, id: ActorId) -> Option<usize> {
        self.children.iter().position(|c| c.cell.id() == id)
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

    /// Ends the running instances of `group` (except the failed child, whose
    /// instance already ended), youngest first. Temporary children are stopped
    /// for good and dropped from the group.
    async fn suspend(&mut self, group: &mut Vec<ActorId>, failed: ActorId) {
        for id in group.clone().into_iter().rev() {
            if id == failed {
                continue;
            }
            let Some(pos) = self.position(id) else { continue };
            let cell = self.children[pos].cell.clone();
            if self.children[pos].restart == Restart::Temporary {
                cell.signal(Signal::Stop(ExitReason::Shutdown));
                cell.wait_exit().await;
                self.children.remove(pos);
                group.retain(|g| *g != id);
            } else {
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
            let Some(pos) = self.position(id) else { continue };
            if self.children[pos].generation != generation {
                continue;
            }
            self.children[pos].generation += 1;
            let (ack, started) = oneshot::channel();
            self.children[pos].cell.signal(Signal::Restart(Some(ack)));
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

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for i in 0..self.specs.len() {
            let (name, restart, start) =
                (self.specs[i].name.clone(), self.specs[i].restart, self.specs[i].start.clone());
            let (ack, started) = oneshot::channel();
            let (cell, actor_ref) = start.start(ctx, &name, ack);
            self.children.push(Child {
                name,
                restart,
                cell,
                actor_ref,
                generation: 0,
                consecutive: 0,
                last_restart: None,
            });
            // If the child fails while starting, the ack is dropped and its exit
            // report is handled once `started` has returned.
            let _ = started.await;
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
        let Some(pos) = self.position(report.id) else { return };
        if report.terminal {
            self.children.remove(pos);
            return;
        }
        if report.generation != self.children[pos].generation {
            // An instance already replaced by a group restart: nothing to do.
            tracing::debug!(child = %self.children[pos].cell, "stale exit report ignored");
            return;
        }
        let (cell, child_restart) = (self.children[pos].cell.clone(), self.children[pos].restart);
        let restart = match child_restart {
            Restart::Permanent => true,
            Restart::Transient => report.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            tracing::debug!(child = %cell, reason = %report.reason, "child not restarted");
            cell.signal(Signal::Stop(report.reason));
            self.children.remove(pos);
            return;
        }
        if !self.allow_restart() {
            tracing::error!(
                supervisor = %ctx.myself(), child = %cell, reason = %report.reason,
                max_restarts = self.max_restarts, window = ?self.window,
                "restart intensity exceeded; supervisor gives up"
            );
            ctx.stop = Some(Box::new(ExitReason::MaxRestartsExceeded));
            return;
        }
        tracing::warn!(supervisor = %ctx.myself(), child = %cell, reason = %report.reason, "restarting child");
        let mut group: Vec<ActorId> = match self.strategy {
            Strategy::OneForOne => vec![report.id],
            Strategy::OneForAll => self.children.iter().map(|c| c.cell.id()).collect(),
            Strategy::RestForOne => self.children[pos..].iter().map(|c| c.cell.id()).collect(),
        };
        self.suspend(&mut group, report.id).await;
        let delay = {
            let window = self.window;
            let Some(pos) = self.position(report.id) else { return };
            let child = &mut self.children[pos];
            let now = Instant::now();
            child.consecutive = match child.last_restart {
                Some(t) if now.duration_since(t) <= window => child.consecutive.saturating_add(1),
                _ => 0,
            };
            child.last_restart = Some(now);
            self.backoff.map(|b| b.delay(child.consecutive)).unwrap_or_default()
        };
        let group: Vec<(ActorId, u64)> = group
            .into_iter()
            .filter_map(|id| self.position(id).map(|pos| (id, self.children[pos].generation)))
            .collect();
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

/// Asks a [`Supervisor`] for a ref to its child called `name`, if it is an `A`.
/// Usually sent through [`ActorRef::child`].
pub struct WhichChild<A> {
    name: String,
    _actor: PhantomData<fn() -> A>,
}

impl<A> WhichChild<A> {
    /// A query for the child called `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into(), _actor: PhantomData }
    }
}

#[diagnostic::do_not_recommend]
impl<A: Actor> Message for WhichChild<A> {
    type Reply = Option<ActorRef<A>>;
}

#[diagnostic::do_not_recommend]
impl<A: Actor> Handler<WhichChild<A>> for Supervisor {
    async fn handle(&mut self, msg: WhichChild<A>, _ctx: &mut Context<Self>) -> Option<ActorRef<A>> {
        self.children
            .iter()
            .find(|c| *c.name == *msg.name)
            .and_then(|c| c.actor_ref.downcast_ref::<ActorRef<A>>().cloned())
    }
}

impl ActorRef<Supervisor> {
    /// A ref to the supervisor's child called `name`, if it is running (or
    /// restarting) and is an `A`.
    pub async fn child<A: Actor>(&self, name: &str) -> Result<Option<ActorRef<A>>, AskError<WhichChild<A>>> {
        self.ask(WhichChild::named(name)).await
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("window", &self.window)
            .field("children", &self.children.iter().map(|c| &*c.name).collect::<Vec<_>>())
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
