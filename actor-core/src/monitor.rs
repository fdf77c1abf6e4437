//! Watching an actor from outside any actor (OTP's `monitor` from a
//! process that is not a `gen_server`): tests, `main`, request handlers of
//! a web framework.
//!
//! [`ActorSystem::monitor`] returns a [`Monitor`]: a future that resolves
//! with a [`Down`] notice once the actor stops, saying which monitor it
//! answers. Each call is a distinct monitor with its own [`MonitorId`];
//! [`Monitor::cancel`] (or dropping it) removes it, as `demonitor` does.
//! It works for refs to actors on other nodes too: the notice then comes
//! from the actor's node (or says `NodeDown` when the node is lost).
//!
//! ```
//! use actor_core::{Actor, ActorSystem, ExitReason};
//!
//! struct Worker;
//! impl Actor for Worker {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let system = ActorSystem::new("app");
//! let worker = system.spawn(Worker);
//! let monitor = system.monitor(&worker);
//! let id = monitor.id();
//! worker.stop();
//! let down = monitor.await;
//! assert_eq!((down.monitor, down.reason), (id, ExitReason::Normal));
//! # }
//! ```

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;

use tokio::sync::oneshot;

use crate::{Actor, ActorId, ActorRef, ActorSystem, Context, ExitReason, Terminated};

/// Which monitor a [`Down`] notice answers. Unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorId(u64);

impl fmt::Display for MonitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Monitor<{}>", self.0)
    }
}

/// The notice a [`Monitor`] resolves with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Down {
    /// The monitor this notice answers.
    pub monitor: MonitorId,
    /// The actor that stopped.
    pub actor: ActorId,
    /// Why it stopped.
    pub reason: ExitReason,
}

/// A watch on one actor, held outside any actor: `.await` it for the
/// [`Down`] notice. Dropping it (or [`cancel`](Self::cancel)) removes the
/// watch. Made by [`ActorSystem::monitor`].
#[must_use = "a monitor does nothing unless awaited; dropping it cancels it"]
pub struct Monitor {
    id: MonitorId,
    actor: ActorId,
    /// The watcher's answer (taken when the monitor is awaited).
    rx: Option<oneshot::Receiver<ExitReason>>,
    watcher: ActorRef<Watcher>,
    /// The watched actor's cell, to remove the watch on cancel.
    target: std::sync::Weak<crate::cell::ActorCell>,
    /// The actor's own end, for when the watcher is stopped first (the
    /// system shut down): a local actor's exit is read from it directly.
    local_exit: Option<std::sync::Arc<crate::cell::ActorCell>>,
}

impl Monitor {
    /// This monitor's id: the one its [`Down`] notice carries.
    pub fn id(&self) -> MonitorId {
        self.id
    }

    /// The watched actor.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Removes the watch (OTP's `demonitor`); no notice will come.
    pub fn cancel(self) {
        drop(self);
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The watch goes first (so the target holds no entry for it), then
        // the watcher (gone already once it answered).
        if let Some(target) = self.target.upgrade() {
            target.remove_watcher(self.watcher.id());
        }
        self.watcher.stop();
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").field("id", &self.id).field("actor", &self.actor).finish()
    }
}

impl IntoFuture for Monitor {
    type Output = Down;
    type IntoFuture = Pin<Box<dyn Future<Output = Down> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        let (id, actor) = (self.id, self.actor);
        let rx = self.rx.take();
        let local = self.local_exit.take();
        Box::pin(async move {
            // Keeps the watch while waiting; dropping the future cancels it.
            let _monitor = self;
            let answer = match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            let reason = match answer {
                Some(reason) => reason,
                // The watcher was stopped before the actor (the system shut
                // down): a local actor's reason is read from the actor; a
                // remote one's is unknown from here.
                None => match local {
                    Some(cell) => cell.wait_exit().await,
                    None => ExitReason::Shutdown,
                },
            };
            Down { monitor: id, actor, reason }
        })
    }
}

/// The actor behind a [`Monitor`]: it watches the target and reports the
/// notice (internal).
#[doc(hidden)]
pub struct Watcher {
    tx: Option<oneshot::Sender<ExitReason>>,
}

impl Actor for Watcher {
    async fn on_terminated(&mut self, ctx: &mut Context<Self>, terminated: Terminated) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(terminated.reason);
        }
        ctx.stop();
    }
}

impl ActorSystem {
    /// Watches `actor` from outside any actor: the returned [`Monitor`]
    /// resolves with a [`Down`] notice when it stops (at once if it already
    /// has). Each call is a distinct monitor; dropping one cancels it.
    ///
    /// A monitor is carried by a small top-level actor of this system (it
    /// counts in [`top_level_count`](Self::top_level_count) until it has
    /// answered or is cancelled). If this system shuts down first, a monitor
    /// of a local actor still resolves with that actor's reason; one of a
    /// remote actor, whose fate this node can no longer learn, resolves with
    /// [`ExitReason::Shutdown`].
    pub fn monitor<A: Actor>(&self, actor: &ActorRef<A>) -> Monitor {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = MonitorId(crate::entropy::number(&NEXT));
        let (tx, rx) = oneshot::channel();
        let watcher = self.spawn(Watcher { tx: Some(tx) });
        // Watched before this returns: a stop that follows is seen.
        crate::context::watch_cell(watcher.cell(), actor.cell(), actor.id());
        let local_exit = actor.remote_endpoint().is_none().then(|| actor.cell().clone());
        Monitor {
            id,
            actor: actor.id(),
            rx: Some(rx),
            watcher,
            target: std::sync::Arc::downgrade(actor.cell()),
            local_exit,
        }
    }
}
