//! The untyped half of an actor: identity, system-signal queue, watchers, links
//! and registered names. Shared by every `ActorRef` to the actor and reachable
//! without knowing the actor's type.

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use std::task::{Context as TaskContext, Poll};

use atomic_waker::AtomicWaker;
use tokio::sync::{Notify, oneshot};

use crate::mailbox::Gate;
use crate::{ActorId, ExitReason, Mailbox, Shutdown, Terminated};

/// Told once an instance's `started` hook returned: `Ok`, or why it failed.
pub(crate) type StartAck = oneshot::Sender<Result<(), ExitReason>>;

/// A system signal. Signals overtake user messages and are never refused.
pub(crate) enum Signal {
    /// Stop for good with this reason (from `ActorRef::stop`, a parent, a
    /// supervisor or the system). A supervised child is not restarted.
    Stop(ExitReason),
    /// A watched actor stopped.
    Terminated(Terminated),
    /// A linked actor stopped.
    LinkExit(Terminated),
    /// A child stopped for good: forget it.
    ChildTerminated(ActorId),
    /// Supervisor: end the current instance (keep the mailbox) and wait for
    /// `Restart`. Acknowledged once the instance has stopped.
    Suspend(oneshot::Sender<()>),
    /// Supervisor: start a fresh instance. Acknowledged once `started`
    /// returned (with its failure, if it failed).
    Restart(Option<StartAck>),
    /// An operator's snapshot of the tree: answer with the live children
    /// (between two messages; dropped unanswered if the actor ends).
    Children(oneshot::Sender<Vec<Arc<ActorCell>>>),
}

pub(crate) struct ActorCell {
    /// Admission control for the user mailbox.
    pub(crate) gate: Gate,
    id: ActorId,
    type_name: &'static str,
    name: Option<Arc<str>>,
    has_signals: AtomicBool,
    /// Set when the actor takes a batch of messages; cleared by
    /// [`take_active`](Self::take_active) (idle detection).
    active: AtomicBool,
    /// A local stand-in for an actor on another node: it has no task, so
    /// signals to it are dropped, except the exit of a linked local actor,
    /// which goes to the remote actor through this endpoint.
    stand_in: bool,
    endpoint: Option<Arc<dyn crate::remote::RemoteEndpoint>>,
    /// The actor task's waker while it waits for work.
    wake: AtomicWaker,
    exited: Notify,
    state: Mutex<CellState>,
    /// What stopping it may take (see [`Shutdown`]).
    shutdown: Shutdown,
    /// Its task, to kill it (none for a stand-in). Set once, without the
    /// state's lock: the new task may be holding it on another worker.
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct CellState {
    signals: VecDeque<Signal>,
    exit: Option<ExitReason>,
    /// An instance's `started` hook has returned.
    started: bool,
    /// Set once the finaliser is done; `wait_exit` waits for this.
    done: bool,
    /// Watchers, links and names, in one vector: most actors have none.
    relations: Vec<Relation>,
}

enum Relation {
    Watcher(Weak<ActorCell>),
    Link(Weak<ActorCell>),
    Name(String),
}

/// Drops watchers and links whose actor is gone, when the list has doubled
/// since the last sweep: a long-lived actor watched by many short-lived ones
/// must not grow without bound.
fn prune(relations: &mut Vec<Relation>) {
    if relations.len() >= 8 && relations.len().is_power_of_two() {
        relations.retain(|r| match r {
            Relation::Watcher(w) | Relation::Link(w) => w.strong_count() > 0,
            Relation::Name(_) => true,
        });
    }
}

impl Relation {
    fn is_link_to(&self, id: ActorId) -> bool {
        matches!(self, Relation::Link(l) if l.upgrade().is_some_and(|c| c.id == id))
    }
}

/// What a dead actor leaves behind for its finaliser to notify.
pub(crate) struct Remains {
    pub(crate) watchers: Vec<Weak<ActorCell>>,
    pub(crate) links: Vec<Weak<ActorCell>>,
    pub(crate) names: Vec<String>,
}

impl ActorCell {
    pub(crate) fn new(type_name: &'static str, name: Option<Arc<str>>, mailbox: Mailbox, shutdown: Shutdown) -> Self {
        Self {
            gate: Gate::new(mailbox),
            id: ActorId::next(),
            type_name,
            name,
            has_signals: AtomicBool::new(false),
            active: AtomicBool::new(false),
            stand_in: false,
            endpoint: None,
            wake: AtomicWaker::new(),
            exited: Notify::new(),
            state: Mutex::new(CellState::default()),
            shutdown,
            task: std::sync::OnceLock::new(),
        }
    }

