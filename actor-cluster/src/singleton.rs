//! Cluster singletons: one instance of an actor in the whole cluster (or
//! among the members with a role), on the oldest member, reached from every
//! node through a proxy (as Akka's cluster singleton).
//!
//! Every node starts the same singleton ([`Cluster::singleton`]); each
//! gets a [`Singleton`] handle to send to it, wherever it runs. The
//! instance runs on the **oldest** eligible member: the one with the
//! smallest [`run`](crate::Member::run) (ties by id), among the members in
//! the view, reachable or not, that carry the role. Every node computes
//! the same oldest from the same view, so they agree without a vote.
//!
//! **Moves.** "Oldest" goes by the run, the node's start time: a node
//! that started earlier but joins later becomes the oldest when it joins.
//! Whenever the oldest changes, the old owner stops its instance (its
//! `stopping` hook runs) and only then withdraws the instance's
//! cluster-wide name; the new owner starts once it is connected to every
//! member and no other member still holds that name: **hand-over**. When
//! the oldest leaves ([`Node::shutdown`](actor_remote::Node::shutdown)),
//! this happens before the leave notice goes out. When the oldest is
//! downed (it crashed, or a split-brain resolver cut its side off), its
//! name goes with it, and the next oldest waits the
//! [removal margin](SingletonBuilder::removal_margin) after the down before
//! it starts the instance: **take-over**. The margin covers the time the
//! losing side of a partition may take to down itself; a node that downs
//! itself kills its instance at once (no `stopping` hook: it must be gone
//! before the other side's margin ends). So with a
//! [split-brain resolver](crate::sbr) and the default margin, two instances
//! never run at once unless a process stalls for longer than the margin
//! (a [lease](SingletonBuilder::lease) fences that too). A node that joins
//! at the instant a partition begins does not make both sides a majority:
//! the resolver counts a member only once the views converged on it (see
//! [`sbr`](crate::sbr)).
//!
//! **Leases.** With a [`Lease`] ([`SingletonBuilder::lease`]) a node also
//! needs the lease to start the instance, and kills it (at once, no
//! `stopping` hook) as soon as its lease [`check`](crate::lease::Lease::check)
//! fails, which happens a quarter of the lease's time to live before the
//! lease can go to another owner: at most one instance, even without a
//! resolver and even when the view is wrong, as long as the clocks run at
//! the same rate and the instance's task is not stuck in code that never
//! yields.
//!
//! **Without either**, each side of a partition downs the other and starts
//! its own instance: starting a singleton with neither logs a warning.
//!
//! **The proxy.** [`Singleton::tell`] and [`Singleton::ask`] go through a
//! buffer on this node (bounded: [`SingletonBuilder::buffer`], default
//! 1000 messages, plus the one being sent; a full buffer refuses with
//! [`SingletonError::Full`], handing the message back) to wherever the
//! instance runs now. While the instance moves, messages wait in the
//! buffer, and tells keep the order in which this node sent them; an ask
//! keeps its place too unless the instance's mailbox or connection is full
//! when its turn comes (it then waits on its own). Messages that reached
//! an instance that then stopped are lost, as any message to an actor that
//! stops: a tell is delivered at most once.
//!
//! If the instance stops by itself (it returned an error, or stopped), the
//! oldest member starts a new one a second later. The instance must not
//! await its own node's [`shutdown`](actor_remote::Node::shutdown): the
//! shutdown first stops the instance, which would cut that await short
//! (spawn the shutdown on a task instead).
//!
//! ```ignore
//! // Every node starts it, with the same name and settings; it runs on the
//! // oldest member, and every node's handle reaches it. (A complete,
//! // compiled version is in the README; `examples/work_queue` runs one.)
//! let scheduler = cluster.singleton("scheduler", Scheduler::default).start()?;
//! scheduler.tell(Tick)?;
//! let next = scheduler.ask(NextJob).await?;
//! println!("the scheduler runs on {:?}", scheduler.location());
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use actor_core::{Actor, ActorId, ActorRef, AskError, Handler, Message, SendError};
use actor_remote::RemoteActor;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::lease::Lease;
use crate::{Cluster, ClusterError, ClusterEvent, Member};

