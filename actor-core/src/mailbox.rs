//! Mailboxes: the queue of user messages in front of each actor.
//!
//! A mailbox is **bounded** by default ([`Mailbox::DEFAULT_CAPACITY`] messages):
//! when it is full, [`ActorRef::tell`](crate::ActorRef::tell) waits for room
//! (backpressure) and [`ActorRef::try_tell`](crate::ActorRef::try_tell) fails at
//! once with [`TrySendError::Full`](crate::TrySendError::Full), handing the
//! message back. An **unbounded** mailbox never makes a sender wait; choose it
//! only where the producers are bounded by other means.
//!
//! System signals (stop, watch and link notices, supervision) do not travel
//! through the mailbox: they sit in a separate queue that the actor drains before
//! each message, so they overtake user messages and are never blocked by a full
//! mailbox.

use std::future::Future;
use std::pin::Pin;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use stackfuture::StackFuture;
use tokio::sync::{Notify, oneshot};

use crate::{Actor, Context, Handler, Message};

/// How an actor's mailbox is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mailbox {
    /// At most this many queued messages (at least 1).
    Bounded(usize),
    /// No limit: senders never wait.
    Unbounded,
}

impl Mailbox {
    /// The capacity of a default mailbox.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A bounded mailbox of `capacity` messages (a capacity of 0 is taken as 1).
    pub fn bounded(capacity: usize) -> Self {
        Mailbox::Bounded(capacity.max(1))
    }

    /// An unbounded mailbox.
    pub fn unbounded() -> Self {
        Mailbox::Unbounded
    }

    /// The number of messages the mailbox holds before senders wait
    /// (`usize::MAX` for an unbounded mailbox).
    pub fn capacity(self) -> usize {
        match self {
            Mailbox::Bounded(n) => n.max(1),
            Mailbox::Unbounded => usize::MAX,
        }
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox::Bounded(Self::DEFAULT_CAPACITY)
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Bytes a handler's future may take and still run without an allocation
/// of its own (see [`HandlerFuture`]). A handler that only updates its state
/// or replies takes 24 to 64 bytes; one that awaits something (another ask,
/// a timer, I/O) holds that future too and is boxed, as every handler was.
/// Every actor's task reserves this much, so it stays small.
pub(crate) const INLINE_HANDLER: usize = 96;

/// A handler's future, erased over the message type: stored in place when
/// it fits in [`INLINE_HANDLER`] bytes (no allocation per message), boxed
/// otherwise. The choice is made per message type, at compile time.
pub(crate) type HandlerFuture<'a> = StackFuture<'a, (), INLINE_HANDLER>;

/// One queued message, erased over its type. The actor's loop calls `handle`.
pub(crate) trait Envelope<A: Actor>: Send {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> HandlerFuture<'a>;
    fn message_type(&self) -> &'static str;
    /// The span the message was sent in, when it was kept (see [`traced`]).
    fn sent_in(&self) -> Option<&tracing::Span> {
        None
    }
}

pub(crate) type BoxEnvelope<A> = Box<dyn Envelope<A>>;

/// Keeps, with a message from a peer, the span it is delivered in (see
/// [`deliver_in`](crate::remote::deliver_in)), so that its handler's span
/// is a child of it: a trace across nodes. Only when debug spans are on
/// (the handler's span is one): otherwise the envelope goes as it is, at
/// the cost of one check.
#[inline]
pub(crate) fn traced<A: Actor>(env: BoxEnvelope<A>) -> BoxEnvelope<A> {
    if !debug_spans() {
        return env;
    }
    match crate::remote::sent_in() {
        Some(sent_in) => Box::new(Traced { sent_in, inner: env }),
        None => env,
    }
}

/// Whether debug spans may be recorded: a subscriber was ever set (one
/// load) and the most verbose level enabled is debug or finer.
#[inline(always)]
pub(crate) fn debug_spans() -> bool {
    tracing::dispatcher::has_been_set() && tracing::level_enabled!(tracing::Level::DEBUG)
}

struct Traced<A: Actor> {
    sent_in: tracing::Span,
    inner: BoxEnvelope<A>,
}

impl<A: Actor> Envelope<A> for Traced<A> {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> HandlerFuture<'a> {
        self.inner.handle(actor, ctx)
    }

    fn message_type(&self) -> &'static str {
        self.inner.message_type()
    }