    /// The stand-in of a remote actor, labelled e.g. `counter@node-b`.
    pub(crate) fn new_stand_in(
        type_name: &'static str,
        label: Arc<str>,
        endpoint: Arc<dyn crate::remote::RemoteEndpoint>,
    ) -> Self {
        Self {
            stand_in: true,
            endpoint: Some(endpoint),
            ..Self::new(type_name, Some(label), Mailbox::Unbounded, Shutdown::Infinity)
        }
    }

    pub(crate) fn id(&self) -> ActorId {
        self.id
    }

    pub(crate) fn type_name(&self) -> &'static str {
        self.type_name
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // state itself is always left consistent, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the actor for its children ([`Signal::Children`]), unless a
    /// request is pending already (an actor busy in a long handler does
    /// not pile them up) or it has ended; false then.
    pub(crate) fn ask_children(&self, reply: oneshot::Sender<Vec<Arc<ActorCell>>>) -> bool {
        !self.stand_in
            && self.queue_signal(Signal::Children(reply), |queued| {
                !queued.iter().any(|s| matches!(s, Signal::Children(_)))
            })
    }

    /// Queues a signal and wakes the actor. Signals to a dead actor are dropped.
    pub(crate) fn signal(&self, sig: Signal) {
        if self.stand_in {
            // A linked local actor exited: the link reaches across.
            if let (Signal::LinkExit(exit), Some(endpoint)) = (&sig, &self.endpoint)
                && self.lock().exit.is_none()
            {
                endpoint.link_exit(exit.id, &exit.reason);
            }
            return;
        }
        self.queue_signal(sig, |_| true);
    }

    /// Queues `sig` and wakes the actor, if it has not ended and `wanted`
    /// says so of the signals queued now; true if it was queued.
    fn queue_signal(&self, sig: Signal, wanted: impl FnOnce(&VecDeque<Signal>) -> bool) -> bool {
        {
            let mut st = self.lock();
            if st.exit.is_some() || !wanted(&st.signals) {
                return false;
            }
            st.signals.push_back(sig);
        }
        self.has_signals.store(true, Ordering::SeqCst);
        self.wake.wake();
        true
    }

    /// Puts signals back at the front of the queue, in order (notices kept
    /// while a supervised actor waited between instances).
    pub(crate) fn requeue_front(&self, signals: Vec<Signal>) {
        if signals.is_empty() {
            return;
        }
        {
            let mut st = self.lock();
            if st.exit.is_some() {
                return;
            }
            for sig in signals.into_iter().rev() {
                st.signals.push_front(sig);
            }
        }
        self.has_signals.store(true, Ordering::SeqCst);
        self.wake.wake();
    }

    /// Notes that the actor took messages.
    pub(crate) fn mark_active(&self) {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the actor took messages since the last call.
    pub(crate) fn take_active(&self) -> bool {
        self.active.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn has_signals(&self) -> bool {
        self.has_signals.load(Ordering::SeqCst)
    }

    pub(crate) fn next_signal(&self) -> Option<Signal> {
        let mut st = self.lock();
        let sig = st.signals.pop_front();
        if st.signals.is_empty() {
            self.has_signals.store(false, Ordering::SeqCst);
        }
        sig
    }

    /// Wakes the actor task if it waits for work.
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }

    /// Registers the actor task to be woken by the next signal or message.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.wake.register(waker);
    }

    /// Polls for a queued signal, registering the task to be woken by the
    /// next one.
    pub(crate) fn poll_signal(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.has_signals() {
            return Poll::Ready(());
        }
        self.wake.register(cx.waker());
        if self.has_signals() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves once a signal is queued.
    pub(crate) async fn signalled(&self) {
        std::future::poll_fn(|cx| self.poll_signal(cx)).await;
    }

    pub(crate) fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().exit.clone()
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.lock().exit.is_none()
    }

    /// Records the actor's task, so that it can be killed.
    pub(crate) fn set_task(&self, task: tokio::task::AbortHandle) {
        let _ = self.task.set(task);
    }

    /// Drops the actor's task at its next await (its exit reason becomes
    /// `Killed`). Nothing happens to an actor that has stopped.
    pub(crate) fn kill(&self) {
        if let Some(task) = self.task.get()
            && self.is_alive()
        {
            tracing::warn!(actor = %self, "killing the actor");
            task.abort();
        }
    }

