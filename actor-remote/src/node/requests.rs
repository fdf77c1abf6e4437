//! Requests addressed to a node itself rather than to one of its actors:
//! `Target` = the name [`SYSTEM_TARGET`]. The node answers two (a lookup by
//! name, a stop request); the rest are its services' (membership, the
//! registry).

use std::time::Duration;

use actor_core::remote::RemoteError;
use serde::{Deserialize, Serialize};

use super::expose::ReplyFuture;
use super::outbox::{Command, Outbox};
use crate::proto::FailureCode;
use crate::proto::frame::Target;

/// The reserved target name of a node's own requests.
pub(crate) const SYSTEM_TARGET: &str = "$node";
/// Wire name of a request to stop an actor (payload: its handle, u64).
pub(crate) const STOP: &str = "footlight.Stop";
/// Wire name of a lookup by name (payload: the name; reply: [`LookupReply`]).
pub(crate) const LOOKUP: &str = "footlight.Lookup";
/// Wire name of what the node with the lower id says about a connection
/// the other node dialed (payload: a bool): `true`, it stays (no dial of
/// the sender's to this node by id is under way, and none by id starts
/// while it lives); `false`, the sender's own dial is under way and may
/// replace it (`true` follows if it does not).
pub(crate) const SETTLE: &str = "footlight.Settle";
/// How long a lookup waits for a peer's answer.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A found actor: its handle and Rust type name, and the node it is on
/// (the answering node, or another member holding a cluster-wide name).
#[derive(Serialize, Deserialize)]
pub(crate) struct LookupReply {
    pub(crate) id: u64,
    pub(crate) type_name: String,
    /// Absent from older nodes' answers: then it is the answering node.
    #[serde(default)]
    pub(crate) node: Option<String>,
    #[serde(default)]
    pub(crate) run: Option<u64>,
    #[serde(default)]
    pub(crate) addr: Option<String>,
}

/// A system tell to send: addressed to the node, not to an actor.
pub(crate) fn system_tell(wire_name: &'static str, payload: Vec<u8>) -> Command {
    Command::Tell { target: Target::name(SYSTEM_TARGET), wire_name, payload }
}

/// Asks the peer behind `outbox` where the actor named `name` is.
pub(crate) async fn lookup(outbox: &Outbox, name: &str) -> Result<LookupReply, RemoteError> {
    let payload = crate::codec::encode(&name).map_err(|e| RemoteError::Rejected(e.to_string()))?;
    let queue = |cmd| async move { outbox.send(cmd).await.map_err(|_| RemoteError::NodeDown) };
    let bytes = ask(queue, Target::name(SYSTEM_TARGET), LOOKUP, payload, LOOKUP_TIMEOUT).await?;
    crate::codec::decode(&bytes).map_err(|e| RemoteError::Rejected(e.to_string()))
}

/// Answers a peer's lookup of `payload` (a name) with where `find` says the
/// actor is. `on_local` runs before the answer goes out for an actor of
/// this node (the connection watches it, so its end is reported even if it
/// comes at once).
pub(crate) fn answer_lookup(
    wire_name: &str,
    payload: &[u8],
    me: &str,
    find: impl FnOnce(&str) -> Option<super::Located>,
    on_local: impl FnOnce(u64),
) -> Result<ReplyFuture, FailureCode> {
    if wire_name != LOOKUP {
        return Err(FailureCode::UnknownMessage);
    }
    let name: String = crate::codec::decode(payload).map_err(|_| FailureCode::DecodeError)?;
    let found = find(&name).ok_or(FailureCode::ActorNotFound)?;
    if found.node == me {
        on_local(found.handle);
    }
    let reply = LookupReply {
        id: found.handle,
        type_name: found.type_name,
        node: Some(found.node),
        run: Some(found.run),
        addr: Some(found.addr),
    };
    let bytes = crate::codec::encode(&reply).map_err(|_| FailureCode::Rejected)?;
    Ok(Box::pin(async move { Ok(bytes) }))
}

/// Sends an ask (`queue` puts its command in a connection's outbox) and
/// waits for its outcome, which the connection resolves exactly once
/// (reply, failure, timeout or node loss). The timeout covers waiting for
/// room in the queue too.
pub(crate) async fn ask<F, Fut>(
    queue: F,
    target: Target,
    wire_name: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, RemoteError>
where
    F: FnOnce(Command) -> Fut,
    Fut: std::future::Future<Output = Result<(), RemoteError>>,
{
    use actor_core::deadline::{Deadline, Until};
    use std::task::Poll;

    let (reply, rx) = tokio::sync::oneshot::channel();
    let cmd = Command::Ask { target, wire_name, payload, timeout, trace: crate::trace::inject(), reply };
    // Queued at once (the usual case): the wait for the reply needs no timer
    // of its own (see `actor_core::deadline`). Otherwise the timeout starts
    // now and covers the wait for room too.
    let mut queued = std::pin::pin!(queue(cmd));
    let deadline = match std::future::poll_fn(|cx| Poll::Ready(queued.as_mut().poll(cx))).await {
        Poll::Ready(queued) => {
            queued?;
            Deadline::After(timeout)
        }
        Poll::Pending => {
            let mut deadline = Deadline::After(timeout);
            match tokio::time::timeout_at(deadline.fix(), queued).await {
                Ok(queued) => queued?,
                Err(_) => return Err(RemoteError::Timeout),
            }
            deadline
        }
    };
    match Until::new(rx, deadline).await {
        Some(reply) => reply.unwrap_or(Err(RemoteError::NodeDown)),
        None => Err(RemoteError::Timeout),
    }
}