    fn sent_in(&self) -> Option<&tracing::Span> {
        Some(&self.sent_in)
    }
}

pub(crate) struct Tell<M>(pub(crate) M);

impl<A: Handler<M>, M: Message> Envelope<A> for Tell<M> {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> HandlerFuture<'a> {
        let msg = self.0;
        HandlerFuture::from_or_box(async move {
            actor.handle(msg, ctx).await;
        })
    }

    fn message_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }
}

pub(crate) struct Ask<M: Message> {
    pub(crate) msg: M,
    pub(crate) reply: oneshot::Sender<M::Reply>,
}

impl<A: Handler<M>, M: Message> Envelope<A> for Ask<M> {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> HandlerFuture<'a> {
        let Ask { msg, reply } = *self;
        HandlerFuture::from_or_box(async move {
            let out = actor.handle(msg, ctx).await;
            // The asker may have timed out and gone: nothing to do then.
            let _ = reply.send(out);
        })
    }

    fn message_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }
}

/// Stops the actor when its turn comes (after the messages queued before it).
pub(crate) struct StopAfterQueued;

impl<A: Actor> Envelope<A> for StopAfterQueued {
    fn handle<'a>(self: Box<Self>, _actor: &'a mut A, ctx: &'a mut Context<A>) -> HandlerFuture<'a> {
        ctx.stop();
        HandlerFuture::from(std::future::ready(()))
    }

    fn message_type(&self) -> &'static str {
        "stop_after_queued"
    }
}

/// The queue of a mailbox: a lock-protected deque that the actor drains in
/// batches.
///
/// Senders push one envelope each under a short lock; the actor swaps the
/// whole deque out under one lock and works through the batch without
/// touching shared state again. An empty queue owns no allocation, which keeps
/// idle actors small (a channel that preallocates a block per actor costs
/// more than the rest of the actor). Admission (capacity, waiting senders) is
/// the [`Gate`]'s job; waking the actor is the cell's.
pub(crate) struct Queue<A: Actor> {
    inner: Mutex<QueueInner<A>>,
}

struct QueueInner<A: Actor> {
    items: VecDeque<BoxEnvelope<A>>,
    closed: bool,
}

impl<A: Actor> Queue<A> {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new(QueueInner { items: VecDeque::new(), closed: false }) }
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner<A>> {
        // Nothing panics while holding this lock except allocation failure;
        // the deque stays consistent either way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an envelope and says whether the queue was empty before (only
    /// then may the actor be waiting: it registers its waker in
    /// [`take_all`](Self::take_all), under this lock, only when it finds the
    /// queue empty, and takes every envelope queued before it looks again).
    /// Gives the envelope back if the actor has stopped for good.
    pub(crate) fn push(&self, env: BoxEnvelope<A>) -> Result<bool, BoxEnvelope<A>> {
        let mut q = self.lock();
        if q.closed {
            return Err(env);
        }
        let was_empty = q.items.is_empty();
        q.items.push_back(env);
        Ok(was_empty)
    }

    /// Moves every queued envelope to the back of `batch` (which is empty) and
    /// returns whether there was any. When there was none, `register` runs
    /// under the lock, so a sender pushing right after is sure to wake it.
    pub(crate) fn take_all(&self, batch: &mut VecDeque<BoxEnvelope<A>>, register: impl FnOnce()) -> bool {
        let mut q = self.lock();
        if q.items.is_empty() {
            register();
            return false;
        }
        std::mem::swap(&mut q.items, batch);
        true
    }

    /// Puts an unfinished batch back in front of what was queued since, so a
    /// restarted instance sees every message in order.
    pub(crate) fn put_back(&self, mut batch: VecDeque<BoxEnvelope<A>>) {
        if batch.is_empty() {
            return;
        }
        let mut q = self.lock();
        batch.append(&mut q.items);
        q.items = batch;
    }

    /// Refuses every later push and returns what was queued, to be dropped by
    /// the caller outside the lock (dropping an ask's envelope resolves it
    /// with `NoReply`).
    pub(crate) fn close(&self) -> VecDeque<BoxEnvelope<A>> {
        let mut q = self.lock();
        q.closed = true;
        std::mem::take(&mut q.items)
    }
}

