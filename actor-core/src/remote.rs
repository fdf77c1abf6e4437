//! The seam between the local runtime and a remoting layer (the
//! `actor-remote` crate). Users need nothing here but [`Wire`] (which
//! `#[derive(Message)]` fills in): remote refs come from a node's `lookup`
//! and behave as local ones.
//!
//! An [`ActorRef`] may point at an actor on another node. Such a ref is built
//! by the remoting layer ([`remote_ref`]) from a [`RemoteEndpoint`] (which
//! carries encoded messages to the actor's node) and keeps a local
//! **stand-in** for the remote actor, so that watching it, linking to it or
//! waiting for it to stop work as for a local actor: the remoting layer
//! reports the remote actor's end through the [`StandIn`].
//!
//! Only messages that know how to cross the wire can be sent through a remote
//! ref: their [`Message::wire`] returns a [`Wire`] (the `remote = "..."`
//! option of `#[derive(Message)]` provides it). Others fail with `NotRemote`
//! and are handed back, never dropped silently.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::cell::ActorCell;
use crate::{Actor, ActorId, ActorRef, ExitReason, Handler, Message, SendError};

pub use crate::actor_ref::PendingReply;

/// How a message type and its reply cross the wire: a stable name and the
/// functions that encode and decode them. Built by `#[derive(Message)]` with
/// `#[message(remote = "name")]`.
pub struct Wire<M: Message> {
    /// The stable wire name, the same on every node.
    pub name: &'static str,
    /// Encodes a message.
    pub encode: fn(&M) -> Result<Vec<u8>, CodecError>,
    /// Decodes a message.
    pub decode: fn(&[u8]) -> Result<M, CodecError>,
    /// Encodes a reply.
    pub encode_reply: fn(&M::Reply) -> Result<Vec<u8>, CodecError>,
    /// Decodes a reply.
    pub decode_reply: fn(&[u8]) -> Result<M::Reply, CodecError>,
}

impl<M: Message> Clone for Wire<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: Message> Copy for Wire<M> {}

impl<M: Message> fmt::Debug for Wire<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wire({:?})", self.name)
    }
}

/// A value that did not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

/// Why a remote send or ask failed, as reported by a [`RemoteEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The node is unreachable or gone.
    #[error("the actor's node is down")]
    NodeDown,
    /// The outbound queue to that node is full (only from `try_tell`).
    #[error("the outbound queue to the node is full")]
    Full,
    /// No such actor is exposed there (any more).
    #[error("no such actor on the remote node")]
    ActorNotFound,
    /// The remote actor does not accept this message type.
    #[error("the remote actor does not accept this message")]
    UnknownMessage,
    /// The remote actor stopped or failed before replying.
    #[error("the remote actor stopped or failed before replying")]
    NoReply,
    /// No reply within the timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// A limit or a codec refused the message.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The request was not handled: it could not be queued (there is no
    /// connection to the node, it is down) or the node closed the
    /// connection before reading it.
    #[error("not sent: the actor's node is down")]
    NotSent,
}

/// A boxed future, for the object-safe [`RemoteEndpoint`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`RemoteEndpoint::tell`] did with a message.
pub enum Told<'a> {
    /// Done: queued, or refused (the error says why).
    Done(Result<(), RemoteError>),
    /// There was no room and the caller asked to wait: this future waits
    /// for room (or for the connection that replaces a closed one) and
    /// queues the message.
    Waiting(BoxFuture<'a, Result<(), RemoteError>>),
}

/// The far end of a ref to a remote actor: implemented by the remoting layer.
pub trait RemoteEndpoint: Send + Sync + 'static {
    /// Sends an encoded one-way message. Queued at once if there is room (no
    /// future is made then); otherwise refused with [`RemoteError::Full`],
    /// unless `wait`, in which case the message waits for room in the
    /// returned future. `payload` is copied into the queue: the caller keeps
    /// (and frees) its buffer.
    fn tell<'a>(&'a self, wire_name: &'static str, payload: &'a [u8], wait: bool) -> Told<'a>;

    /// Sends an encoded request and waits for the encoded reply.
    fn ask(
        &self,
        wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, RemoteError>>;

    /// Describes the remote actor for logs, e.g. `counter@node-b`.
    fn describe(&self) -> String;

    /// The remote actor's address, for a ref to it sent on to another node.
    fn address(&self) -> RefAddr;

    /// Encodes and decodes refs inside messages sent through this endpoint.
    fn ref_codec(&self) -> Arc<dyn RefCodec>;

    /// Asks the remote actor's node to stop it (as
    /// [`ActorRef::stop`](crate::ActorRef::stop) does locally), without
    /// waiting. By default, does nothing.
    fn stop(&self) {}

    /// The local actor `linker` linked itself to the remote actor
    /// ([`Context::link`](crate::Context::link)): from now on the remote
    /// actor hears of its exit ([`link_exit`](Self::link_exit)) and of the
    /// loss of this node. By default, nothing: the link then only reaches
    /// from the remote actor to the local one.
    fn link(&self, linker: ActorId) {
        let _ = linker;
    }

    /// The local actor `linker` removed its link to the remote actor.
    fn unlink(&self, linker: ActorId) {
        let _ = linker;
    }

    /// The local actor `linker`, linked to the remote actor, exited.
    fn link_exit(&self, linker: ActorId, reason: &ExitReason) {
        let _ = (linker, reason);
    }
}

