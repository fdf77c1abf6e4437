//! [`Context`]: what a running actor can do besides handling its message.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::cell::{ActorCell, Signal};
use crate::runtime::{self, SpawnArgs};
use crate::{
    Actor, ActorId, ActorRef, ActorSystem, ExitReason, Handler, Message, SpawnError, SpawnOptions, Terminated,
};

/// The running actor's view of itself and the system, passed to every handler
/// and hook: its own ref, children, death watch, links and timers.
///
/// ```
/// use std::time::Duration;
/// use actor_core::{Actor, ActorSystem, Context, Handler, Message, Terminated};
///
/// struct Worker;
/// impl Actor for Worker {}
///
/// /// Spawns a worker as a child, watches it, and greets itself later.
/// struct Boss {
///     ended: Option<tokio::sync::oneshot::Sender<Terminated>>,
/// }
/// impl Actor for Boss {
///     async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), actor_core::ActorError> {
///         let worker = ctx.spawn(Worker);
///         ctx.watch(&worker);
///         worker.stop();
///         ctx.send_after(Duration::from_millis(10), Hello);
///         Ok(())
///     }
///     async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
///         if let Some(tx) = self.ended.take() {
///             let _ = tx.send(t);
///         }
///     }
/// }
///
/// struct Hello;
/// impl Message for Hello {
///     type Reply = ();
/// }
/// impl Handler<Hello> for Boss {
///     async fn handle(&mut self, _: Hello, ctx: &mut Context<Self>) {
///         ctx.stop();
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = ActorSystem::new("demo");
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// let boss = system.spawn(Boss { ended: Some(tx) });
/// let ended = rx.await.unwrap();
/// assert_eq!(ended.reason, actor_core::ExitReason::Normal);
/// boss.wait_for_stop().await; // it stopped itself on `Hello`
/// # system.shutdown().await;
/// # }
/// ```
pub struct Context<A: Actor> {
    myself: ActorRef<A>,
    system: ActorSystem,
    parent: Option<Weak<ActorCell>>,
    /// Children and timers, allocated on first use: most actors have neither,
    /// and every idle actor carries its context.
    extra: Option<Box<Extra>>,
    /// A stop the actor asked for, carried out after the current handler.
    pub(crate) stop: Option<Box<ExitReason>>,
}

#[derive(Default)]
struct Extra {
    /// Live children, in spawn order (ids grow with spawn order).
    children: BTreeMap<ActorId, Arc<ActorCell>>,
    timers: Vec<AbortHandle>,
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(myself: ActorRef<A>, system: ActorSystem, parent: Option<Weak<ActorCell>>) -> Self {
        Self { myself, system, parent, extra: None, stop: None }
    }

    /// A ref to this actor.
    pub fn myself(&self) -> &ActorRef<A> {
        &self.myself
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.myself.id()
    }

