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

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Actor, Context, Handler, Message};

/// How an actor's mailbox is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mailbox {
    /// At most this many queued messages (at least 1).
    Bounded(usize),
    /// No practical limit (Tokio's maximum channel capacity): senders never wait.
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

    /// The number of messages the mailbox holds before senders wait.
    pub fn capacity(self) -> usize {
        match self {
            Mailbox::Bounded(n) => n.clamp(1, Semaphore::MAX_PERMITS),
            Mailbox::Unbounded => Semaphore::MAX_PERMITS,
        }
    }

    pub(crate) fn channel<A: Actor>(self) -> (MailboxTx<A>, MailboxRx<A>) {
        mpsc::channel(self.capacity())
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox::Bounded(Self::DEFAULT_CAPACITY)
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One queued message, erased over its type. The actor's loop calls `handle`.
pub(crate) trait Envelope<A: Actor>: Send {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> BoxFuture<'a, ()>;
    fn message_type(&self) -> &'static str;
}

pub(crate) type BoxEnvelope<A> = Box<dyn Envelope<A>>;

pub(crate) struct Tell<M>(pub(crate) M);

impl<A: Handler<M>, M: Message> Envelope<A> for Tell<M> {
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> BoxFuture<'a, ()> {
        let msg = self.0;
        Box::pin(async move {
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
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> BoxFuture<'a, ()> {
        let Ask { msg, reply } = *self;
        Box::pin(async move {
            let out = actor.handle(msg, ctx).await;
            // The asker may have timed out and gone: nothing to do then.
            let _ = reply.send(out);
        })
    }

    fn message_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }
}

/// The sending half of a mailbox. An unbounded mailbox is a channel whose
/// capacity is Tokio's maximum, so both kinds share one path that hands a refused
/// message back without any downcast.
pub(crate) type MailboxTx<A> = mpsc::Sender<BoxEnvelope<A>>;
pub(crate) type MailboxRx<A> = mpsc::Receiver<BoxEnvelope<A>>;
