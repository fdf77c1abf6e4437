//! Handles to actors: [`ActorRef`], [`WeakActorRef`] and [`Recipient`].
//!
//! # Delivery and ordering
//! Delivery is at-most-once: a message accepted by a mailbox is handled unless
//! the actor stops (or fails) first. Messages from one sender to one actor are
//! handled in the order they were sent (per-sender FIFO); messages from
//! different senders interleave.
//!
//! # Cancel safety of `tell` and `ask`
//! Dropping a `tell` future before it completes never enqueues the message.
//! Dropping an `ask` future before it completes may or may not have enqueued
//! it; the reply, if any, is then discarded.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cell::{ActorCell, Signal};
use crate::deadline::{Deadline, Until};
use crate::mailbox::{self, BoxFuture, Queue, Refusal};
use crate::remote::{RemoteEndpoint, RemoteError, Told, with_ref_codec};
use crate::stats::{self, AskFailure};
use crate::{Actor, ActorId, AskError, ExitReason, Handler, Message, NotSent, SendError, TrySendError};

/// How long an [`ask`](ActorRef::ask) waits for its reply unless told otherwise.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to a running actor of type `A`: cheap to clone, `Send + Sync`.
///
/// A ref stays valid across restarts of a supervised actor: messages sent after a
/// restart reach the new instance. Once the actor has stopped for good, sends
/// fail with `Closed` and hand the message back. A ref to an actor on another
/// node (from a node's `lookup`) works the same way.
///
/// ```
/// use std::time::Duration;
/// use actor_core::{Actor, ActorSystem, Context, Handler, Message, SendError};
///
/// struct Counter(u64);
/// impl Actor for Counter {}
///
/// struct Add(u64);
/// impl Message for Add {
///     type Reply = u64;
/// }
/// impl Handler<Add> for Counter {
///     async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
///         self.0 += n;
///         self.0
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), actor_core::Error> {
/// let system = ActorSystem::new("demo");
/// let counter = system.spawn(Counter(0));
/// counter.tell(Add(1)).await?;                       // waits while the mailbox is full
/// counter.try_tell(Add(1)).ok();                     // or fails at once, handing the message back
/// let n = counter.ask(Add(1)).timeout(Duration::from_secs(1)).await?;
/// assert_eq!(n, 3);
/// counter.stop();
/// counter.wait_for_stop().await;
/// assert!(matches!(counter.tell(Add(1)).await, Err(SendError::Closed(Add(1)))));
/// # system.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct ActorRef<A: Actor> {
    inner: Arc<RefInner<A>>,
}

pub(crate) struct RefInner<A: Actor> {
    pub(crate) cell: Arc<ActorCell>,
    pub(crate) queue: Queue<A>,
    /// Set for a ref to an actor on another node; `queue` is then unused.
    remote: Option<Arc<dyn RemoteEndpoint>>,
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn new(cell: Arc<ActorCell>) -> Self {
        Self { inner: Arc::new(RefInner { cell, queue: Queue::new(), remote: None }) }
    }

    pub(crate) fn new_remote(cell: Arc<ActorCell>, endpoint: Arc<dyn RemoteEndpoint>) -> Self {
        Self { inner: Arc::new(RefInner { cell, queue: Queue::new(), remote: Some(endpoint) }) }
    }

    pub(crate) fn remote_endpoint(&self) -> Option<&Arc<dyn RemoteEndpoint>> {
        self.inner.remote.as_ref()
    }

    pub(crate) fn queue(&self) -> &Queue<A> {
        &self.inner.queue
    }

    pub(crate) fn cell(&self) -> &Arc<ActorCell> {
        &self.inner.cell
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.inner.cell.id()
    }

    /// The name the actor was spawned with, if any.
    pub fn name(&self) -> Option<&str> {
        self.inner.cell.name()
    }

    /// Whether the actor is still running (it may stop right after this returns).
    pub fn is_alive(&self) -> bool {
        self.inner.cell.is_alive()
    }