    /// Stops the actor as its [`Shutdown`] policy says, and waits until it
    /// has: asked to stop with `reason`, then killed after the timeout (or
    /// at once for a brutal kill).
    pub(crate) async fn stop_by_policy(&self, reason: ExitReason) -> ExitReason {
        self.begin_stop(reason);
        self.finish_stop(tokio::time::Instant::now()).await
    }

    /// The first half of [`stop_by_policy`](Self::stop_by_policy): the stop
    /// signal, or the kill.
    pub(crate) fn begin_stop(&self, reason: ExitReason) {
        match self.shutdown {
            Shutdown::BrutalKill => self.kill(),
            _ => self.signal(Signal::Stop(reason)),
        }
    }

    /// The second half: waits for the end, killing the actor once its
    /// timeout, counted from `since`, has passed.
    pub(crate) async fn finish_stop(&self, since: tokio::time::Instant) -> ExitReason {
        match self.shutdown {
            Shutdown::Infinity => return self.wait_exit().await,
            Shutdown::BrutalKill => {}
            Shutdown::Timeout(limit) => {
                // A timeout too long to represent is no timeout.
                let Some(deadline) = since.checked_add(limit) else { return self.wait_exit().await };
                if let Ok(reason) = tokio::time::timeout_at(deadline, self.wait_exit()).await {
                    return reason;
                }
                tracing::warn!(actor = %self, ?limit, "did not stop within its shutdown timeout");
                self.kill();
            }
        }
        // Killed: the task ends at its next await. One that never yields
        // cannot be interrupted; say so once.
        match tokio::time::timeout(std::time::Duration::from_secs(1), self.wait_exit()).await {
            Ok(reason) => reason,
            Err(_) => {
                tracing::error!(
                    actor = %self,
                    "still running a second after it was killed: a handler that never yields cannot be interrupted"
                );
                self.wait_exit().await
            }
        }
    }

    /// An instance's `started` hook returned: wakes [`wait_started`](Self::wait_started).
    pub(crate) fn mark_started(&self) {
        let mut st = self.lock();
        if !st.started {
            st.started = true;
            drop(st);
            self.exited.notify_waiters();
        }
    }

    /// Waits until an instance of the actor has started (`Ok`), or the actor
    /// has stopped without one starting (its reason).
    pub(crate) async fn wait_started(&self) -> Result<(), ExitReason> {
        self.wait_until(|st| match (st.started, st.done, &st.exit) {
            (true, _, _) => Some(Ok(())),
            (false, true, Some(reason)) => Some(Err(reason.clone())),
            _ => None,
        })
        .await
    }

    /// Waits until the actor has stopped and returns why.
    pub(crate) async fn wait_exit(&self) -> ExitReason {
        self.wait_until(|st| match (st.done, &st.exit) {
            (true, Some(reason)) => Some(reason.clone()),
            _ => None,
        })
        .await
    }

    /// Waits until `ready` says something of the state (checked now and on
    /// every start or exit notice).
    async fn wait_until<T>(&self, ready: impl Fn(&CellState) -> Option<T>) -> T {
        loop {
            let mut notified = pin!(self.exited.notified());
            notified.as_mut().enable();
            if let Some(out) = ready(&self.lock()) {
                return out;
            }
            notified.await;
        }
    }

    /// Adds a watcher; if the actor is already dead, returns its reason so the
    /// caller can notify at once.
    pub(crate) fn add_watcher(&self, watcher: &Arc<ActorCell>) -> Result<(), ExitReason> {
        let mut st = self.lock();
        match &st.exit {
            Some(reason) => Err(reason.clone()),
            None => {
                prune(&mut st.relations);
                st.relations.push(Relation::Watcher(Arc::downgrade(watcher)));
                Ok(())
            }
        }
    }

    /// Removes one watch by `watcher`.
    pub(crate) fn remove_watcher(&self, watcher: ActorId) {
        let mut st = self.lock();
        let pos = st
            .relations
            .iter()
            .position(|r| matches!(r, Relation::Watcher(w) if w.upgrade().is_some_and(|c| c.id == watcher)));
        if let Some(pos) = pos {
            st.relations.remove(pos);
        }
    }

    /// Adds a link end; fails with the reason if the actor is already dead.
    pub(crate) fn add_link(&self, other: &Arc<ActorCell>) -> Result<(), ExitReason> {
        let mut st = self.lock();
        match &st.exit {
            Some(reason) => Err(reason.clone()),
            None => {
                if !st.relations.iter().any(|r| r.is_link_to(other.id)) {
                    prune(&mut st.relations);
                    st.relations.push(Relation::Link(Arc::downgrade(other)));
                }
                Ok(())
            }
        }
    }