    /// The system this actor runs in.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    pub(crate) fn parent(&self) -> Option<Arc<ActorCell>> {
        self.parent.as_ref().and_then(Weak::upgrade)
    }

    /// Stops this actor normally once the current handler returns.
    pub fn stop(&mut self) {
        self.stop = Some(Box::new(ExitReason::Normal));
    }

    /// Fails this actor with [`ExitReason::Failed`] once the current handler
    /// returns; its supervisor, links and watchers see the failure.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.stop = Some(Box::new(ExitReason::Failed(reason.into())));
    }

    /// Spawns a child actor with default options. The child is stopped (and
    /// awaited) before this actor's [`stopped`](Actor::stopped) hook runs.
    pub fn spawn<B: Actor>(&mut self, actor: B) -> ActorRef<B> {
        let child = runtime::spawn_unnamed(&self.system, Some(actor), self.child_args(SpawnOptions::new(), None));
        self.adopt(child)
    }

    /// Spawns a child actor with options (name, mailbox).
    pub fn spawn_with<B: Actor>(&mut self, actor: B, options: SpawnOptions) -> Result<ActorRef<B>, SpawnError> {
        let child = runtime::spawn(&self.system, Some(actor), self.child_args(options, None))?;
        Ok(self.adopt(child))
    }

    /// Spawns a supervised child; `options` must carry no registered name.
    pub(crate) fn spawn_supervised<B: Actor>(
        &mut self,
        options: SpawnOptions,
        supervision: runtime::Supervision<B>,
    ) -> ActorRef<B> {
        let child = runtime::spawn_unnamed(&self.system, None, self.child_args(options, Some(supervision)));
        self.adopt(child)
    }

    fn child_args<B: Actor>(
        &self,
        options: SpawnOptions,
        supervision: Option<runtime::Supervision<B>>,
    ) -> SpawnArgs<B> {
        SpawnArgs { options, parent: Some(self.myself.cell().clone()), supervision }
    }

    /// Records a new child, to be stopped before this actor.
    fn adopt<B: Actor>(&mut self, child: ActorRef<B>) -> ActorRef<B> {
        self.extra().children.insert(child.id(), child.cell().clone());
        child
    }

    /// The ids of this actor's live children, oldest first.
    pub fn children(&self) -> impl Iterator<Item = ActorId> + '_ {
        self.extra.iter().flat_map(|e| e.children.keys().copied())
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Forgets a child that stopped for good.
    pub(crate) fn remove_child(&mut self, id: ActorId) {
        if let Some(extra) = &mut self.extra {
            extra.children.remove(&id);
        }
    }

    /// Takes the stop the actor asked for, if any.
    pub(crate) fn take_stop(&mut self) -> Option<ExitReason> {
        self.stop.take().map(|r| *r)
    }

    /// Watches `other`: when it stops, [`Actor::on_terminated`] receives one
    /// [`Terminated`] for this watch. Watching an actor that has already stopped
    /// delivers the notice at once. Each call is one watch.
    pub fn watch<B: Actor>(&mut self, other: &ActorRef<B>) {
        watch_cell(self.myself.cell(), other.cell(), other.id());
    }

    /// Removes one watch of `other`. A notice already queued is still delivered.
    pub fn unwatch<B: Actor>(&mut self, other: &ActorRef<B>) {
        other.cell().remove_watcher(self.id());
    }

    /// Links this actor and `other` both ways, as Erlang's `link`: when either
    /// stops, the other's [`Actor::on_link_exit`] decides whether it stops too
    /// (by default it does unless the exit was normal). Linking to an actor that
    /// has already stopped delivers an exit with [`ExitReason::NoProc`] at once
    /// (OTP's `noproc`: abnormal, so a non-trapping linker stops too).
    pub fn link<B: Actor>(&mut self, other: &ActorRef<B>) {
        let me = self.myself.cell();
        if other.id() == me.id() {
            return;
        }
        match other.cell().add_link(me) {
            Ok(()) => {
                if let Err(reason) = me.add_link(other.cell()) {
                    // This actor is stopping: undo the other end.
                    other.cell().remove_link(me.id());
                    tracing::debug!(actor = %me, %reason, "link while stopping ignored");
                } else if let Some(remote) = other.remote_endpoint() {
                    // Across nodes the other end is told, so the link works
                    // both ways.
                    remote.link(me.id());
                }
            }
            // OTP's `noproc`: abnormal whatever the dead actor's reason, so
            // a linker that does not trap exits does not run on alone.
            // A remote actor known lost keeps that reason (`NodeDown`, OTP's
            // `noconnection`).
            Err(reason) => {
                let lost = reason == ExitReason::NodeDown && other.remote_endpoint().is_some();
                let reason = if lost { reason } else { ExitReason::NoProc };
                me.signal(Signal::LinkExit(Terminated { id: other.id(), reason }))
            }
        }
    }

    /// Removes the link with `other`, both ways.
    pub fn unlink<B: Actor>(&mut self, other: &ActorRef<B>) {
        other.cell().remove_link(self.id());
        self.myself.cell().remove_link(other.id());
        if let Some(remote) = other.remote_endpoint() {
            remote.unlink(self.id());
        }
    }

    /// Sends `msg` to this actor after `delay`. Cancelled when the actor stops
    /// (or restarts) or through the returned handle.
    pub fn send_after<M>(&mut self, delay: Duration, msg: M) -> Timer
    where
        A: Handler<M>,
        M: Message,
    {
        let me = self.myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.tell(msg).await;
        });
        self.keep_timer(task.abort_handle())
    }

    /// Sends a clone of `msg` to this actor every `period`, the first after one
    /// period. A tick that finds the mailbox full waits for room; ticks missed
    /// meanwhile are skipped, not bunched. Cancelled when the actor stops (or
    /// restarts) or through the returned handle.
    pub fn send_interval<M>(&mut self, period: Duration, msg: M) -> Timer
    where
        A: Handler<M>,
        M: Message + Clone,
    {
        let me = self.myself.clone();
        let period = period.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(crate::actor_ref::deadline_after(period), period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if me.tell(msg.clone()).await.is_err() {
                    break;
                }
            }
        });
        self.keep_timer(task.abort_handle())
    }

    fn keep_timer(&mut self, handle: AbortHandle) -> Timer {
        // Forget finished timers now and then so a long-lived actor that keeps
        // arming one-shot timers does not grow without bound.
        let timers = &mut self.extra().timers;
        if timers.len() >= 64 && timers.len().is_power_of_two() {
            timers.retain(|t| !t.is_finished());
        }
        timers.push(handle.clone());
        Timer { handle }
    }

    pub(crate) fn cancel_timers(&mut self) {
        let Some(extra) = &mut self.extra else { return };
        for t in extra.timers.drain(..) {
            t.abort();
        }
    }

    /// Whether the actor has live children.
    pub(crate) fn has_children(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| !e.children.is_empty())
    }

    /// Stops every child, youngest first, each as its shutdown policy says
    /// (killed if it takes longer), waiting for each.
    pub(crate) async fn stop_children(&mut self) {
        // Each child stays listed while it stops: if this actor is killed
        // meanwhile, its guard kills the child too.
        while let Some(child) = self.extra.as_ref().and_then(|e| e.children.last_key_value().map(|(_, c)| c.clone())) {
            child.stop_by_policy(ExitReason::Shutdown).await;
            if let Some(extra) = self.extra.as_mut() {
                extra.children.remove(&child.id());
            }
        }
    }

    /// The cells of the live children.
    pub(crate) fn child_cells(&self) -> Vec<Arc<ActorCell>> {
        self.extra.iter().flat_map(|e| e.children.values().cloned()).collect()
    }
}

/// A timer armed by [`Context::send_after`] or [`Context::send_interval`].
/// Dropping it does not cancel the timer; [`cancel`](Self::cancel) does.
#[derive(Debug, Clone)]
pub struct Timer {
    handle: AbortHandle,
}

impl Timer {
    /// Cancels the timer; a message it already sent stays in the mailbox.
    pub fn cancel(&self) {
        self.handle.abort();
    }

    /// Whether the timer has fired for the last time or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// `watcher` watches `target` (id `id`): its notice comes when the target
/// stops, at once if it already has.
pub(crate) fn watch_cell(watcher: &Arc<ActorCell>, target: &ActorCell, id: ActorId) {
    if let Err(reason) = target.add_watcher(watcher) {
        watcher.signal(Signal::Terminated(Terminated { id, reason }));
    }
}