    /// Sends a message without waiting for it to be handled.
    ///
    /// Waits while a bounded mailbox is full (backpressure). Fails only when the
    /// actor has stopped, handing the message back.
    pub fn tell<M>(&self, msg: M) -> impl Future<Output = Result<(), SendError<M>>> + Send + '_
    where
        A: Handler<M>,
        M: Message,
    {
        send_tell(&self.inner, msg)
    }

    /// Sends a message if the mailbox has room right now.
    pub fn try_tell<M>(&self, msg: M) -> Result<(), TrySendError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        try_send_tell(&self.inner, msg)
    }

    /// Sends a message and waits for the handler's reply.
    ///
    /// Resolves once: with the reply, or [`AskError::Timeout`] after
    /// [`DEFAULT_ASK_TIMEOUT`] (change it with [`Ask::timeout`]), or
    /// [`AskError::NoReply`] if the actor stopped or failed first, or
    /// [`AskError::Closed`] with the message if the actor had already stopped.
    /// The timeout covers waiting for mailbox room too. Needs a Tokio runtime
    /// with its time driver enabled.
    pub fn ask<M>(&self, msg: M) -> Ask<'_, A, M>
    where
        A: Handler<M>,
        M: Message,
    {
        Ask { inner: &self.inner, msg, timeout: DEFAULT_ASK_TIMEOUT }
    }

    /// Sends a request and returns once it is enqueued, with a future for the
    /// reply: for code that must enqueue in order but await replies
    /// elsewhere (the remoting layer's inbound asks). Waits while a bounded
    /// mailbox is full. Local actors only: a remote ref refuses with
    /// `NotRemote`.
    pub(crate) async fn ask_enqueue<M>(&self, msg: M) -> Result<PendingReply<M::Reply>, SendError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        if self.inner.remote.is_some() {
            return Err(SendError::NotRemote(msg));
        }
        if self.inner.cell.gate.acquire().await.is_err() {
            return Err(SendError::Closed(msg));
        }
        let (reply, rx) = oneshot::channel();
        self.inner.enqueue(Box::new(mailbox::Ask { msg, reply }));
        Ok(PendingReply { rx })
    }

    /// Asks the actor to stop. The stop signal overtakes messages already in
    /// the mailbox, which are dropped. A supervised actor stopped this way is
    /// not restarted. Does nothing if the actor has already stopped. For an
    /// actor on another node, the request goes to its node (after what this
    /// ref sent before it); its watchers then see it stop as usual.
    pub fn stop(&self) {
        match self.remote_endpoint() {
            Some(remote) => remote.stop(),
            None => self.inner.cell.signal(Signal::Stop(ExitReason::Normal)),
        }
    }

    /// Asks the actor to stop once it has handled the messages already in its
    /// mailbox (Akka's `PoisonPill`): the request queues like a message (it
    /// waits for room in a full bounded mailbox) and stops the actor as
    /// [`stop`](Self::stop) does when its turn comes; messages sent after it
    /// are dropped. Returns `false` if the actor had already stopped. For an
    /// actor on another node this is [`stop`](Self::stop), which already
    /// follows what this ref sent before it.
    pub async fn stop_after_queued(&self) -> bool {
        if let Some(remote) = self.remote_endpoint() {
            remote.stop();
            return true;
        }
        if self.inner.cell.gate.acquire().await.is_err() {
            return false;
        }
        self.inner.enqueue(Box::new(mailbox::StopAfterQueued));
        true
    }

    /// Waits until the actor has stopped for good and returns why. Returns at
    /// once if it already has.
    pub async fn wait_for_stop(&self) -> ExitReason {
        self.inner.cell.wait_exit().await
    }

    /// Kills the actor (OTP's `exit(Pid, kill)`): its task is dropped at its
    /// next `.await`, without running its `stopping`/`stopped` hooks; its
    /// exit reason is [`ExitReason::Killed`], which watchers, links and its
    /// supervisor see (a supervised actor is not restarted), and its children
    /// are killed too. A handler that never yields cannot be interrupted
    /// (see [`Shutdown`](crate::Shutdown)). Does nothing to an actor that has
    /// stopped, or to an actor on another node.
    pub fn kill(&self) {
        self.inner.cell.kill();
    }

    /// Waits until the actor's `started` hook has returned: `Ok` once an
    /// instance has started (at once if one already has), or the exit reason
    /// if it stopped before any did (its `started` failed, or it was stopped
    /// first). `spawn` returns before the hook runs; this is how to wait for
    /// it. For a supervised child, a failed start that its supervisor
    /// restarts is waited out. For a ref to an actor on another node:
    /// `Ok(())` at once.
    pub async fn wait_started(&self) -> Result<(), ExitReason> {
        if self.inner.remote.is_some() {
            return Ok(());
        }
        self.inner.cell.wait_started().await
    }

    /// This ref erased to the one message type `M`.
    pub fn recipient<M>(&self) -> Recipient<M>
    where
        A: Handler<M>,
        M: Message,
    {
        Recipient { inner: self.inner.clone() }
    }

    /// A ref that does not keep the actor's mailbox open.
    pub fn downgrade(&self) -> WeakActorRef<A> {
        WeakActorRef { inner: Arc::downgrade(&self.inner) }
    }
}

