//! Which actors peers may reach, and with which messages.

use actor_core::entropy::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::any::Any;

use actor_core::remote::{BoxFuture, RefCodec, ask_enqueue, deliver_link_exit, with_ref_codec};
use actor_core::{Actor, ActorRef, Handler, Message};

use crate::proto::FailureCode;

/// The table of an exposed actor type: wire name → decoder and dispatcher.
pub(crate) type DispatchTable<A> = HashMap<&'static str, Arc<dyn Dispatch<A>>>;

/// The encoded reply to an inbound ask, or why there is none.
pub(crate) type ReplyFuture = BoxFuture<'static, Result<Vec<u8>, (FailureCode, String)>>;

/// An actor type whose handlers peers may call. List the remote messages it
/// accepts; each must have a wire name (`#[message(remote = "...")]` with
/// the derive, or a [`Message::wire`] written by hand as below). A message
/// not listed is refused with `UnknownMessage`.
///
/// ```
/// use actor_core::{Actor, Context, Handler, Message};
/// use actor_remote::{RemoteActor, RemoteMessages};
///
/// struct Counter(u64);
/// impl Actor for Counter {}
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Add(u64);
/// impl Message for Add {
///     type Reply = u64;
///     fn wire() -> Option<actor_core::Wire<Self>> {
///         Some(actor_remote::codec::wire("demo.Add"))
///     }
/// }
/// impl Handler<Add> for Counter {
///     async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
///         self.0 += n;
///         self.0
///     }
/// }
///
/// impl RemoteActor for Counter {
///     fn remote_messages(m: &mut RemoteMessages<Self>) {
///         m.add::<Add>();
///     }
/// }
/// ```
pub trait RemoteActor: Actor {
    /// Registers the messages peers may send.
    fn remote_messages(messages: &mut RemoteMessages<Self>);
}

/// The messages an exposed actor type accepts from peers, by wire name.
pub struct RemoteMessages<A: Actor> {
    table: DispatchTable<A>,
    missing_wire: Vec<&'static str>,
}

impl<A: Actor> RemoteMessages<A> {
    pub(crate) fn new() -> Self {
        Self { table: HashMap::default(), missing_wire: Vec::new() }
    }

    /// Accepts `M` from peers.
    pub fn add<M>(&mut self) -> &mut Self
    where
        A: Handler<M>,
        M: Message,
    {
        match M::wire() {
            Some(wire) => {
                self.table.insert(wire.name, Arc::new(MessageDispatch::<M> { wire }));
            }
            None => self.missing_wire.push(std::any::type_name::<M>()),
        }
        self
    }

    pub(crate) fn into_parts(self) -> (DispatchTable<A>, Vec<&'static str>) {
        (self.table, self.missing_wire)
    }
}

/// Decodes one message type and hands it to the actor.
pub(crate) trait Dispatch<A: Actor>: Send + Sync {
    /// Delivers a one-way message if the mailbox has room now.
    fn try_tell(&self, actor: &ActorRef<A>, payload: &[u8], codec: &Arc<dyn RefCodec>) -> Result<(), TryTell>;

    /// Delivers a one-way message, waiting for mailbox room.
    fn tell<'a>(
        &'a self,
        actor: &'a ActorRef<A>,
        payload: &'a [u8],
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<(), FailureCode>>;

    /// Enqueues a request and returns a future for the encoded reply.
    fn ask<'a>(
        &'a self,
        actor: &'a ActorRef<A>,
        payload: &'a [u8],
        timeout: Duration,
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<ReplyFuture, FailureCode>>;
}

struct MessageDispatch<M: Message> {
    wire: actor_core::Wire<M>,
}

impl<M: Message> MessageDispatch<M> {
    /// Decodes a payload, with the connection handling refs inside it.
    fn decode(&self, payload: &[u8], codec: &Arc<dyn RefCodec>) -> Result<M, actor_core::CodecError> {
        with_ref_codec(codec.clone(), || (self.wire.decode)(payload))
    }
}

/// Why an immediate delivery did not happen.
pub(crate) enum TryTell {
    /// The mailbox is full: deliver later, in order.
    Full,
    /// It can never be delivered.
    Refused(FailureCode),
}

impl<A: Handler<M>, M: Message> Dispatch<A> for MessageDispatch<M> {
    fn try_tell(&self, actor: &ActorRef<A>, payload: &[u8], codec: &Arc<dyn RefCodec>) -> Result<(), TryTell> {
        let msg = self.decode(payload, codec).map_err(|_| TryTell::Refused(FailureCode::DecodeError))?;
        actor.try_tell(msg).map_err(|e| match e {
            actor_core::TrySendError::Full(_) => TryTell::Full,
            _ => TryTell::Refused(FailureCode::ActorNotFound),
        })
    }