/// The prefix of the cluster-wide name a singleton's instance is
/// registered under (followed by the singleton's name).
pub const NAME_PREFIX: &str = "footlight.singleton.";

/// The default bound of a proxy's buffer.
pub const DEFAULT_BUFFER: usize = 1000;

/// How long after the instance stopped by itself a new one starts.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// How often a running instance's lease is checked.
const LEASE_CHECK: Duration = Duration::from_millis(100);

/// How long a refused lease waits before it is asked again.
const LEASE_RETRY: Duration = Duration::from_millis(500);

/// How long a stopping instance has before it is killed.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a node that should run the instance checks whether the
/// previous owner has handed over.
const HAND_OVER_CHECK: Duration = Duration::from_millis(100);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One message for the instance, as the proxy holds it: given the
/// instance, it sends; it hands itself back when the instance had stopped
/// (at once, or later through the proxy's [`Retry`] queue, for an ask
/// whose message came back after it went out).
type Op<A> = Box<dyn FnOnce(ActorRef<A>, Retry<A>) -> BoxFuture<Option<Pending<A>>> + Send>;

/// Where an op that came back after it went out returns to the proxy, with
/// the instance it went to.
type Retry<A> = mpsc::UnboundedSender<(ActorId, Pending<A>)>;

/// An op handed back, to send again once the instance is found.
struct Pending<A: Actor>(Op<A>);

/// Why a message for a singleton was refused.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SingletonError<M> {
    /// The proxy's buffer is full (the instance is moving, or slow); the
    /// message is handed back.
    #[error("the singleton's buffer is full; message not sent")]
    Full(M),
    /// The cluster on this node has stopped; the message is handed back.
    #[error("the cluster has stopped on this node; message not sent")]
    Stopped(M),
}

impl<M> fmt::Debug for SingletonError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SingletonError::Full(_) => f.write_str("Full(..)"),
            SingletonError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

/// Why an ask through a singleton's proxy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SingletonAskError {
    /// The proxy's buffer is full.
    #[error("the singleton's buffer is full; request not sent")]
    Full,
    /// The cluster on this node has stopped.
    #[error("the cluster has stopped on this node; request not sent")]
    Stopped,
    /// No reply within the ask's timeout (counted from the call, buffering
    /// included). The request may or may not have been handled.
    #[error("no reply from the singleton within the timeout")]
    Timeout,
    /// The instance stopped, or its node was lost, before it replied. The
    /// request may or may not have been handled.
    #[error("the singleton's instance stopped before replying")]
    NoReply,
    /// The request was refused on its way (say, its type cannot cross
    /// nodes).
    #[error("the request was refused: {0}")]
    Refused(String),
}

/// Starts a singleton (see [`Cluster::singleton`]).
pub struct SingletonBuilder<A: Actor> {
    cluster: Cluster,
    name: String,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    role: Option<String>,
    lease: Option<Arc<dyn Lease>>,
    buffer: usize,
    removal_margin: Option<Duration>,
}

impl<A: Actor> fmt::Debug for SingletonBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingletonBuilder")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("lease", &self.lease)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Cluster {
    /// A singleton named `name` whose instance `factory` makes (see the
    /// [`singleton`](crate::singleton) module): call it, with the same
    /// name and settings, on every node, then
    /// [`start`](SingletonBuilder::start).
    pub fn singleton<A, F>(&self, name: &str, factory: F) -> SingletonBuilder<A>
    where
        A: RemoteActor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        SingletonBuilder {
            cluster: self.clone(),
            name: name.to_owned(),
            factory: Arc::new(factory),
            role: None,
            lease: None,
            buffer: DEFAULT_BUFFER,
            removal_margin: None,
        }
    }
}