    pub(crate) fn remove_link(&self, other: ActorId) {
        self.lock().relations.retain(|r| !r.is_link_to(other));
    }

    /// Records a registered name; fails if the actor is already dead.
    pub(crate) fn add_name(&self, name: &str) -> Result<(), ExitReason> {
        let mut st = self.lock();
        match &st.exit {
            Some(reason) => Err(reason.clone()),
            None => {
                st.relations.push(Relation::Name(name.to_owned()));
                Ok(())
            }
        }
    }

    pub(crate) fn remove_name(&self, name: &str) {
        let mut st = self.lock();
        if let Some(pos) = st.relations.iter().position(|r| matches!(r, Relation::Name(n) if n == name)) {
            st.relations.remove(pos);
        }
    }

    /// Whether any live actor watches or is linked to this one.
    pub(crate) fn has_observers(&self) -> bool {
        self.lock().relations.iter().any(|r| match r {
            Relation::Watcher(w) | Relation::Link(w) => w.strong_count() > 0,
            Relation::Name(_) => false,
        })
    }

    /// Marks the actor dead (once) and hands back whom to notify.
    pub(crate) fn finish(&self, reason: ExitReason) -> Option<Remains> {
        let remains = {
            let mut st = self.lock();
            if st.exit.is_some() {
                return None;
            }
            st.exit = Some(reason);
            st.signals.clear();
            let mut remains = Remains { watchers: Vec::new(), links: Vec::new(), names: Vec::new() };
            for relation in std::mem::take(&mut st.relations) {
                match relation {
                    Relation::Watcher(w) => remains.watchers.push(w),
                    Relation::Link(l) => remains.links.push(l),
                    Relation::Name(n) => remains.names.push(n),
                }
            }
            remains
        };
        Some(remains)
    }

    /// Wakes everyone waiting in [`wait_exit`](Self::wait_exit); called once the
    /// finaliser has cleaned up after [`finish`](Self::finish).
    pub(crate) fn notify_exited(&self) {
        self.lock().done = true;
        self.exited.notify_waiters();
    }
}

impl fmt::Display for ActorCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}{}", self.id),
            None => write!(f, "{}{}", short_type_name(self.type_name), self.id),
        }
    }
}

/// `my_crate::module::Type<a::B>` → `Type<B>`, for readable logs.
pub(crate) fn short_type_name(full: &'static str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, ch) in full.char_indices() {
        if matches!(ch, '<' | '>' | ',' | ' ' | '(' | ')' | '[' | ']' | '&') {
            out.push_str(last_segment(&full[segment_start..i]));
            out.push(ch);
            segment_start = i + ch.len_utf8();
        }
    }
    out.push_str(last_segment(&full[segment_start..]));
    out
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_type_name("a::b::Counter"), "Counter");
        assert_eq!(short_type_name("a::W<b::X, c::Y>"), "W<X, Y>");
    }

    #[test]
    fn dead_watchers_are_pruned() {
        let target = ActorCell::new("T", None, Mailbox::default(), Shutdown::DEFAULT);
        for _ in 0..1000 {
            let watcher = Arc::new(ActorCell::new("W", None, Mailbox::default(), Shutdown::DEFAULT));
            target.add_watcher(&watcher).unwrap();
        }
        let kept = target.lock().relations.len();
        assert!(kept <= 16, "{kept} relations kept for dead watchers");
    }

    #[test]
    fn a_name_held_twice_is_released_once() {
        let cell = ActorCell::new("T", None, Mailbox::default(), Shutdown::DEFAULT);
        cell.add_name("n").unwrap();
        cell.add_name("n").unwrap();
        cell.remove_name("n");
        let names = cell.finish(ExitReason::Normal).unwrap().names;
        assert_eq!(names, ["n"]);
    }

    #[test]
    fn signals_after_death_are_dropped() {
        let cell = ActorCell::new("T", None, Mailbox::default(), Shutdown::DEFAULT);
        assert!(cell.finish(ExitReason::Normal).is_some());
        cell.notify_exited();
        assert!(cell.finish(ExitReason::Shutdown).is_none(), "finish happens once");
        cell.signal(Signal::Stop(ExitReason::Normal));
        assert!(!cell.has_signals());
        assert_eq!(cell.exit_reason(), Some(ExitReason::Normal));
    }
}
