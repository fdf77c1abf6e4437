//! Messages and the handlers that receive them.

use std::future::Future;

use crate::{Actor, Context, Wire};

/// A value that can be sent to an actor.
///
/// `Reply` is what the handler returns: `()` for fire-and-forget messages, any
/// `Send` type for request/reply. Usually derived with `#[derive(Message)]` and
/// `#[message(reply = T)]`.
///
/// ```
/// use actor_core::Message;
///
/// struct Add(u64);
/// impl Message for Add {
///     type Reply = u64;
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Footlight message",
    label = "not a message",
    note = "derive it with `#[derive(Message)]` (reply type with `#[message(reply = T)]`), or implement `Message` by hand"
)]
pub trait Message: Send + 'static {
    /// The value the handler returns, delivered to the asker by
    /// [`ActorRef::ask`](crate::ActorRef::ask) and dropped by `tell`.
    type Reply: Send + 'static;

    /// How this message crosses nodes, or `None` (the default) for a
    /// local-only message, which a ref to a remote actor refuses with
    /// `NotRemote`. `#[derive(Message)]` with `#[message(remote = "name")]`
    /// implements it.
    fn wire() -> Option<Wire<Self>>
    where
        Self: Sized,
    {
        None
    }
}

/// An actor's behaviour for one message type.
///
/// One `impl Handler<M>` per message type. Write the method as a plain
/// `async fn`; the returned future must be `Send`. Handlers of one actor never run
/// concurrently: each gets `&mut self` and runs to completion before the next
/// message is taken from the mailbox.
///
/// A handler that panics fails its actor: the panic is caught, logged with the
/// actor and the message type, and handed to [`Actor::on_failure`]. To fail
/// without panicking, call [`Context::fail`].
///
/// ```
/// use actor_core::{Actor, Context, Handler, Message};
///
/// struct Counter(u64);
/// impl Actor for Counter {}
///
/// struct Add(u64);
/// impl Message for Add {
///     type Reply = u64;
/// }
///
/// impl Handler<Add> for Counter {
///     async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
///         self.0 += n;
///         self.0
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "actor `{Self}` does not handle `{M}`",
    label = "no `Handler<{M}>` for this actor",
    note = "add `impl Handler<{M}> for {Self} {{ async fn handle(&mut self, msg: {M}, ctx: &mut Context<Self>) -> .. }}`"
)]
pub trait Handler<M: Message>: Actor {
    /// Handles one message and returns its reply.
    fn handle(&mut self, msg: M, ctx: &mut Context<Self>) -> impl Future<Output = M::Reply> + Send;
}
