//! The far end of a remote ref: commands to one peer connection.

use std::time::Duration;

use std::sync::{Arc, RwLock, Weak};

use actor_core::{BoxFuture, RefAddr, RefCodec, RemoteEndpoint, RemoteError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::NodeInner;
use super::outbox::{Commands, TellRefused};
use crate::proto::frame::Target;

/// A request from the node (or a remote ref) to a connection task.
pub(crate) enum Command {
    Tell {
        target: Target,
        wire_name: &'static str,
        payload: Vec<u8>,
    },
    Ask {
        target: Target,
        wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
        reply: oneshot::Sender<Result<Vec<u8>, RemoteError>>,
    },
    Reply {
        id: u64,
        result: Result<Vec<u8>, (crate::proto::FailureCode, String)>,
    },
    /// Ask the peer to report when its actor `id` stops.
    Watch {
        id: u64,
    },
    /// Report that our actor `id`, watched by the peer, stopped.
    Terminated {
        id: u64,
        reason: String,
    },
    /// Our actor `linker` linked itself to the peer's actor `target`.
    Link {
        target: u64,
        linker: u64,
    },
    /// Our actor `linker` removed its link to the peer's actor `target`.
    Unlink {
        target: u64,
        linker: u64,
    },
    /// Our actor `linker`, linked to the peer's actor `target`, exited.
    Exit {
        target: u64,
        linker: u64,
        reason: String,
    },
    Close,
}

/// The way to one run (incarnation) of a peer node: the current
/// connection's outbound queue, re-resolved when that connection was replaced
/// by another to the same run (crossed dials settle, reconnects).
pub(crate) struct Route {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) peer: String,
    pub(crate) incarnation: u64,
    current: RwLock<Commands>,
}

impl Route {
    pub(crate) fn new(node: Weak<NodeInner>, peer: String, incarnation: u64, commands: Commands) -> Self {
        Self { node, peer, incarnation, current: RwLock::new(commands) }
    }

    fn current(&self) -> Commands {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live connection to the same run of the peer, if the one used so
    /// far has closed.
    fn reroute(&self) -> Option<Commands> {
        let node = self.node.upgrade()?;
        let next = node.connection_to(&self.peer, self.incarnation)?.commands;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Some(next)
    }

    /// Queues a command, waiting for room; if the connection used so far
    /// has closed, tries the peer's new one (waiting briefly for it, as the
    /// connection that replaces a duplicate may still be completing).
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), RemoteError> {
        // Fast path: room in the current queue, no clone of the sender.
        let attempt = self.current.read().unwrap_or_else(|p| p.into_inner()).try_send(cmd);
        let cmd = match attempt {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(cmd)) => return self.resend(cmd).await,
            Err(TrySendError::Full(cmd)) => cmd,
        };
        match self.current().send(cmd).await {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::SendError(cmd)) => self.resend(cmd).await,
        }
    }

    /// The current queue closed: the peer's new connection, if it has one.
    async fn resend(&self, cmd: Command) -> Result<(), RemoteError> {
        self.successor().await?.send(cmd).await.map_err(|_| RemoteError::NodeDown)
    }

    /// The queue of the connection that replaced the closed current one: the
    /// live one to the same run, or the one expected after a crossed dial
    /// (waited for briefly); `NodeDown` if none.
    async fn successor(&self) -> Result<Commands, RemoteError> {
        if let Some(next) = self.reroute() {
            return Ok(next);
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeDown)?;
        // Wait only while a replaced connection's successor is expected.
        if !node.awaiting_successor(&self.peer, self.incarnation) {
            return Err(RemoteError::NodeDown);
        }
        let next = node.await_connection_to(&self.peer, self.incarnation).await.ok_or(RemoteError::NodeDown)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.commands.clone();
        Ok(next.commands)
    }

    /// Queues a command if there is room now; gives it back if not.
    #[allow(clippy::result_large_err)] // the command comes back to be sent another way
    fn try_send(&self, cmd: Command) -> Result<(), (RemoteError, Command)> {
        let sent = self.current.read().unwrap_or_else(|p| p.into_inner()).try_send(cmd);
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd)) => Err((RemoteError::Full, cmd)),
            Err(TrySendError::Closed(cmd)) => match self.reroute() {
                Some(next) => next.try_send(cmd).map_err(|e| match e {
                    TrySendError::Full(cmd) => (RemoteError::Full, cmd),
                    TrySendError::Closed(cmd) => (RemoteError::NodeDown, cmd),
                }),
                None => Err((RemoteError::NodeDown, cmd)),
            },
        }
    }

    /// Encodes a tell into the current connection's queue if there is room
    /// now (or into the replacement of a closed one).
    fn try_tell(&self, target: &Target, wire_name: &str, payload: &[u8]) -> Result<(), RemoteError> {
        let sent = self.current.read().unwrap_or_else(|p| p.into_inner()).try_tell(target, wire_name, payload);
        match sent {
            Err(TellRefused::Closed) => match self.reroute() {
                Some(next) => next.try_tell(target, wire_name, payload).map_err(refusal),
                None => Err(RemoteError::NodeDown),
            },
            other => other.map_err(refusal),
        }
    }

    /// Encodes a tell into the queue, waiting for room; if the connection
    /// used so far has closed, into the peer's new one (waiting briefly for
    /// it, as [`send`](Self::send) does).
    async fn tell(&self, target: &Target, wire_name: &str, payload: &[u8]) -> Result<(), RemoteError> {
        match self.current().tell(target, wire_name, payload).await {
            Err(TellRefused::Closed) => {}
            other => return other.map_err(refusal),
        }
        let next = self.successor().await?;
        next.tell(target, wire_name, payload).await.map_err(refusal)
    }
}