    fn tell<'a>(
        &'a self,
        actor: &'a ActorRef<A>,
        payload: &'a [u8],
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<(), FailureCode>> {
        Box::pin(async move {
            let msg = self.decode(payload, codec).map_err(|_| FailureCode::DecodeError)?;
            actor.tell(msg).await.map_err(|_| FailureCode::ActorNotFound)
        })
    }

    fn ask<'a>(
        &'a self,
        actor: &'a ActorRef<A>,
        payload: &'a [u8],
        timeout: Duration,
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<ReplyFuture, FailureCode>> {
        Box::pin(async move {
            let msg = self.decode(payload, codec).map_err(|_| FailureCode::DecodeError)?;
            let pending = ask_enqueue(actor, msg).await.map_err(|_| FailureCode::ActorNotFound)?;
            let encode = self.wire.encode_reply;
            let codec = codec.clone();
            let reply: ReplyFuture = Box::pin(async move {
                match tokio::time::timeout(timeout, pending).await {
                    Ok(Some(reply)) => {
                        with_ref_codec(codec, || encode(&reply)).map_err(|e| (FailureCode::Rejected, e.to_string()))
                    }
                    Ok(None) => Err((FailureCode::NoReply, "the actor stopped or failed before replying".into())),
                    Err(_) => Err((FailureCode::Timeout, "no reply within the timeout".into())),
                }
            });
            Ok(reply)
        })
    }
}

/// An exposed actor, erased over its type.
pub(crate) trait Exposed: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn is_alive(&self) -> bool;
    /// Resolves when the actor has stopped for good.
    fn wait_for_stop(&self) -> BoxFuture<'static, actor_core::ExitReason>;
    /// The `ActorRef<A>`, boxed.
    fn actor_any(&self) -> Box<dyn Any + Send + Sync>;
    /// Stops the actor.
    fn stop(&self);
    /// An actor elsewhere, linked to this one, exited.
    fn link_exit(&self, from: actor_core::ActorId, reason: actor_core::ExitReason);
    fn try_tell(&self, wire_name: &str, payload: &[u8], codec: &Arc<dyn RefCodec>) -> Result<(), TryTell>;
    fn tell<'a>(
        &'a self,
        wire_name: &'a str,
        payload: &'a [u8],
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<(), FailureCode>>;
    fn ask<'a>(
        &'a self,
        wire_name: &'a str,
        payload: &'a [u8],
        timeout: Duration,
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<ReplyFuture, FailureCode>>;
}

pub(crate) struct ExposedActor<A: Actor> {
    pub(crate) actor: ActorRef<A>,
    pub(crate) table: Arc<DispatchTable<A>>,
}

impl<A: Actor> Exposed for ExposedActor<A> {
    fn type_name(&self) -> &'static str {
        std::any::type_name::<A>()
    }

    fn stop(&self) {
        self.actor.stop();
    }

    fn link_exit(&self, from: actor_core::ActorId, reason: actor_core::ExitReason) {
        deliver_link_exit(&self.actor, from, reason);
    }

    fn is_alive(&self) -> bool {
        self.actor.is_alive()
    }

    fn wait_for_stop(&self) -> BoxFuture<'static, actor_core::ExitReason> {
        let actor = self.actor.clone();
        Box::pin(async move { actor.wait_for_stop().await })
    }

    fn actor_any(&self) -> Box<dyn Any + Send + Sync> {
        Box::new(self.actor.clone())
    }

    fn try_tell(&self, wire_name: &str, payload: &[u8], codec: &Arc<dyn RefCodec>) -> Result<(), TryTell> {
        match self.table.get(wire_name) {
            Some(d) => d.try_tell(&self.actor, payload, codec),
            None => Err(TryTell::Refused(FailureCode::UnknownMessage)),
        }
    }

    fn tell<'a>(
        &'a self,
        wire_name: &'a str,
        payload: &'a [u8],
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<(), FailureCode>> {
        match self.table.get(wire_name) {
            Some(d) => d.tell(&self.actor, payload, codec),
            None => Box::pin(async { Err(FailureCode::UnknownMessage) }),
        }
    }

    fn ask<'a>(
        &'a self,
        wire_name: &'a str,
        payload: &'a [u8],
        timeout: Duration,
        codec: &'a Arc<dyn RefCodec>,
    ) -> BoxFuture<'a, Result<ReplyFuture, FailureCode>> {
        match self.table.get(wire_name) {
            Some(d) => d.ask(&self.actor, payload, timeout, codec),
            None => Box::pin(async { Err(FailureCode::UnknownMessage) }),
        }
    }
}
