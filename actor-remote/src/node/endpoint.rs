//! The far end of a remote ref: commands to one peer connection.

use std::time::Duration;

use std::sync::{Arc, RwLock, Weak};

use actor_core::{BoxFuture, RefAddr, RefCodec, RemoteEndpoint, RemoteError};
use tokio::sync::{mpsc, oneshot};

use super::NodeInner;
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
    Close,
}

/// The way to one run (incarnation) of a peer node: the current
/// connection's command queue, re-resolved when that connection was replaced
/// by another to the same run (crossed dials settle, reconnects).
pub(crate) struct Route {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) peer: String,
    pub(crate) incarnation: u64,
    current: RwLock<mpsc::Sender<Command>>,
}

impl Route {
    pub(crate) fn new(node: Weak<NodeInner>, peer: String, incarnation: u64, commands: mpsc::Sender<Command>) -> Self {
        Self { node, peer, incarnation, current: RwLock::new(commands) }
    }

    fn current(&self) -> mpsc::Sender<Command> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live connection to the same run of the peer, if the one used so
    /// far has closed.
    fn reroute(&self) -> Option<mpsc::Sender<Command>> {
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
            Err(mpsc::error::TrySendError::Closed(cmd)) => return self.resend(cmd).await,
            Err(mpsc::error::TrySendError::Full(cmd)) => cmd,
        };
        match self.current().send(cmd).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(cmd)) => self.resend(cmd).await,
        }
    }

    /// The current queue closed: the peer's new connection, if it has one.
    async fn resend(&self, cmd: Command) -> Result<(), RemoteError> {
        if let Some(next) = self.reroute() {
            return next.send(cmd).await.map_err(|_| RemoteError::NodeDown);
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeDown)?;
        // Wait only while a replaced connection's successor is expected.
        if !node.awaiting_successor(&self.peer, self.incarnation) {
            return Err(RemoteError::NodeDown);
        }
        let next = node.await_connection_to(&self.peer, self.incarnation).await.ok_or(RemoteError::NodeDown)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.commands.clone();
        next.commands.send(cmd).await.map_err(|_| RemoteError::NodeDown)
    }

    /// Queues a command if there is room now; gives it back if not.
    #[allow(clippy::result_large_err)] // the command comes back to be sent another way
    fn try_send(&self, cmd: Command) -> Result<(), (RemoteError, Command)> {
        let sent = self.current.read().unwrap_or_else(|p| p.into_inner()).try_send(cmd);
        match sent {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => Err((RemoteError::Full, cmd)),
            Err(mpsc::error::TrySendError::Closed(cmd)) => match self.reroute() {
                Some(next) => next.try_send(cmd).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(cmd) => (RemoteError::Full, cmd),
                    mpsc::error::TrySendError::Closed(cmd) => (RemoteError::NodeDown, cmd),
                }),
                None => Err((RemoteError::NodeDown, cmd)),
            },
        }
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
        Box::pin(
            async move { self.route.send(Command::Tell { target: self.target.clone(), wire_name, payload }).await },
        )
    }

    fn try_tell(&self, wire_name: &'static str, payload: Vec<u8>) -> Result<(), (RemoteError, Vec<u8>)> {
        self.route.try_send(Command::Tell { target: self.target.clone(), wire_name, payload }).map_err(|(e, cmd)| {
            match cmd {
                Command::Tell { payload, .. } => (e, payload),
                _ => (e, Vec::new()),
            }
        })
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
        if let Err((RemoteError::Full, cmd)) = self.route.try_send(cmd) {
            let commands = self.route.current();
            tokio::spawn(async move {
                let _ = commands.send(cmd).await;
            });
        }
    }
}

/// Sends an ask through a connection and waits for its outcome, which the
/// connection resolves exactly once (reply, failure, timeout or node loss).
pub(crate) async fn ask(
    commands: &mpsc::Sender<Command>,
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