impl<A: RemoteActor> SingletonBuilder<A> {
    /// Runs the instance only on members with `role` (the oldest of them).
    /// Nodes without the role only proxy.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// Fences the instance with `lease` (this node as its owner): the
    /// instance starts only once the lease is held, and stops as soon as
    /// its check fails.
    pub fn lease(mut self, lease: Arc<dyn Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The most messages this node's proxy holds while the instance is not
    /// reachable (default [`DEFAULT_BUFFER`]); at least 1.
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// How long after the oldest member was downed the next one takes
    /// over. It must cover the time the downed side may take to down
    /// itself after this side decided: with a split-brain resolver, its
    /// `down_all_when_unstable` (the longest the losing side may wait when
    /// its view keeps changing; with lease-majority, plus the minority's
    /// delay and the lease service's answer) plus the suspicion timeout
    /// (how much later it may have seen the partition); that is the
    /// default (8.5 s with keep-majority's defaults, 20.5 s with
    /// lease-majority's). Without a resolver: the suspicion timeout.
    pub fn removal_margin(mut self, margin: Duration) -> Self {
        self.removal_margin = Some(margin);
        self
    }

    /// Starts this node's part: the manager (which runs the instance while
    /// this node is the oldest eligible member) and the proxy. Needs a
    /// Tokio runtime. Refuses a name that is empty or too long.
    pub fn start(self) -> Result<Singleton<A>, ClusterError> {
        let reg_name = format!("{NAME_PREFIX}{}", self.name);
        if self.name.is_empty() || reg_name.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(self.name));
        }
        let shared = &self.cluster.shared;
        let margin = self.removal_margin.unwrap_or_else(|| {
            let detection = shared.detection.suspect_timeout;
            shared.sbr.as_ref().map_or(detection, |s| s.losing_side_within() + detection)
        });
        if shared.sbr.is_none() && self.lease.is_none() {
            tracing::warn!(
                node = %self.cluster.id(),
                singleton = %self.name,
                "singleton without a split-brain resolver or a lease: each side of a partition would run its own instance"
            );
        }
        let (location_tx, location) = watch::channel(None);
        let (control, control_rx) = mpsc::channel(4);
        let local = Arc::new(Mutex::new(None));
        let manager = Manager {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            reg_name: reg_name.clone(),
            factory: self.factory,
            role: self.role,
            lease: self.lease,
            margin,
            location: location_tx,
            local: local.clone(),
        };
        tokio::spawn(manager.run(control_rx));
        shared.before_leave(Box::new(move || {
            let control = control.clone();
            Box::pin(async move {
                let (done, stopped) = oneshot::channel();
                if control.send(done).await.is_ok() {
                    let _ = stopped.await;
                }
            })
        }));
        let (ops, ops_rx) = mpsc::channel(self.buffer);
        tokio::spawn(proxy(self.cluster.clone(), reg_name, location.clone(), ops_rx));
        Ok(Singleton { name: self.name.into(), ops, location, local })
    }
}

/// This node's handle on a singleton: sends to its instance wherever it
/// runs (see the [module docs](self)). Cheap to clone.
pub struct Singleton<A: Actor> {
    name: Arc<str>,
    ops: mpsc::Sender<Op<A>>,
    location: watch::Receiver<Option<String>>,
    local: Arc<Mutex<Option<ActorRef<A>>>>,
}

impl<A: Actor> Clone for Singleton<A> {
    fn clone(&self) -> Self {
        Singleton {
            name: self.name.clone(),
            ops: self.ops.clone(),
            location: self.location.clone(),
            local: self.local.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for Singleton<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Singleton").field("name", &self.name).field("location", &*self.location.borrow()).finish()
    }
}

impl<A: Actor> Singleton<A> {
    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member the instance runs on (or is about to), as this node's
    /// view says: the oldest eligible member. `None` while there is none
    /// (no eligible member, or this node has not joined or was downed).
    pub fn location(&self) -> Option<String> {
        self.location.borrow().clone()
    }