/// A tell: queued at once when the actor is local and its mailbox has room
/// (the common case), with nothing boxed. Otherwise the waiting path runs
/// boxed. Written out rather than `async` so that the future is no bigger
/// than the message and a pointer: a handler that tells (a forwarding actor)
/// then stays small enough to run without an allocation of its own (see
/// `mailbox::INLINE_HANDLER`).
fn send_tell<A: Handler<M>, M: Message>(inner: &RefInner<A>, msg: M) -> SendTell<'_, A, M> {
    SendTell::Start(inner, msg)
}

enum SendTell<'a, A: Actor, M: Message> {
    Start(&'a RefInner<A>, M),
    Waiting(BoxFuture<'a, Result<(), SendError<M>>>),
    Done,
}

// The message is moved out on the first poll and never pinned in place.
impl<A: Actor, M: Message> Unpin for SendTell<'_, A, M> {}

impl<'a, A: Handler<M>, M: Message> Future for SendTell<'a, A, M> {
    type Output = Result<(), SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let mut waiting: BoxFuture<'a, Self::Output> = match std::mem::replace(&mut *self, SendTell::Done) {
            SendTell::Start(inner, msg) => match &inner.remote {
                None => match inner.cell.gate.try_acquire() {
                    Ok(()) => {
                        inner.enqueue(Box::new(mailbox::Tell(msg)));
                        return Poll::Ready(Ok(()));
                    }
                    Err(Refusal::Closed) => return Poll::Ready(Err(SendError::Closed(msg))),
                    Err(Refusal::Full) => Box::pin(local_tell_waiting(inner, msg)),
                },
                Some(remote) => match remote_tell_now(&inner.cell, remote, msg) {
                    Ok(done) => return Poll::Ready(done),
                    Err(TellLater { msg, wire_name, payload }) => {
                        Box::pin(remote_tell_waiting(remote, msg, wire_name, payload))
                    }
                },
            },
            SendTell::Waiting(waiting) => waiting,
            SendTell::Done => panic!("a tell's future polled after it completed"),
        };
        match waiting.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(out),
            Poll::Pending => {
                *self = SendTell::Waiting(waiting);
                Poll::Pending
            }
        }
    }
}

/// A remote tell that has to wait: the message (handed back if it fails)
/// and its encoding (sent as it is once there is room).
struct TellLater<M> {
    msg: M,
    wire_name: &'static str,
    payload: Vec<u8>,
}

/// Why a remote tell without waiting did not go out; the message comes back.
enum NotTold<M> {
    /// The message has no wire form.
    NotRemote(M),
    /// Refused for good (it could not be encoded, or the endpoint said no).
    Rejected(M, String),
    /// No room now (`false`), or the connection is being replaced (`true`):
    /// a tell may wait, with the encoding it has.
    Later(TellLater<M>, bool),
}

