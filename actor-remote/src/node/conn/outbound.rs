//! A connection's outbound side: what was taken from its [`Outbox`]
//! (`super::super::outbox`) becomes frames in the session, in queue order.

use actor_core::entropy::HashMap;
use std::time::Instant;

use actor_core::remote::RemoteError;
use tokio::sync::oneshot;

use crate::node::outbox::{Command, Next, Queued};
use crate::proto::frame::{ActorAddr, Exit, Link, Tell, Terminated, Watch};
use crate::proto::{AskFailure, CloseCode, FailureCode, Session};

/// Asks sent on this connection and not resolved yet, by id.
pub(super) type Pending = HashMap<u64, oneshot::Sender<Result<Vec<u8>, RemoteError>>>;

/// Hands the batch taken from the outbound queue to the session, in queue
/// order, while it has room: frames as they are, commands one by one. What
/// the session pushes back on stays in the batch.
pub(super) fn feed(session: &mut Session, batch: &mut Queued, now: Instant, pending: &mut Pending) {
    while !session.is_closed() {
        if batch.next_is_frames() && !session.has_room() {
            return;
        }
        match batch.next() {
            None => return,
            Some(Next::Frames(frames)) => {
                // Encoded against the peer's limit once established; a
                // closed session drops them (at most once).
                if let Err(e) = session.send_encoded(now, frames) {
                    tracing::debug!(error = %e, "tells not sent");
                }
            }
            Some(Next::Command(cmd)) => {
                if let Some(cmd) = submit(session, now, cmd, pending) {
                    batch.put_back(cmd);
                    return;
                }
            }
        }
    }
}

/// Hands a command to the session; gives it back if the session is full.
fn submit(session: &mut Session, now: Instant, cmd: Command, pending: &mut Pending) -> Option<Command> {
    use crate::proto::SendError;
    match cmd {
        Command::Datagram { wire_name, payload } => {
            // A datagram is worth sending only while the peer is heard from:
            // over a stalled connection (a partition, not yet declared) it
            // would queue, and arrive all at once after the heal, stale.
            // Membership built for UDP misjudges on such a backlog (an
            // isolated node's old verdicts on the others).
            if now.saturating_duration_since(session.last_heard()) > datagram_silence(session) {
                tracing::trace!(%wire_name, "datagram dropped: the peer has not been heard from lately");
                return None;
            }
            if !session.has_room() {
                return Some(Command::Datagram { wire_name, payload });
            }
            let tell = Tell {
                target: crate::proto::frame::Target::name(crate::node::requests::SYSTEM_TARGET),
                sender: None,
                wire_name: wire_name.into(),
                payload,
                trace: None,
            };
            if let Err(e) = session.send_tell(now, tell) {
                tracing::debug!(error = %e, "datagram not sent");
            }
        }
        Command::Tell { target, wire_name, payload } => {
            if !session.has_room() {
                return Some(Command::Tell { target, wire_name, payload });
            }
            let tell = Tell { target, sender: None, wire_name: wire_name.into(), payload, trace: None };
            // `has_room` said yes, so only a closed session or a frame over the
            // peer's limit can refuse it; neither can be retried.
            if let Err(e) = session.send_tell(now, tell) {
                tracing::warn!(error = %e, "tell not sent");
            }
        }
        Command::Ask { target, wire_name, payload, timeout, trace, reply } => {
            if !session.has_room() {
                return Some(Command::Ask { target, wire_name, payload, timeout, trace, reply });
            }
            match session.send_ask(now, target, None, wire_name.into(), payload, timeout, trace) {
                Ok(id) => {
                    pending.insert(id, reply);
                }
                Err(SendError::TooManyPendingAsks(n)) => {
                    let _ = reply.send(Err(RemoteError::Rejected(format!("{n} asks already pending to this node"))));
                }
                Err(SendError::Closed) => {
                    let _ = reply.send(Err(RemoteError::NotSent));
                }
                Err(e) => {
                    let _ = reply.send(Err(RemoteError::Rejected(e.to_string())));
                }
            }
        }
        Command::Reply { id, result } => {
            let sent = match result {
                Ok(payload) => session.send_reply(now, id, payload),
                Err((code, message)) => session.send_failure(now, id, code, message),
            };
            if let Err(e) = sent {
                tracing::debug!(id, error = %e, "reply not sent");
            }
        }
        Command::Watch { id } | Command::Unwatch { id } => {
            // Before the handshake there is no peer to watch on: drop it.
            let watch = watch_of(session, id)?;
            let sent = match cmd {
                Command::Watch { .. } => session.send_watch(now, watch),
                _ => session.send_unwatch(now, watch),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "watch or unwatch not sent");
            }
        }
        Command::Terminated { id, reason } => {
            let peer = session.peer().cloned()?;
            let (me, run) = session.local();
            let terminated = Terminated {
                actor: ActorAddr { node: me.to_owned(), run, id },
                // A watch is held by the connection, not by one actor: 0.
                watcher: ActorAddr { node: peer.node, run: peer.run, id: 0 },
                reason,
            };
            if let Err(e) = session.send_terminated(now, terminated) {
                tracing::debug!(error = %e, "terminated not sent");
            }
        }
        Command::Link { target, linker } => {
            if let Err(e) = session.send_link(now, Link { target, linker }) {
                tracing::debug!(error = %e, "link not sent");
            }
        }
        Command::Unlink { target, linker } => {
            if let Err(e) = session.send_unlink(now, Link { target, linker }) {
                tracing::debug!(error = %e, "unlink not sent");
            }
        }
        Command::Exit { target, linker, reason } => {
            if let Err(e) = session.send_exit(now, Exit { target, linker, reason }) {
                tracing::debug!(error = %e, "exit not sent");
            }
        }
        // What follows is failed when the connection ends.
        Command::Close => session.close(now, CloseCode::Normal, "shutting down"),
        Command::Replaced => session.close(now, CloseCode::Duplicate, "replaced by a newer connection"),
    }
    None
}

/// How long the peer may be silent before datagrams to it are dropped:
/// half again its heartbeat interval (a live peer's pings arrive at least
/// that often).
fn datagram_silence(session: &Session) -> std::time::Duration {
    session.heartbeat_interval().mul_f32(1.5)
}

/// The `Watch` (or `Unwatch`) frame for the peer's actor `id`, once the
/// handshake named the peer.
fn watch_of(session: &Session, id: u64) -> Option<Watch> {
    let peer = session.peer().cloned()?;
    let (me, run) = session.local();
    Some(Watch {
        target: ActorAddr { node: peer.node, run: peer.run, id },
        // A watch is held by the connection, not by one actor: 0.
        watcher: ActorAddr { node: me.to_owned(), run, id: 0 },
    })
}

/// What an ask's failure frame means to the asker.
pub(super) fn ask_failure(failure: AskFailure) -> RemoteError {
    match failure {
        AskFailure::Remote { code, message } => match code {
            FailureCode::ActorNotFound => RemoteError::ActorNotFound,
            FailureCode::UnknownMessage => RemoteError::UnknownMessage,
            FailureCode::NoReply => RemoteError::NoReply,
            FailureCode::Timeout => RemoteError::Timeout,
            _ => RemoteError::Rejected(message),
        },
        AskFailure::Timeout => RemoteError::Timeout,
        // The peer closed without reading it: the message comes back.
        AskFailure::NotReceived => RemoteError::NotSent,
        _ => RemoteError::NodeDown,
    }
}