    /// The instance, if it runs on this node now.
    pub fn local(&self) -> Option<ActorRef<A>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends `msg` to the instance, through this node's buffer (in order
    /// with what this node sent before). Refuses with [`SingletonError::Full`]
    /// when the buffer is full.
    pub fn tell<M>(&self, msg: M) -> Result<(), SingletonError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        // A place in the buffer first: a refused message is still ours.
        match self.ops.try_reserve() {
            Ok(place) => {
                place.send(tell_op::<A, M>(msg));
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(SingletonError::Full(msg)),
            Err(mpsc::error::TrySendError::Closed(())) => Err(SingletonError::Stopped(msg)),
        }
    }

    /// Asks the instance and waits for its reply, for at most the default
    /// ask timeout ([`DEFAULT_ASK_TIMEOUT`](actor_core::DEFAULT_ASK_TIMEOUT)),
    /// buffering included.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Reply, SingletonAskError>
    where
        A: Handler<M>,
        M: Message,
    {
        self.ask_timeout(msg, actor_core::DEFAULT_ASK_TIMEOUT).await
    }

    /// [`ask`](Self::ask) with its own timeout.
    pub async fn ask_timeout<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, SingletonAskError>
    where
        A: Handler<M>,
        M: Message,
    {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let op = ask_op::<A, M>(msg, deadline, reply);
        match self.ops.try_send(op) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(SingletonAskError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SingletonAskError::Stopped),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SingletonAskError::Stopped),
            Err(_) => Err(SingletonAskError::Timeout),
        }
    }
}

fn tell_op<A, M>(msg: M) -> Op<A>
where
    A: Handler<M>,
    M: Message,
{
    Box::new(move |instance: ActorRef<A>, _retry| {
        Box::pin(async move {
            match instance.tell(msg).await {
                Ok(()) => None,
                Err(SendError::Closed(msg) | SendError::NodeDown(msg)) => Some(Pending(tell_op(msg))),
                Err(e) => {
                    tracing::warn!(error = %e, "message for a singleton refused; dropped");
                    None
                }
            }
        })
    })
}

type Reply<M> = oneshot::Sender<Result<<M as Message>::Reply, SingletonAskError>>;