/// One try at a remote tell without waiting, shared by `tell` and `try_tell`.
fn remote_try<M: Message>(remote: &Arc<dyn RemoteEndpoint>, msg: M) -> Result<(), NotTold<M>> {
    let Some(wire) = M::wire() else { return Err(NotTold::NotRemote(msg)) };
    let payload = match with_ref_codec(remote.ref_codec(), || (wire.encode)(&msg)) {
        Ok(payload) => payload,
        Err(e) => return Err(NotTold::Rejected(msg, e.to_string())),
    };
    let node_down = match remote.tell(wire.name, &payload, false) {
        Told::Done(Ok(())) => return Ok(()),
        Told::Done(Err(RemoteError::NodeDown)) => true,
        // Not asked to wait: a waiting future means no room.
        Told::Done(Err(RemoteError::Full)) | Told::Waiting(_) => false,
        Told::Done(Err(other)) => return Err(NotTold::Rejected(msg, other.to_string())),
    };
    Err(NotTold::Later(TellLater { msg, wire_name: wire.name, payload }, node_down))
}

/// A tell to a remote actor without waiting: done (queued or refused for
/// good), or, when it has to wait for room or for the connection that
/// replaces a closed one, what the waiting path needs.
fn remote_tell_now<M: Message>(
    cell: &ActorCell,
    remote: &Arc<dyn RemoteEndpoint>,
    msg: M,
) -> Result<Result<(), SendError<M>>, TellLater<M>> {
    // A remote actor known to have ended: fail here, as a local one would.
    match remote_end(cell) {
        Some(RemoteEnd::NodeDown) => return Ok(Err(SendError::NodeDown(msg))),
        Some(RemoteEnd::Stopped) => return Ok(Err(SendError::Closed(msg))),
        None => {}
    }
    match remote_try(remote, msg) {
        Ok(()) => Ok(Ok(())),
        Err(NotTold::NotRemote(msg)) => Ok(Err(SendError::NotRemote(msg))),
        Err(NotTold::Rejected(msg, why)) => Ok(Err(SendError::Rejected(msg, why))),
        Err(NotTold::Later(later, _)) => Err(later),
    }
}

/// A remote tell that waits for room, or for the connection that replaces a
/// closed one (the endpoint decides).
async fn remote_tell_waiting<M: Message>(
    remote: &Arc<dyn RemoteEndpoint>,
    msg: M,
    wire_name: &'static str,
    payload: Vec<u8>,
) -> Result<(), SendError<M>> {
    let told = match remote.tell(wire_name, &payload, true) {
        Told::Done(told) => told,
        Told::Waiting(waiting) => waiting.await,
    };
    match told {
        Ok(()) => Ok(()),
        Err(RemoteError::NodeDown) => Err(SendError::NodeDown(msg)),
        Err(other) => Err(SendError::Rejected(msg, other.to_string())),
    }
}

/// A tell to a local actor whose mailbox is full: waits for room.
async fn local_tell_waiting<A: Handler<M>, M: Message>(inner: &RefInner<A>, msg: M) -> Result<(), SendError<M>> {
    if inner.cell.gate.acquire().await.is_err() {
        return Err(SendError::Closed(msg));
    }
    inner.enqueue(Box::new(mailbox::Tell(msg)));
    Ok(())
}

fn try_send_tell<A: Handler<M>, M: Message>(inner: &RefInner<A>, msg: M) -> Result<(), TrySendError<M>> {
    if let Some(remote) = &inner.remote {
        return match remote_end(&inner.cell) {
            Some(RemoteEnd::NodeDown) => Err(TrySendError::NodeDown(msg)),
            Some(RemoteEnd::Stopped) => Err(TrySendError::Closed(msg)),
            None => remote_try_tell(remote, msg),
        };
    }
    match inner.cell.gate.try_acquire() {
        Ok(()) => {
            inner.enqueue(Box::new(mailbox::Tell(msg)));
            Ok(())
        }
        Err(Refusal::Full) => Err(TrySendError::Full(msg)),
        Err(Refusal::Closed) => Err(TrySendError::Closed(msg)),
    }
}

/// An ask to a remote actor (the slow path of [`AskFuture`]).
async fn ask_remote<A: Handler<M>, M: Message>(
    inner: &RefInner<A>,
    remote: &Arc<dyn RemoteEndpoint>,
    msg: M,
    timeout: Duration,
) -> Result<M::Reply, AskError<M>> {
    match remote_end(&inner.cell) {
        Some(RemoteEnd::NodeDown) => {
            stats::ask_failed(AskFailure::NodeDown);
            Err(AskError::NotSent(msg, NotSent::NodeDown))
        }
        Some(RemoteEnd::Stopped) => Err(AskError::Closed(msg)),
        None => remote_ask(remote, msg, timeout).await,
    }
}