/// The address of an actor anywhere in the cluster, as a ref inside a
/// message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RefAddr {
    /// The node the actor lives on.
    pub node: String,
    /// That node's run (on the wire under its first name, `incarnation`).
    #[serde(rename = "incarnation")]
    pub run: u64,
    /// The actor's handle on that node (the number peers address it by).
    pub id: u64,
}

/// A ref decoded from a message.
pub enum ImportedRef {
    /// An actor of the decoding node: an `ActorRef<A>` to downcast.
    Local(Box<dyn Any + Send + Sync>),
    /// An actor elsewhere: build the ref from this endpoint, and hand its
    /// stand-in to `register` so its end gets reported.
    Remote {
        /// Reaches the actor.
        endpoint: Arc<dyn RemoteEndpoint>,
        /// Takes the stand-in.
        register: Box<dyn FnOnce(StandIn) + Send>,
    },
}

/// How refs inside messages are encoded and decoded; installed by the
/// remoting layer around each message's encoding and decoding.
pub trait RefCodec: Send + Sync {
    /// The address under which a peer can reach the local actor `actor` (an
    /// `ActorRef<A>` with `type_id` = `TypeId::of::<A>()`), making it
    /// reachable if needed.
    fn export_local(
        &self,
        type_id: TypeId,
        actor_id: ActorId,
        actor: Box<dyn Any + Send + Sync>,
    ) -> Result<RefAddr, String>;

    /// The ref an address stands for, for an actor of type `type_name`.
    fn import(&self, addr: &RefAddr, type_id: TypeId, type_name: &'static str) -> Result<ImportedRef, String>;
}

thread_local! {
    static CODEC: std::cell::RefCell<Option<Arc<dyn RefCodec>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (an encode or decode of one message) with `codec` handling the
/// refs inside it. Encoding and decoding are synchronous, so a thread-local
/// scope is exact.
pub fn with_ref_codec<T>(codec: Arc<dyn RefCodec>, f: impl FnOnce() -> T) -> T {
    let previous = CODEC.with(|c| c.replace(Some(codec)));
    struct Restore(Option<Arc<dyn RefCodec>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CODEC.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

fn current_codec() -> Option<Arc<dyn RefCodec>> {
    CODEC.with(|c| c.borrow().clone())
}

impl<A: Actor> serde::Serialize for ActorRef<A> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let addr = match self.remote_endpoint() {
            Some(remote) => remote.address(),
            None => {
                let codec = current_codec().ok_or_else(|| {
                    S::Error::custom("an ActorRef can only be encoded inside a message to a remote actor")
                })?;
                codec.export_local(TypeId::of::<A>(), self.id(), Box::new(self.clone())).map_err(S::Error::custom)?
            }
        };
        addr.serialize(serializer)
    }
}

impl<'de, A: Actor> serde::Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let addr = RefAddr::deserialize(deserializer)?;
        let codec = current_codec()
            .ok_or_else(|| D::Error::custom("an ActorRef can only be decoded from a message received from a node"))?;
        match codec.import(&addr, TypeId::of::<A>(), std::any::type_name::<A>()).map_err(D::Error::custom)? {
            ImportedRef::Local(any) => any
                .downcast::<ActorRef<A>>()
                .map(|r| *r)
                .map_err(|_| D::Error::custom(format!("actor {} is not a {}", addr.id, std::any::type_name::<A>()))),
            ImportedRef::Remote { endpoint, register } => {
                let (actor, stand_in) = remote_ref::<A>(endpoint);
                register(stand_in);
                Ok(actor)
            }
        }
    }
}

/// The local stand-in of a remote actor, as the remoting layer holds it: it
/// reports the remote actor's end to everyone holding, watching or linked to
/// a ref to it.
#[derive(Clone)]
pub struct StandIn {
    cell: Arc<ActorCell>,
}

