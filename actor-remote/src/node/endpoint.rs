//! The far end of a remote ref: commands to one peer connection.

use std::time::Duration;

use std::sync::Arc;

use actor_core::{BoxFuture, RefAddr, RefCodec, RemoteEndpoint, RemoteError};
use tokio::sync::{mpsc, oneshot};

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
        wire_name: String,
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

/// Sends through one connection to the node hosting the actor.
pub(crate) struct PeerEndpoint {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) target: Target,
    pub(crate) label: String,
    pub(crate) addr: RefAddr,
    pub(crate) codec: Arc<dyn RefCodec>,
}

impl RemoteEndpoint for PeerEndpoint {
    fn tell(&self, wire_name: &'static str, payload: Vec<u8>) -> BoxFuture<'_, Result<(), RemoteError>> {
        Box::pin(async move {
            let cmd = Command::Tell { target: self.target.clone(), wire_name, payload };
            self.commands.send(cmd).await.map_err(|_| RemoteError::NodeDown)
        })
    }

    fn try_tell(&self, wire_name: &'static str, payload: Vec<u8>) -> Result<(), RemoteError> {
        let cmd = Command::Tell { target: self.target.clone(), wire_name, payload };
        self.commands.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RemoteError::Full,
            mpsc::error::TrySendError::Closed(_) => RemoteError::NodeDown,
        })
    }

    fn ask(
        &self,
        wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, RemoteError>> {
        Box::pin(ask(&self.commands, self.target.clone(), wire_name.to_owned(), payload, timeout))
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
}

/// Sends an ask through a connection and waits for its outcome, which the
/// connection resolves exactly once (reply, failure, timeout or node loss).
pub(crate) async fn ask(
    commands: &mpsc::Sender<Command>,
    target: Target,
    wire_name: String,
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