/// A local ask that waits for room in a full mailbox first (the slow path
/// of [`AskFuture`]); the timeout covers the wait for room too.
async fn ask_when_room<A: Handler<M>, M: Message>(
    inner: &RefInner<A>,
    msg: M,
    timeout: Duration,
) -> Result<M::Reply, AskError<M>> {
    let deadline = deadline_after(timeout);
    match tokio::time::timeout_at(deadline, inner.cell.gate.acquire()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(AskError::Closed(msg)),
        Err(_) => {
            stats::ask_failed(AskFailure::Timeout);
            return Err(AskError::Timeout);
        }
    }
    let (reply, rx) = oneshot::channel();
    inner.enqueue(Box::new(mailbox::Ask { msg, reply }));
    replied(Until::new(rx, Deadline::At(deadline)).await)
}

/// An ask's outcome from its wait for the reply: the reply, `NoReply` (the
/// actor dropped the request) or `Timeout` (`None`).
fn replied<R, M>(waited: Option<Result<R, oneshot::error::RecvError>>) -> Result<R, AskError<M>> {
    match waited {
        Some(Ok(out)) => Ok(out),
        Some(Err(_)) => {
            stats::ask_failed(AskFailure::NoReply);
            Err(AskError::NoReply)
        }
        None => {
            stats::ask_failed(AskFailure::Timeout);
            Err(AskError::Timeout)
        }
    }
}

/// How a remote actor is known to have ended.
enum RemoteEnd {
    NodeDown,
    Stopped,
}

/// Whether the stand-in `cell` was told its remote actor ended: one atomic
/// load per message while it has not.
fn remote_end(cell: &ActorCell) -> Option<RemoteEnd> {
    if !cell.gate.is_closed() {
        return None;
    }
    match cell.exit_reason() {
        Some(ExitReason::NodeDown) => Some(RemoteEnd::NodeDown),
        _ => Some(RemoteEnd::Stopped),
    }
}

fn remote_try_tell<M: Message>(remote: &Arc<dyn RemoteEndpoint>, msg: M) -> Result<(), TrySendError<M>> {
    match remote_try(remote, msg) {
        Ok(()) => Ok(()),
        Err(NotTold::NotRemote(msg)) => Err(TrySendError::NotRemote(msg)),
        Err(NotTold::Rejected(msg, why)) => Err(TrySendError::Rejected(msg, why)),
        Err(NotTold::Later(later, true)) => Err(TrySendError::NodeDown(later.msg)),
        Err(NotTold::Later(later, false)) => Err(TrySendError::Full(later.msg)),
    }
}

async fn remote_ask<M: Message>(
    remote: &Arc<dyn RemoteEndpoint>,
    msg: M,
    timeout: Duration,
) -> Result<M::Reply, AskError<M>> {
    let Some(wire) = M::wire() else { return Err(AskError::NotRemote(msg)) };
    let codec = remote.ref_codec();
    let payload = match with_ref_codec(codec.clone(), || (wire.encode)(&msg)) {
        Ok(payload) => payload,
        Err(e) => return Err(AskError::NotSent(msg, NotSent::Encode(e.to_string()))),
    };
    // Kept until the outcome: a request that could not be queued gives it
    // back.
    let result = remote.ask(wire.name, payload, timeout).await;
    match &result {
        Err(RemoteError::NotSent | RemoteError::NodeDown) => stats::ask_failed(AskFailure::NodeDown),
        Err(RemoteError::NoReply) => stats::ask_failed(AskFailure::NoReply),
        Err(RemoteError::Timeout) => stats::ask_failed(AskFailure::Timeout),
        _ => {}
    }
    match result {
        Err(RemoteError::NotSent) => Err(AskError::NotSent(msg, NotSent::NodeDown)),
        Ok(reply) => {
            with_ref_codec(codec, || (wire.decode_reply)(&reply)).map_err(|e| AskError::Rejected(format!("reply: {e}")))
        }
        Err(RemoteError::NodeDown) => Err(AskError::NodeDown),
        // The actor's node says it has no such actor (it stopped, or is of
        // an earlier run): not delivered, as for a local actor that stopped.
        Err(RemoteError::ActorNotFound) => Err(AskError::Closed(msg)),
        Err(RemoteError::NoReply) => Err(AskError::NoReply),
        Err(RemoteError::Timeout) => Err(AskError::Timeout),
        Err(other) => Err(AskError::Rejected(other.to_string())),
    }
}