fn ask_op<A, M>(msg: M, deadline: Instant, reply: Reply<M>) -> Op<A>
where
    A: Handler<M>,
    M: Message,
{
    Box::new(move |instance: ActorRef<A>, retry: Retry<A>| {
        Box::pin(async move {
            if reply.is_closed() {
                // The asker gave up (its own timeout): nothing to send.
                return None;
            }
            let timeout = deadline.saturating_duration_since(Instant::now());
            let sent_to = instance.id();
            // Sent now, in order; the reply is awaited elsewhere.
            let mut asking = Box::pin(async move { instance.ask(msg).timeout(timeout).await });
            let first = std::future::poll_fn(|cx| Poll::Ready(asking.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(answer) => answered(answer, deadline, reply).map(Pending),
                Poll::Pending => {
                    tokio::spawn(async move {
                        // The message came back (the instance had stopped, or
                        // the request never left this node): the proxy sends
                        // it again once it finds the instance.
                        if let Some(again) = answered(asking.await, deadline, reply) {
                            let _ = retry.send((sent_to, Pending(again)));
                        }
                    });
                    None
                }
            }
        })
    })
}

/// Hands an ask's outcome to the asker, or gives the op back to be sent
/// again when the message was not delivered.
fn answered<A, M>(answer: Result<M::Reply, AskError<M>>, deadline: Instant, reply: Reply<M>) -> Option<Op<A>>
where
    A: Handler<M>,
    M: Message,
{
    let answer = match answer.map_err(AskError::into_undelivered) {
        // Not delivered, and time is left: sent again.
        Err(Ok(msg)) if Instant::now() < deadline => return Some(ask_op(msg, deadline, reply)),
        Err(Ok(_)) => Err(SingletonAskError::Timeout),
        Err(Err(e)) => asked(Err(e)),
        Ok(out) => Ok(out),
    };
    let _ = reply.send(answer);
    None
}

fn asked<R, M>(result: Result<R, AskError<M>>) -> Result<R, SingletonAskError> {
    result.map_err(|e| match e {
        AskError::Timeout => SingletonAskError::Timeout,
        AskError::NoReply | AskError::NodeDown | AskError::Closed(_) => SingletonAskError::NoReply,
        other => SingletonAskError::Refused(other.to_string()),
    })
}

/// This node's proxy: takes ops from the buffer and sends them to the
/// instance, found by its cluster-wide name on the member `location`
/// names; while there is none, ops wait in the buffer.
async fn proxy<A: Actor>(
    cluster: Cluster,
    reg_name: String,
    mut location: watch::Receiver<Option<String>>,
    mut ops: mpsc::Receiver<Op<A>>,
) {
    let mut pending: Option<Op<A>> = None;
    let mut instance: Option<ActorRef<A>> = None;
    let mut backoff = Duration::from_millis(10);
    // Ops that came back after they went out (see `ask_op`).
    let (retry, mut came_back) = mpsc::unbounded_channel::<(ActorId, Pending<A>)>();
    // An op came back from the instance found last: look again only after a
    // pause (the registry may still name the instance that stopped).
    let mut pause = false;
    loop {
        let Some(target) = instance.clone() else {
            let expected = location.borrow_and_update().clone();
            if let Some(node) = expected.filter(|_| !std::mem::take(&mut pause)) {
                match cluster.lookup::<A>(&reg_name).await {
                    Ok(found) if where_is(&cluster, &found) == node => {
                        instance = Some(found);
                        backoff = Duration::from_millis(10);
                        continue;
                    }
                    _ => {}
                }
            }
            tokio::select! {
                changed = location.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
            continue;
        };
        let op = match pending.take() {
            Some(op) => op,
            None => tokio::select! {
                biased;
                changed = location.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if location.borrow().as_deref() != Some(where_is(&cluster, &target).as_str()) {
                        instance = None;
                    }
                    continue;
                }
                Some((sent_to, Pending(back))) = came_back.recv() => {
                    pending = Some(back);
                    // Only if it came back from the instance in use: one
                    // found afresh meanwhile is kept.
                    if sent_to == target.id() {
                        instance = None;
                        pause = true;
                    }
                    continue;
                }
                op = ops.recv() => match op {
                    Some(op) => op,
                    None => return,
                },
            },
        };
        if let Some(Pending(back)) = op(target, retry.clone()).await {
            pending = Some(back);
            instance = None;
            pause = true;
        }
    }
}

/// The node `actor` runs on.
fn where_is<A: Actor>(cluster: &Cluster, actor: &ActorRef<A>) -> String {
    actor.remote_addr().map_or_else(|| cluster.id().to_owned(), |a| a.node)
}

/// `future`'s output if it is ready at its first poll (the future must be
/// cancel-safe: it is dropped otherwise).
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// This node's singleton manager.
struct Manager<A: Actor> {
    cluster: Cluster,
    name: String,
    reg_name: String,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    role: Option<String>,
    lease: Option<Arc<dyn Lease>>,
    margin: Duration,
    location: watch::Sender<Option<String>>,
    local: Arc<Mutex<Option<ActorRef<A>>>>,
}

/// The oldest member with `role` (all members without one).
pub(crate) fn oldest<'a>(members: &'a [Member], role: Option<&str>) -> Option<&'a Member> {
    members.iter().filter(|m| role.is_none_or(|r| m.has_role(r))).min_by(|a, b| (a.run, &a.id).cmp(&(b.run, &b.id)))
}