impl StandIn {
    /// Marks the remote actor stopped (once): watchers get `Terminated`, links
    /// fire, `wait_for_stop` returns, sends fail with `NodeDown`-style errors
    /// from the endpoint.
    pub fn terminate(&self, reason: ExitReason) {
        if let Some(remains) = self.cell.finish(reason.clone()) {
            // Senders through the stand-in check the gate (an atomic), not
            // the exit reason (a lock), on every message.
            self.cell.gate.close();
            crate::runtime::notify_death(&self.cell, &remains, reason);
            self.cell.notify_exited();
        }
    }

    /// The stand-in's id: what local actors see as the remote actor's id.
    pub fn id(&self) -> ActorId {
        self.cell.id()
    }

    /// Whether [`terminate`](Self::terminate) has run.
    pub fn is_terminated(&self) -> bool {
        !self.cell.is_alive()
    }

    /// Whether nothing needs this stand-in any more: no ref to it is left and
    /// no live actor watches it or is linked to it.
    pub fn is_unused(&self) -> bool {
        Arc::strong_count(&self.cell) == 1 && !self.cell.has_observers()
    }
}

impl fmt::Debug for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StandIn({})", self.cell)
    }
}

/// Whether local actor `actor` took messages from its mailbox since the
/// last call (for idle detection, as cluster sharding's passivation does):
/// set once per batch the actor takes, so it costs the message path nothing
/// measurable.
pub fn take_activity<A: Actor>(actor: &ActorRef<A>) -> bool {
    actor.cell().take_active()
}

/// An actor on another node, linked to the local `actor`, exited (or its
/// node was lost: `ExitReason::NodeDown`). `actor` gets the link's exit
/// signal as from a local link, from `from` (the id of a stand-in for the
/// remote actor, or [`ActorId::fresh`]).
pub fn deliver_link_exit<A: Actor>(actor: &ActorRef<A>, from: ActorId, reason: ExitReason) {
    actor.cell().signal(crate::cell::Signal::LinkExit(crate::Terminated { id: from, reason }));
}

/// A ref to an actor on another node, reached through `endpoint`, and its
/// stand-in (which the remoting layer keeps, to report the actor's end).
pub fn remote_ref<A: Actor>(endpoint: Arc<dyn RemoteEndpoint>) -> (ActorRef<A>, StandIn) {
    let label: Arc<str> = Arc::from(endpoint.describe());
    let cell = Arc::new(ActorCell::new_stand_in(std::any::type_name::<A>(), label, endpoint.clone()));
    (ActorRef::new_remote(cell.clone(), endpoint), StandIn { cell })
}

/// Enqueues a request for the local `actor` and returns its reply, to await
/// elsewhere (the remoting layer's inbound asks: the request keeps its place
/// in the mailbox while another task awaits the reply). Waits while a
/// bounded mailbox is full. A remote ref refuses with `NotRemote`.
pub async fn ask_enqueue<A, M>(actor: &ActorRef<A>, msg: M) -> Result<PendingReply<M::Reply>, SendError<M>>
where
    A: Handler<M>,
    M: Message,
{
    actor.ask_enqueue(msg).await
}

impl<A: Actor> ActorRef<A> {
    /// Whether this ref points at an actor on another node.
    pub fn is_remote(&self) -> bool {
        self.remote_endpoint().is_some()
    }

    /// Where the actor lives, if on another node: its node, that node's run
    /// and the actor's handle there. `None` for a local actor.
    pub fn remote_addr(&self) -> Option<RefAddr> {
        self.remote_endpoint().map(|e| e.address())
    }
}

tokio::task_local! {
    /// The span remote messages are being delivered in (see [`deliver_in`]).
    static SENT_IN: tracing::Span;
}

/// Runs `delivery` (handing a message that came from a peer to a local
/// mailbox) so that the handler's span of each message it enqueues is a
/// child of `span`, the span that stands for the sender's on its node (a
/// trace across nodes). Local sends keep no such link: a chain of spans
/// through every actor a message passed would never close. A disabled
/// `span` changes nothing.
pub async fn deliver_in<F: Future>(span: tracing::Span, delivery: F) -> F::Output {
    if span.is_none() { delivery.await } else { SENT_IN.scope(span, delivery).await }
}

/// The span set by [`deliver_in`] around the current delivery, if any.
pub(crate) fn sent_in() -> Option<tracing::Span> {
    SENT_IN.try_with(tracing::Span::clone).ok()
}