/// The reply to a request enqueued with [`ask_enqueue`](crate::remote::ask_enqueue): resolves
/// to `None` if the actor stopped, failed or restarted before replying.
#[must_use = "the reply is lost unless awaited"]
pub struct PendingReply<R> {
    rx: oneshot::Receiver<R>,
}

impl<R> Future for PendingReply<R> {
    type Output = Option<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<R>> {
        Pin::new(&mut self.rx).poll(cx).map(Result::ok)
    }
}

impl<R> fmt::Debug for PendingReply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingReply(..)")
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // About 30 years: further than any ask or timer needs.
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl<A: Actor> RefInner<A> {
    /// Enqueues into a slot already reserved at the gate. If the actor closed
    /// its mailbox in between, the message is dropped like any message still
    /// queued when an actor stops (delivery is at-most-once); an ask then
    /// resolves with `NoReply`.
    fn enqueue(&self, env: mailbox::BoxEnvelope<A>) {
        match self.queue.push(mailbox::traced(env)) {
            // Behind other messages: the actor has not drained the queue
            // since the push that woke it, and will see this one too.
            Ok(false) => {}
            Ok(true) => self.cell.wake(),
            Err(env) => {
                self.cell.gate.unreserve();
                drop(env);
            }
        }
    }
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<A: Actor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<A: Actor> Eq for ActorRef<A> {}

impl<A: Actor> std::hash::Hash for ActorRef<A> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.inner.cell)
    }
}

impl<A: Actor> fmt::Display for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.cell, f)
    }
}

/// A pending [`ActorRef::ask`]: `.await` it, optionally after setting
/// [`timeout`](Ask::timeout).
#[must_use = "an ask does nothing until awaited"]
pub struct Ask<'a, A: Actor, M> {
    inner: &'a RefInner<A>,
    msg: M,
    timeout: Duration,
}

impl<A: Actor, M> Ask<'_, A, M> {
    /// Replaces the default timeout ([`DEFAULT_ASK_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<'a, A: Handler<M>, M: Message> IntoFuture for Ask<'a, A, M> {
    type Output = Result<M::Reply, AskError<M>>;
    type IntoFuture = AskFuture<'a, A, M>;

    fn into_future(self) -> Self::IntoFuture {
        AskFuture { state: AskState::Start { inner: self.inner, msg: self.msg, timeout: self.timeout } }
    }
}

/// The future of an [`Ask`] (what `.await` runs): a local ask whose mailbox
/// has room is enqueued at the first poll and waits for its reply with no
/// allocation of its own; anything else (a remote actor, a full mailbox)
/// runs boxed.
#[must_use = "an ask does nothing until awaited"]
pub struct AskFuture<'a, A: Actor, M: Message> {
    state: AskState<'a, A, M>,
}

