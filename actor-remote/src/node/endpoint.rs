//! The far end of a remote ref: [`PeerEndpoint`] sends to one actor of one
//! run of a peer, through a [`Route`] that follows that run's current
//! connection.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use actor_core::RefAddr;
use actor_core::remote::{BoxFuture, RefCodec, RemoteEndpoint, RemoteError, Told};

use super::NodeInner;
use super::outbox::{Closed, Command, Outbox, Refused, TellRefused};
use super::requests::{self, STOP, system_tell};
use super::standins::SUCCESSOR_GRACE;
use crate::proto::frame::Target;

/// The way to one run of a peer node: the current connection's outbound
/// queue, re-resolved when that connection was replaced by another to the
/// same run (crossed dials settle, reconnects).
pub(crate) struct Route {
    node: Weak<NodeInner>,
    peer: String,
    run: u64,
    current: RwLock<Outbox>,
    /// Whether `current` is known settled (no crossed dial can replace it).
    settled: std::sync::atomic::AtomicBool,
}

impl Route {
    pub(crate) fn new(node: Weak<NodeInner>, peer: String, run: u64, outbox: Outbox) -> Self {
        Self { node, peer, run, current: RwLock::new(outbox), settled: std::sync::atomic::AtomicBool::new(false) }
    }

    fn current(&self) -> Outbox {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Routes through `outbox` from now on (`settled`: no crossed dial can
    /// replace its connection any more).
    fn use_outbox(&self, outbox: Outbox, settled: bool) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = outbox;
        self.settled.store(settled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Before a request goes out: if the connection used so far may still be
    /// replaced by a crossed dial or a dial of this node's (see
    /// [`Node::wait_for_peer`](super::Node::wait_for_peer)), waits until it has settled or been replaced,
    /// and uses what stands then. A request on a connection that a crossed
    /// dial then closes would fail with `NodeDown` though the node is up.
    async fn settle(&self) {
        use std::sync::atomic::Ordering;
        if self.settled.load(Ordering::Relaxed) {
            return;
        }
        let Some(node) = self.node.upgrade() else { return };
        if let Some(conn) = node.peers.await_settled(&node.id, &self.peer, self.run, &node.dialing).await {
            self.use_outbox(conn.outbox, true);
        }
    }

    /// The live connection to the same run of the peer, if the one used so
    /// far has closed.
    fn reroute(&self) -> Option<Outbox> {
        let node = self.node.upgrade()?;
        let next = node.peers.current(&self.peer, self.run)?.outbox;
        self.use_outbox(next.clone(), false);
        Some(next)
    }

    /// The queue of the connection that replaced the closed current one: the
    /// live one to the same run, or the one expected after a crossed dial
    /// (waited for briefly); `NodeDown` if none.
    async fn successor(&self) -> Result<Outbox, RemoteError> {
        if let Some(next) = self.reroute() {
            return Ok(next);
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeDown)?;
        // The closed connection's end may not be processed yet: it decides
        // whether a successor is expected (a duplicate's end parks the run).
        if let Some(next) = node.peers.await_end_processed(&self.peer, self.run, SUCCESSOR_GRACE).await {
            self.use_outbox(next.outbox.clone(), false);
            return Ok(next.outbox);
        }
        // Wait only while a replaced connection's successor is expected.
        if !node.stand_ins.is_parked(&self.peer, self.run) {
            return Err(RemoteError::NodeDown);
        }
        let next = node.peers.await_current(&self.peer, self.run, SUCCESSOR_GRACE).await;
        let next = next.ok_or(RemoteError::NodeDown)?.outbox;
        self.use_outbox(next.clone(), false);
        Ok(next)
    }

    /// Queues a command, waiting for room; if the connection used so far
    /// has closed, tries the peer's new one (waiting briefly for it, as the
    /// connection that replaces a duplicate may still be completing).
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), RemoteError> {
        // Fast path: room in the current queue, no clone of the sender.
        let attempt = self.current.read().unwrap_or_else(|p| p.into_inner()).try_send(cmd);
        let cmd = match attempt {
            Ok(()) => return Ok(()),
            Err(Refused::Closed(cmd)) => return self.resend(cmd).await,
            Err(Refused::Full(cmd)) => cmd,
        };
        match self.current().send(cmd).await {
            Ok(()) => Ok(()),
            Err(Closed(cmd)) => self.resend(cmd).await,
        }
    }

    /// The current queue closed: the peer's new connection, if it has one.
    async fn resend(&self, cmd: Command) -> Result<(), RemoteError> {
        self.successor().await?.send(cmd).await.map_err(|_| RemoteError::NodeDown)
    }

    /// Queues a command if there is room now; gives it back if not.
    #[allow(clippy::result_large_err)] // the command comes back to be sent another way
    fn try_send(&self, cmd: Command) -> Result<(), (RemoteError, Command)> {
        let sent = self.current.read().unwrap_or_else(|p| p.into_inner()).try_send(cmd);
        match sent {
            Ok(()) => Ok(()),
            Err(Refused::Full(cmd)) => Err((RemoteError::Full, cmd)),
            Err(Refused::Closed(cmd)) => match self.reroute() {
                Some(next) => next.try_send(cmd).map_err(|e| match e {
                    Refused::Full(cmd) => (RemoteError::Full, cmd),
                    Refused::Closed(cmd) => (RemoteError::NodeDown, cmd),
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

/// Sends to one actor (by handle) of one run of a peer node.
pub(crate) struct PeerEndpoint {
    pub(crate) route: Arc<Route>,
    /// Small commands (stop, link, unlink, exit) waiting for room, in order;
    /// `Some` while a task sends them (later ones queue behind it).
    pub(crate) soon: Arc<std::sync::Mutex<Option<std::collections::VecDeque<Command>>>>,
    /// The remote actor's handle on its node.
    pub(crate) handle: u64,
    pub(crate) label: String,
    pub(crate) addr: RefAddr,
    pub(crate) codec: Arc<dyn RefCodec>,
}

impl RemoteEndpoint for PeerEndpoint {
    fn tell<'a>(&'a self, wire_name: &'static str, payload: &'a [u8], wait: bool) -> Told<'a> {
        let target = Target::Id(self.handle);
        // Try first: without waiting, and without a boxed future, when there
        // is room. Otherwise wait for room, or for the connection that
        // replaces a closed one, if asked to.
        match self.route.try_tell(&target, wire_name, payload) {
            Err(RemoteError::Full | RemoteError::NodeDown) if wait => {
                Told::Waiting(Box::pin(async move { self.route.tell(&target, wire_name, payload).await }))
            }
            told => Told::Done(told),
        }
    }

    fn ask(
        &self,
        wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, RemoteError>> {
        let route = &self.route;
        let queue = move |cmd| async move {
            route.settle().await;
            // Not queued: the request never left this node.
            route.send(cmd).await.map_err(|_| RemoteError::NotSent)
        };
        Box::pin(requests::ask(queue, Target::Id(self.handle), wire_name, payload, timeout))
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
        let Ok(payload) = crate::codec::encode(&self.handle) else { return };
        // Behind what this ref already queued; the request is small, so wait
        // for room in a task rather than drop it.
        self.send_soon(system_tell(STOP, payload));
    }

    fn link(&self, linker: actor_core::ActorId) {
        let Some(linker) = self.handle_of(linker) else { return };
        self.send_soon(Command::Link { target: self.handle, linker });
    }

    fn unlink(&self, linker: actor_core::ActorId) {
        let Some(linker) = self.handle_of(linker) else { return };
        self.send_soon(Command::Unlink { target: self.handle, linker });
    }

    fn link_exit(&self, linker: actor_core::ActorId, reason: &actor_core::ExitReason) {
        let Some(linker) = self.handle_of(linker) else { return };
        self.send_soon(Command::Exit { target: self.handle, linker, reason: reason.to_string() });
    }
}

impl PeerEndpoint {
    /// The handle peers know a local actor by.
    fn handle_of(&self, actor: actor_core::ActorId) -> Option<u64> {
        self.route.node.upgrade().map(|node| node.exports.handle_of(actor))
    }

    /// Queues a small command now if there is room; otherwise a task waits
    /// for room, or for the connection that replaces a closed one, rather
    /// than drop it. Commands of one endpoint keep their order (a `Link`
    /// that waited is never overtaken by the `Exit` that follows it).
    fn send_soon(&self, cmd: Command) {
        let mut soon = self.soon.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waiting) = soon.as_mut() {
            waiting.push_back(cmd);
            return;
        }
        let Err((_, cmd)) = self.route.try_send(cmd) else { return };
        *soon = Some(std::collections::VecDeque::from([cmd]));
        drop(soon);
        let (route, soon) = (self.route.clone(), self.soon.clone());
        tokio::spawn(async move {
            loop {
                let next = {
                    let mut soon = soon.lock().unwrap_or_else(|p| p.into_inner());
                    match soon.as_mut().and_then(std::collections::VecDeque::pop_front) {
                        Some(cmd) => cmd,
                        None => {
                            *soon = None;
                            return;
                        }
                    }
                };
                let _ = route.send(next).await;
            }
        });
    }
}