/// Why the gate refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    Closed,
}

/// Admission control in front of the queue: counts queued messages against
/// the capacity and parks senders while the mailbox is full.
///
/// The queue itself is Tokio's unbounded channel; the count lives here so that
/// taking a message costs the receiver one atomic decrement instead of a
/// semaphore release under a lock. A sender reserves a slot (compare-and-swap)
/// before it enqueues, so the mailbox never holds more than its capacity.
pub(crate) struct Gate {
    capacity: usize,
    queued: AtomicUsize,
    /// Messages taken from the queue so far (counted per batch, when their
    /// slots are released): what the actor has handled or is handling.
    taken: AtomicU64,
    waiting: AtomicUsize,
    closed: AtomicBool,
    space: Notify,
}

impl Gate {
    pub(crate) fn new(mailbox: Mailbox) -> Self {
        let capacity = match mailbox {
            Mailbox::Bounded(n) => n.max(1),
            Mailbox::Unbounded => usize::MAX,
        };
        Self {
            capacity,
            queued: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            space: Notify::new(),
        }
    }

    fn bounded(&self) -> bool {
        self.capacity != usize::MAX
    }

    /// Whether the gate was closed (the actor has ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Reserves a slot if one is free now.
    pub(crate) fn try_acquire(&self) -> Result<(), Refusal> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refusal::Closed);
        }
        if !self.bounded() {
            return Ok(());
        }
        let mut n = self.queued.load(Ordering::Relaxed);
        loop {
            if n >= self.capacity {
                return Err(Refusal::Full);
            }
            match self.queued.compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => n = now,
            }
        }
    }

    /// Reserves a slot, waiting while the mailbox is full. Cancel safe: a
    /// dropped call holds no slot.
    pub(crate) async fn acquire(&self) -> Result<(), Refusal> {
        let mut woken = false;
        loop {
            match self.try_acquire() {
                Err(Refusal::Full) => {}
                Ok(()) if woken => {
                    // Pass the turn on while there is room.
                    if self.queued.load(Ordering::SeqCst) < self.capacity && self.waiting.load(Ordering::SeqCst) > 0 {
                        self.space.notify_one();
                    }
                    return Ok(());
                }
                done => return done,
            }
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            let _waiting = WaitingGuard::new(&self.waiting);
            // Re-check after announcing ourselves: a receiver that freed a
            // slot before seeing `waiting` is caught here (both sides SeqCst).
            if self.queued.load(Ordering::SeqCst) < self.capacity || self.closed.load(Ordering::SeqCst) {
                continue;
            }
            notified.await;
            woken = true;
        }
    }

    /// Returns `taken` slots, once per message taken from the queue (batched
    /// by the receiver, see [`release_batch`](Self::release_batch)).
    ///
    /// Waking senders: when the receiver is about to wait (`urgent`: its queue
    /// is empty or a handler is pending), a waiting sender is woken, and each
    /// woken sender that finds room left wakes the next, so none stays parked
    /// next to a free slot (without waking them all at once to fight over
    /// one). While the receiver is busy draining, senders are woken only once
    /// the mailbox is down to half: each wake-up then refills half a mailbox.
    ///
    /// Only the actor's own task calls this (it alone counts what it took,
    /// so `taken` needs no read-modify-write); a sender that reserved a slot
    /// it could not use returns it with [`unreserve`](Self::unreserve).
    pub(crate) fn release(&self, taken: usize, urgent: bool) {
        if taken == 0 {
            return;
        }
        self.taken.store(self.taken.load(Ordering::Relaxed) + taken as u64, Ordering::Relaxed);
        self.free(taken, urgent);
    }

    /// Returns a slot reserved for a message that was never queued (the
    /// actor had ended): not a message taken.
    pub(crate) fn unreserve(&self) {
        self.free(1, true);
    }

    /// Frees `n` slots and wakes senders as [`release`](Self::release) says.
    fn free(&self, n: usize, urgent: bool) {
        if !self.bounded() {
            return;
        }
        let left = self.queued.fetch_sub(n, Ordering::SeqCst) - n;
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting == 0 || (!urgent && left > self.capacity / 2) {
            return;
        }
        if left == 0 {
            self.space.notify_waiters();
        } else {
            // One sender; it passes the turn on if room is left (see `acquire`).
            self.space.notify_one();
        }
    }

    /// How many taken messages the receiver may hold back before releasing
    /// their slots in one go (it always releases before it waits). Keeps the
    /// sender and the receiver off a shared counter for most messages, at the
    /// cost of senders seeing a mailbox full up to that many messages early.
    pub(crate) fn release_batch(&self) -> usize {
        if self.bounded() { (self.capacity / 16).clamp(1, 32) } else { usize::MAX }
    }

    /// Messages queued now (admitted, not yet released by the receiver:
    /// up to [`release_batch`](Self::release_batch) more than wait), for a
    /// bounded mailbox; `None` for an unbounded one, which keeps no count.
    pub(crate) fn depth(&self) -> Option<usize> {
        self.bounded().then(|| self.queued.load(Ordering::Relaxed))
    }

    /// The capacity of a bounded mailbox.
    pub(crate) fn capacity(&self) -> Option<usize> {
        self.bounded().then_some(self.capacity)
    }

    /// Messages taken from the queue so far (see `taken`).
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Refuses every later message and wakes every waiting sender.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.space.notify_waiters();
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActorRef, ActorSystem};

    struct Hop {
        next: Option<ActorRef<Hop>>,
    }
    impl Actor for Hop {}

    struct Token(u64);
    impl Message for Token {
        type Reply = ();
    }
    impl Handler<Token> for Hop {
        async fn handle(&mut self, Token(left): Token, _ctx: &mut Context<Self>) {
            if let Some(next) = &self.next {
                let _ = next.tell(Token(left - 1)).await;
            }
        }
    }

    struct Get;
    impl Message for Get {
        type Reply = u64;
    }
    impl Handler<Get> for Hop {
        async fn handle(&mut self, _: Get, _ctx: &mut Context<Self>) -> u64 {
            1
        }
    }

    /// The handlers of the common shapes (one that forwards with a tell,
    /// one that answers an ask) run without an allocation of their own:
    /// their futures, as `Tell` and `Ask` wrap them, fit in the inline slot.
    /// A tell future that grew (say, written as a nested `async fn` again)
    /// pushes the forwarding handler out of it.
    #[tokio::test]
    async fn common_handlers_fit_the_inline_slot() {
        let system = ActorSystem::new("inline");
        let me = system.spawn(Hop { next: None });
        let mut actor = Hop { next: Some(me.clone()) };
        let mut ctx = Context::new(me.clone(), system.clone(), None);
        let tell = me.tell(Token(1));
        assert!(std::mem::size_of_val(&tell) <= 32, "a tell's future takes {} bytes", std::mem::size_of_val(&tell));
        drop(tell);
        {
            let forward = HandlerFuture::try_from(async {
                actor.handle(Token(3), &mut ctx).await;
            });
            assert!(forward.is_ok(), "a forwarding handler no longer fits in {INLINE_HANDLER} bytes");
        }
        let (reply, _rx) = oneshot::channel::<u64>();
        let answer = HandlerFuture::try_from(async {
            let _ = reply.send(actor.handle(Get, &mut ctx).await);
        });
        assert!(answer.is_ok(), "an answering handler no longer fits in {INLINE_HANDLER} bytes");
    }
}