enum AskState<'a, A: Actor, M: Message> {
    Start { inner: &'a RefInner<A>, msg: M, timeout: Duration },
    Waiting(Until<oneshot::Receiver<M::Reply>>),
    Slow(BoxFuture<'a, Result<M::Reply, AskError<M>>>),
    Done,
}

// Nothing in it is pinned in place: the message is moved out at the first
// poll, the wait for the reply is `Unpin`, the slow path is boxed.
impl<A: Actor, M: Message> Unpin for AskFuture<'_, A, M> {}

impl<A: Handler<M>, M: Message> Future for AskFuture<'_, A, M> {
    type Output = Result<M::Reply, AskError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        if matches!(self.state, AskState::Start { .. })
            && let AskState::Start { inner, msg, timeout } = std::mem::replace(&mut self.state, AskState::Done)
        {
            stats::ask_started();
            self.state = if let Some(remote) = &inner.remote {
                AskState::Slow(Box::pin(ask_remote(inner, remote, msg, timeout)))
            } else {
                match inner.cell.gate.try_acquire() {
                    Ok(()) => {
                        let (reply, rx) = oneshot::channel();
                        inner.enqueue(Box::new(mailbox::Ask { msg, reply }));
                        // The deadline is filed only if the reply is not
                        // there at once (see `deadline`): no timer per ask.
                        AskState::Waiting(Until::new(rx, Deadline::After(timeout)))
                    }
                    Err(Refusal::Closed) => return Poll::Ready(Err(AskError::Closed(msg))),
                    // Wait for room (the timeout covers it): boxed.
                    Err(Refusal::Full) => AskState::Slow(Box::pin(ask_when_room(inner, msg, timeout))),
                }
            };
        }
        // Polled in place: nothing moves on a pending poll.
        let out = match &mut self.state {
            AskState::Waiting(until) => replied(std::task::ready!(Pin::new(until).poll(cx))),
            AskState::Slow(fut) => std::task::ready!(fut.as_mut().poll(cx)),
            AskState::Start { .. } | AskState::Done => panic!("an ask polled after it completed"),
        };
        self.state = AskState::Done;
        Poll::Ready(out)
    }
}

impl<A: Actor, M: Message> fmt::Debug for AskFuture<'_, A, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AskFuture(..)")
    }
}

/// A ref that does not keep an actor's mailbox open; [`upgrade`](Self::upgrade)
/// it to send.
pub struct WeakActorRef<A: Actor> {
    inner: Weak<RefInner<A>>,
}

impl<A: Actor> WeakActorRef<A> {
    /// A strong ref, if any strong ref to the actor still exists.
    pub fn upgrade(&self) -> Option<ActorRef<A>> {
        self.inner.upgrade().map(|inner| ActorRef { inner })
    }
}

impl<A: Actor> Clone for WeakActorRef<A> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<A: Actor> fmt::Debug for WeakActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakActorRef(..)")
    }
}

/// A ref to any actor that handles `M`, erased over the actor's type.
///
/// Useful to hand a subscriber list or a callback to code that must not know
/// the actor type. Costs one dynamic call per send.
pub struct Recipient<M: Message> {
    inner: Arc<dyn ErasedRef<M>>,
}

trait ErasedRef<M: Message>: Send + Sync {
    fn id(&self) -> ActorId;
    fn tell(&self, msg: M) -> BoxFuture<'_, Result<(), SendError<M>>>;
    fn try_tell(&self, msg: M) -> Result<(), TrySendError<M>>;
    fn ask(&self, msg: M, timeout: Duration) -> BoxFuture<'_, Result<M::Reply, AskError<M>>>;
}

impl<A: Handler<M>, M: Message> ErasedRef<M> for RefInner<A> {
    fn id(&self) -> ActorId {
        self.cell.id()
    }

    fn tell(&self, msg: M) -> BoxFuture<'_, Result<(), SendError<M>>> {
        Box::pin(send_tell(self, msg))
    }

    fn try_tell(&self, msg: M) -> Result<(), TrySendError<M>> {
        try_send_tell(self, msg)
    }

    fn ask(&self, msg: M, timeout: Duration) -> BoxFuture<'_, Result<M::Reply, AskError<M>>> {
        Box::pin(AskFuture { state: AskState::Start { inner: self, msg, timeout } })
    }
}

impl<M: Message> Recipient<M> {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.inner.id()
    }

    /// As [`ActorRef::tell`].
    pub async fn tell(&self, msg: M) -> Result<(), SendError<M>> {
        self.inner.tell(msg).await
    }

    /// As [`ActorRef::try_tell`].
    pub fn try_tell(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.inner.try_tell(msg)
    }

    /// As [`ActorRef::ask`], with an explicit timeout.
    pub async fn ask(&self, msg: M, timeout: Duration) -> Result<M::Reply, AskError<M>> {
        self.inner.ask(msg, timeout).await
    }
}

impl<M: Message> Clone for Recipient<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<M: Message> fmt::Debug for Recipient<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.id())
    }
}