fn refusal(refused: TellRefused) -> RemoteError {
    match refused {
        TellRefused::Closed => RemoteError::NodeDown,
        TellRefused::Full => RemoteError::Full,
        TellRefused::Rejected(why) => RemoteError::Rejected(why),
    }
}

/// Sends to one actor of one run of a peer node.
pub(crate) struct PeerEndpoint {
    pub(crate) route: Route,
    pub(crate) target: Target,
    pub(crate) label: String,
    pub(crate) addr: RefAddr,
    pub(crate) codec: Arc<dyn RefCodec>,
}

impl RemoteEndpoint for PeerEndpoint {
    fn tell(&self, wire_name: &'static str, payload: Vec<u8>) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move { self.route.tell(&self.target, wire_name, &payload).await })
    }

    fn try_tell(&self, wire_name: &'static str, payload: Vec<u8>) -> Result<(), (RemoteError, Vec<u8>)> {
        self.route.try_tell(&self.target, wire_name, &payload).map_err(|e| (e, payload))
    }

    fn try_tell_from(&self, wire_name: &'static str, payload: &[u8]) -> Result<(), RemoteError> {
        self.route.try_tell(&self.target, wire_name, payload)
    }

    fn ask(
        &self,
        wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, RemoteError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let target = self.target.clone();
            let cmd = Command::Ask { target, wire_name, payload, timeout, reply };
            // The timeout covers waiting for room in the queue too.
            let asked = async {
                self.route.send(cmd).await?;
                rx.await.unwrap_or(Err(RemoteError::NodeDown))
            };
            tokio::time::timeout(timeout, asked).await.unwrap_or(Err(RemoteError::Timeout))
        })
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn address(&self) -> RefAddr {
        self.addr.clone()
    }

    fn ref_codec(&self) -> Arc<dyn RefCodec> {
        self.codec.clone()
    }

    fn stop(&self) {
        let Some(id) = self.target.id else { return };
        let Ok(payload) = crate::codec::encode(&id) else { return };
        let target = Target::name(super::SYSTEM_TARGET);
        let cmd = Command::Tell { target, wire_name: super::STOP, payload };
        // Behind what this ref already queued; the request is small, so wait
        // for room in a task rather than drop it.
        self.send_soon(cmd);
    }

    fn link(&self, linker: actor_core::ActorId) {
        let (Some(target), Some(linker)) = (self.target.id, self.handle_of(linker)) else { return };
        self.send_soon(Command::Link { target, linker });
    }

    fn unlink(&self, linker: actor_core::ActorId) {
        let (Some(target), Some(linker)) = (self.target.id, self.handle_of(linker)) else { return };
        self.send_soon(Command::Unlink { target, linker });
    }

    fn link_exit(&self, linker: actor_core::ActorId, reason: &actor_core::ExitReason) {
        let (Some(target), Some(linker)) = (self.target.id, self.handle_of(linker)) else { return };
        self.send_soon(Command::Exit { target, linker, reason: reason.to_string() });
    }
}

impl PeerEndpoint {
    /// The id peers know a local actor by.
    fn handle_of(&self, actor: actor_core::ActorId) -> Option<u64> {
        self.route.node.upgrade().map(|node| node.handle_of(actor))
    }

    /// Queues a small command now if there is room; otherwise a task waits
    /// for room, or for the connection that replaces a closed one, rather
    /// than drop it (it may then come after commands queued meanwhile).
    fn send_soon(&self, cmd: Command) {
        if let Err((_, cmd)) = self.route.try_send(cmd) {
            let r = &self.route;
            let route = Route::new(r.node.clone(), r.peer.clone(), r.incarnation, r.current());
            tokio::spawn(async move {
                let _ = route.send(cmd).await;
            });
        }
    }
}

/// Sends an ask through a connection and waits for its outcome, which the
/// connection resolves exactly once (reply, failure, timeout or node loss).
pub(crate) async fn ask(
    commands: &Commands,
    target: Target,
    wire_name: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, RemoteError> {
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Ask { target, wire_name, payload, timeout, reply };
    // The timeout covers waiting for room in the queue too.
    let asked = async {
        commands.send(cmd).await.map_err(|_| RemoteError::NodeDown)?;
        rx.await.unwrap_or(Err(RemoteError::NodeDown))
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(outcome) => outcome,
        Err(_) => Err(RemoteError::Timeout),
    }
}