impl<A: RemoteActor> Manager<A> {
    async fn run(self, mut leave: mpsc::Receiver<oneshot::Sender<()>>) {
        let me = self.cluster.id().to_owned();
        let my_run = self.cluster.run();
        let mut events = self.cluster.subscribe();
        tokio::select! {
            joined = self.cluster.joined() => if joined.is_err() { return },
            Some(done) = leave.recv() => { let _ = done.send(()); return }
        }
        let mut not_before = Instant::now();
        let mut running: Option<ActorRef<A>> = None;
        let mut lease_held = false;
        loop {
            // The view before the flag: a node downing itself sets the flag
            // first, then empties its view.
            let members = self.cluster.members();
            let downed = self.cluster.is_downed();
            // Events are sent under the view's lock: every down that made
            // `members` is among the events ready now.
            while let Some(event) = ready(events.recv()) {
                let Some(event) = event else {
                    if let Some(instance) = running.take() {
                        self.stop(&instance, &mut lease_held, false).await;
                    }
                    self.release(&mut lease_held).await;
                    return;
                };
                self.note(&event, &me, my_run, &mut not_before);
            }
            let oldest = if downed { None } else { oldest(&members, self.role.as_deref()) };
            self.location.send_if_modified(|now| {
                let next = oldest.map(|m| m.id.clone());
                let changed = *now != next;
                *now = next;
                changed
            });
            let mine = oldest.is_some_and(|m| m.id == me);
            let lease_lost = running.is_some() && self.lease.as_ref().is_some_and(|l| !l.check());
            if lease_lost {
                tracing::error!(node = %me, singleton = %self.name, "lease lost: stopping the singleton's instance");
            }
            if let Some(instance) = &running
                && (!mine || lease_lost || downed)
            {
                // Out of the cluster, or no longer fenced: gone at once.
                self.stop(instance, &mut lease_held, lease_lost || downed).await;
                running = None;
            }
            if running.is_none() && lease_held && !mine {
                self.release(&mut lease_held).await;
            }
            let handed_over = mine && running.is_none() && self.handed_over(&members);
            if handed_over && Instant::now() >= not_before {
                if self.acquire(&mut lease_held).await {
                    running = self.start(&me);
                    if running.is_none() {
                        not_before = Instant::now() + RESTART_AFTER;
                    }
                } else {
                    not_before = Instant::now() + LEASE_RETRY;
                }
            }
            let wake = if running.is_some() && self.lease.is_some() {
                Some(Instant::now() + LEASE_CHECK)
            } else if mine && running.is_none() {
                // Waiting for the margin, the lease, or the old owner.
                Some(not_before.max(Instant::now() + HAND_OVER_CHECK))
            } else {
                None
            };
            let stopped = async {
                match &running {
                    Some(instance) => instance.wait_for_stop().await,
                    None => std::future::pending().await,
                }
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.note(&event, &me, my_run, &mut not_before),
                    None => {
                        if let Some(instance) = running.take() {
                            self.stop(&instance, &mut lease_held, false).await;
                        }
                        self.release(&mut lease_held).await;
                        return;
                    }
                },
                reason = stopped => {
                    tracing::warn!(node = %me, singleton = %self.name, ?reason, "the singleton's instance stopped by itself; starting another in {RESTART_AFTER:?}");
                    running = None;
                    self.clear_local();
                    not_before = Instant::now() + RESTART_AFTER;
                }
                _ = sleep => {}
                done = leave.recv() => {
                    if let Some(instance) = running.take() {
                        self.stop(&instance, &mut lease_held, false).await;
                    }
                    self.release(&mut lease_held).await;
                    self.location.send_replace(None);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// A downed member older than this one may still run the instance on
    /// its side of a partition until it downs itself: wait the margin.
    fn note(&self, event: &ClusterEvent, me: &str, my_run: u64, not_before: &mut Instant) {
        if let ClusterEvent::MemberDown(m) = event {
            let eligible = self.role.as_deref().is_none_or(|r| m.has_role(r));
            if eligible && (m.run, m.id.as_str()) < (my_run, me) {
                *not_before = (*not_before).max(Instant::now() + self.margin);
                tracing::info!(node = %me, singleton = %self.name, down = %m.id, margin = ?self.margin, "an older member was downed: waiting the removal margin before taking over");
            }
        }
    }

    /// Takes the lease if there is one; whether the instance may start.
    async fn acquire(&self, held: &mut bool) -> bool {
        let Some(lease) = &self.lease else { return true };
        match lease.acquire().await {
            Ok(true) => {
                *held = true;
                true
            }
            Ok(false) => {
                tracing::info!(node = %self.cluster.id(), singleton = %self.name, lease = lease.name(), "the lease is held by another owner; waiting");
                false
            }
            Err(e) => {
                tracing::warn!(node = %self.cluster.id(), singleton = %self.name, error = %e, "lease not acquired");
                false
            }
        }
    }

    fn start(&self, me: &str) -> Option<ActorRef<A>> {
        let instance = self.cluster.system().spawn((self.factory)());
        if let Err(e) = self.cluster.register(&self.reg_name, &instance) {
            tracing::error!(node = %me, singleton = %self.name, error = %e, "singleton instance not registered; stopping it");
            instance.stop();
            return None;
        }
        tracing::info!(node = %me, singleton = %self.name, "singleton instance started here");
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = Some(instance.clone());
        Some(instance)
    }

    /// Whether the previous owner has handed over: this node has every
    /// other member's full registry copy and none of
    /// them still holds the instance's name (an old owner withdraws it
    /// only once its instance has stopped; a downed one's goes with it).
    fn handed_over(&self, members: &[Member]) -> bool {
        let me = self.cluster.id();
        let registry = &self.cluster.shared.registry;
        if let Some(missing) = members.iter().find(|m| m.id != me && !registry.synced_with(&self.cluster.shared, &m.id))
        {
            tracing::debug!(node = %me, singleton = %self.name, member = %missing.id, "no full registry copy from every member yet");
            return false;
        }
        let holders = self.cluster.shared.registry.other_holders(&self.cluster.shared, &self.reg_name);
        if !holders.is_empty() {
            tracing::debug!(node = %me, singleton = %self.name, ?holders, "waiting for the previous owner to hand over");
        }
        holders.is_empty()
    }

    /// Stops the instance (`kill`: at once; else gracefully, killed if it
    /// takes longer than the hand-over timeout), then withdraws its name
    /// (the next owner waits for that) and gives the lease up.
    async fn stop(&self, instance: &ActorRef<A>, lease_held: &mut bool, kill: bool) {
        self.clear_local();
        if kill {
            instance.kill();
        } else {
            instance.stop();
        }
        if tokio::time::timeout(HAND_OVER_TIMEOUT, instance.wait_for_stop()).await.is_err() {
            tracing::error!(node = %self.cluster.id(), singleton = %self.name, "the singleton's instance did not stop in {HAND_OVER_TIMEOUT:?}; killing it");
            instance.kill();
            instance.wait_for_stop().await;
        }
        self.cluster.unregister(&self.reg_name);
        tracing::info!(node = %self.cluster.id(), singleton = %self.name, killed = kill, "singleton instance stopped here");
        self.release(lease_held).await;
    }

    /// Gives the lease up if this node holds it.
    async fn release(&self, lease_held: &mut bool) {
        if let Some(lease) = &self.lease
            && std::mem::take(lease_held)
            && let Err(e) = lease.release().await
        {
            tracing::warn!(node = %self.cluster.id(), singleton = %self.name, error = %e, "lease not released; it expires by itself");
        }
    }

    fn clear_local(&self) {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
