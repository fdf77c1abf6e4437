//! One connection's task: drives a [`Session`] over a transport connection.
//!
//! One task does all of a connection's work, as named steps of one loop
//! ([`Driver`]): hand waiting inbound messages to their mailboxes, take the
//! session's events, hand the outbox's batch to the session, then wait for
//! whichever comes first of a mailbox with room, queued work, bytes to
//! read, a write that completed, a timer, or shutdown. Only a message whose
//! mailbox is full (and every ask, whose reply is awaited) waits in a
//! future of its own, in order; meanwhile replies, timers and commands keep
//! going. The inbound side is in [`inbound`], the outbound side in
//! [`outbound`].

mod inbound;
mod outbound;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actor_core::remote::{BoxFuture, RemoteError};
use tokio::sync::{mpsc, oneshot, watch};

#[cfg(test)]
pub(crate) use self::inbound::link;
use self::inbound::{Delivery, Inbound};
use self::outbound::Pending;
use super::NodeInner;
use super::codec::ConnCodec;
use super::outbox::{CloseOnDrop, Command, Outbox, Queued};
use super::peers::Settle;
use super::peers::{ConnStats, PeerConn};
use super::requests::{SETTLE, SYSTEM_TARGET, system_tell};
use crate::proto::session::CloseCause;
use crate::proto::{CloseCode, Event, Session};
use crate::transport::{ByteSink, ByteSource, Connection};

/// Bytes taken from the transport in one read.
const READ_BUF: usize = 16 * 1024;
/// How long a connection whose write failed goes on reading what the peer
/// sent before (see `Driver::write_failed`).
const READ_AFTER_WRITE_FAILED: Duration = Duration::from_secs(1);

/// A write buffer larger than this is given back once it has drained.
const KEEP_WRITE_BUF: usize = 256 * 1024;
/// How often stand-ins nothing uses any more are dropped (and the peer told
/// it need not report their actors' ends: `Unwatch`).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A connection's ordered channel for system messages: sent in order, never
/// dropped for lack of room.
pub(crate) type SystemSender = mpsc::UnboundedSender<(&'static str, Vec<u8>)>;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs a connection until it closes. `dialed_by_me` says which side dialed
/// (for the crossed-dial rule); `connected` learns the peer's node id and
/// run once the handshake is done.
pub(crate) async fn run(
    node: Arc<NodeInner>,
    conn: Connection,
    dialed_by_me: bool,
    connected: Option<oneshot::Sender<(String, u64)>>,
) {
    let mut driver = Driver::new(node, conn, dialed_by_me, connected);
    loop {
        driver.deliver_waiting();
        driver.take_events();
        if driver.session.is_closed() {
            break;
        }
        driver.feed();
        driver.step().await;
    }
    driver.finish().await;
}

/// The state of one connection's task.
struct Driver {
    node: Arc<NodeInner>,
    id: u64,
    session: Session,
    outbox: Outbox,
    _closes: CloseOnDrop,
    /// The system messages' ordered channel and the task forwarding it.
    system: SystemSender,
    forwarder: tokio::task::JoinHandle<()>,
    sink: Box<dyn ByteSink>,
    source: Box<dyn ByteSource>,
    remote_addr: String,
    /// Bytes being written (from `out_at` on); the session's buffer fills
    /// meanwhile and the two swap once this one has drained.
    out: Vec<u8>,
    out_at: usize,
    /// A write failed at this time: the connection is lost, but what the
    /// peer sent before (its `Close`, which names the asks it read) is read
    /// until the transport ends, or for [`READ_AFTER_WRITE_FAILED`] at most.
    write_failed: Option<tokio::time::Instant>,
    read_buf: Vec<u8>,
    inbound: Delivery,
    /// What was taken from the outbox and not yet handed to the session (it
    /// waits while the session's buffer is at its limit).
    batch: Queued,
    pending: Pending,
    /// The peer's id and run once the handshake names them, registered or
    /// not (refs may have been bound to this connection before it lost a
    /// tie-break).
    peer: Option<(String, u64)>,
    /// Closed as a duplicate of another connection between the same nodes.
    duplicate: bool,
    dialed_by_me: bool,
    /// Whether a crossed dial may still replace this connection.
    settle: Settle,
    connected: Option<oneshot::Sender<(String, u64)>>,
    shutdown: watch::Receiver<bool>,
    /// When unused stand-ins are next swept (on the session's timer wake).
    next_sweep: tokio::time::Instant,
    /// Bytes in and out, the heartbeat's round trip.
    stats: Arc<ConnStats>,
}

impl Driver {
    fn new(
        node: Arc<NodeInner>,
        conn: Connection,
        dialed_by_me: bool,
        connected: Option<oneshot::Sender<(String, u64)>>,
    ) -> Self {
        let mut config = node.session.clone();
        config.expected_peer = conn.peer_identity.clone();
        let session = Session::new(config, now());
        let outbox = Outbox::new();
        // System messages keep their order and wait for room instead of
        // being dropped: one task forwards them into the outbound queue.
        let (system, mut system_rx) = mpsc::unbounded_channel::<(&'static str, Vec<u8>)>();
        let forwarder = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                while let Some((wire_name, payload)) = system_rx.recv().await {
                    if outbox.send(system_tell(wire_name, payload)).await.is_err() {
                        break;
                    }
                }
            })
        };
        let Connection { send, recv, remote_addr, .. } = conn;
        Driver {
            id: actor_core::entropy::number(&NEXT_CONN),
            shutdown: node.shutdown.subscribe(),
            inbound: Delivery::new(node.clone(), outbox.clone()),
            node,
            session,
            _closes: CloseOnDrop(outbox.clone()),
            outbox,
            system,
            forwarder,
            sink: send,
            source: recv,
            remote_addr,
            out: Vec::new(),
            out_at: 0,
            write_failed: None,
            read_buf: vec![0u8; READ_BUF],
            batch: Queued::default(),
            pending: Pending::default(),
            peer: None,
            duplicate: false,
            dialed_by_me,
            settle: Settle::default(),
            connected,
            next_sweep: tokio::time::Instant::now() + SWEEP_EVERY,
            stats: Arc::new(ConnStats::new()),
        }
    }

    /// Step: hand waiting inbound messages over while their mailboxes take
    /// them, and resume reading paused input once the backlog has room.
    fn deliver_waiting(&mut self) {
        if self.out.is_empty() {
            self.session.transmit_into(&mut self.out);
        }
        self.inbound.deliver_waiting();
        if self.session.is_input_paused() && !self.inbound.backlog.is_full() {
            let idle = self.inbound.delivering.is_none();
            let inbound = &mut self.inbound;
            self.session.handle_input_with(now(), &[], |tell| inbound.offer(idle, tell));
        }
    }

    /// Step: take the session's events. Once the session has closed, every
    /// event left is taken: replies reach their askers and the close is
    /// seen; messages that must wait are dropped with the connection.
    fn take_events(&mut self) {
        while !self.inbound.backlog.is_full() || self.session.is_closed() {
            let Some(event) = self.session.poll_event() else { break };
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        let peer = self.peer.clone();
        let from = peer.as_ref().map(|(id, run)| (id.as_str(), *run));
        match event {
            Event::Established(hello) => self.on_established(hello),
            Event::Tell(tell) if tell.target.as_name() == Some(SYSTEM_TARGET) && tell.wire_name == SETTLE => {
                self.on_settle(&tell.payload);
            }
            Event::Tell(tell) if tell.target.as_name() == Some(SYSTEM_TARGET) => {
                // Services' traffic (membership, registry): handled at
                // once, never queued behind actor messages.
                if let Some((peer, run)) = from {
                    inbound::system_tell(&self.node, peer, run, &tell.wire_name, tell.payload);
                }
            }
            Event::Tell(tell) => self.inbound.accept(Inbound::Tell(Box::new(tell))),
            Event::Ask(ask) => self.inbound.accept(Inbound::Ask(Box::new(ask))),
            Event::Reply { id, payload } => {
                if let Some(tx) = self.pending.remove(&id) {
                    let _ = tx.send(Ok(payload));
                }
            }
            Event::AskFailed { id, failure } => {
                if let Some(tx) = self.pending.remove(&id) {
                    let _ = tx.send(Err(outbound::ask_failure(failure)));
                }
            }
            Event::Closed(cause) => {
                self.duplicate = matches!(
                    cause,
                    CloseCause::Local { code: CloseCode::Duplicate, .. }
                        | CloseCause::Peer { code: CloseCode::Duplicate, .. }
                );
                log_close(&self.node.id, from.map(|(p, _)| p), &self.remote_addr, &cause);
            }
            Event::Watch(w) => inbound::watch(&self.node, &self.outbox, &self.inbound.watched, w.target.id),
            Event::Unwatch(w) => inbound::unwatch(&self.node, &self.inbound.watched, w.target.id),
            Event::Terminated(t) => inbound::terminated(&self.node, self.id, t.actor.id, &t.reason),
            Event::Link(l) => {
                if let Some((peer, run)) = from {
                    inbound::link(&self.node, peer, run, l.target, l.linker);
                }
            }
            Event::Unlink(l) => {
                if let Some((peer, run)) = from {
                    let _ = self.node.links.remove(peer, run, l.target, l.linker);
                }
            }
            Event::Exit(e) => {
                if let Some((peer, run)) = from {
                    inbound::exit(&self.node, peer, run, self.id, e.target, e.linker, &e.reason);
                }
            }
        }
    }

    /// The handshake is done: the connection becomes the peer's current
    /// one, or closes as a duplicate.
    fn on_established(&mut self, hello: crate::proto::session::Peer) {
        let node = self.node.clone();
        if hello.node == node.id {
            // A seed name that resolves to this node too.
            tracing::debug!(node = %node.id, addr = %self.remote_addr, "dialed itself; closing");
            // The dialer learns it reached itself.
            if let Some(tx) = self.connected.take() {
                let _ = tx.send((hello.node.clone(), hello.run));
            }
            self.session.close(now(), CloseCode::Normal, "connected to itself");
            return;
        }
        self.outbox.set_max_frame(hello.max_frame);
        self.peer = Some((hello.node.clone(), hello.run));
        let codec = ConnCodec::new(&node, self.id, &hello.node, hello.run, self.outbox.clone());
        let _ = self.inbound.codec.set(Arc::new(codec));
        let dialer = if self.dialed_by_me { node.id.clone() } else { hello.node.clone() };
        if dialer == node.id.as_str().min(hello.node.as_str()) {
            // Dialed by the lower id: no crossed dial replaces it.
            self.settle = Settle::settled();
        }
        let conn = PeerConn {
            id: self.id,
            outbox: self.outbox.clone(),
            system: self.system.clone(),
            dialer,
            run: hello.run,
            registered_at: tokio::time::Instant::now(),
            settle: self.settle.clone(),
            stats: self.stats.clone(),
        };
        if node.connection_up(&hello.node, conn) {
            tracing::info!(node = %node.id, peer = %hello.node, addr = %self.remote_addr, "connected");
        } else {
            self.session.close(now(), CloseCode::Duplicate, "a connection between these nodes already exists");
        }
        // Only now: whoever dialed finds the peer in the peer table (this
        // connection, or the one that won the crossed-dial rule).
        if let Some(tx) = self.connected.take() {
            let _ = tx.send((hello.node, hello.run));
        }
    }

    /// The peer says whether this connection stays: heeded only from the
    /// node with the lower id on a connection this node dialed (no other
    /// connection waits to hear it).
    fn on_settle(&mut self, payload: &[u8]) {
        let Some((peer, _)) = &self.peer else { return };
        if !(self.dialed_by_me && peer.as_str() < self.node.id.as_str()) {
            tracing::debug!(node = %self.node.id, %peer, "settle message on a connection it does not concern; ignored");
            return;
        }
        match crate::codec::decode::<bool>(payload) {
            // Waiters wake only on a change: repeats cost nothing.
            Ok(stays) => {
                if self.settle.set(stays) {
                    self.node.peers.touch();
                }
            }
            Err(_) => tracing::warn!(node = %self.node.id, %peer, "malformed settle message; ignored"),
        }
    }

    /// Step: hand the session what it has room for (what it pushed back on
    /// before, now that bytes moved).
    fn feed(&mut self) {
        if self.out.is_empty() {
            self.session.transmit_into(&mut self.out);
        }
        if !self.batch.is_done() {
            outbound::feed(&mut self.session, &mut self.batch, now(), &mut self.pending);
        }
    }

    /// Step: waits for the first of: the waiting message delivered, queued
    /// work, bytes read, bytes written, a timer, shutdown; and acts on it.
    async fn step(&mut self) {
        // Read only while inbound work can be queued and replies are not
        // piling up for a peer that does not read them.
        let backed_up = self.inbound.backlog.is_full();
        let unwritten = self.session.outbound_len() + (self.out.len() - self.out_at);
        let outbound_cap = self.node.session.max_outbound_bytes.saturating_mul(2);
        let reading = !backed_up && !self.session.is_input_paused() && unwritten < outbound_cap;
        let mut deadline = match self.session.poll_timeout() {
            Some(at) => tokio::time::Instant::from_std(at).min(self.next_sweep),
            None => self.next_sweep,
        };
        if let Some(failed) = self.write_failed {
            deadline = deadline.min(failed + READ_AFTER_WRITE_FAILED);
        }
        let writing = !self.out.is_empty() && self.write_failed.is_none();
        let batch_done = self.batch.is_done() && !self.session.is_closing();
        let woke = tokio::select! {
            () = drive(&mut self.inbound.delivering), if self.inbound.delivering.is_some() => Woke::Delivered,
            () = self.outbox.work(), if batch_done => Woke::Work,
            read = self.source.read(&mut self.read_buf), if reading => Woke::Read(read),
            written = self.sink.write(&self.out[self.out_at..]), if writing => Woke::Wrote(written),
            () = tokio::time::sleep_until(deadline) => Woke::Timer,
            _ = self.shutdown.wait_for(|stopping| *stopping), if !self.session.is_closing() => Woke::Shutdown,
        };
        match woke {
            Woke::Delivered => self.inbound.delivering = None,
            Woke::Work => self.take_work(),
            Woke::Read(Ok(Some(n))) => {
                self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                let idle = self.inbound.delivering.is_none();
                let inbound = &mut self.inbound;
                self.session.handle_input_with(now(), &self.read_buf[..n], |tell| inbound.offer(idle, tell));
                // A `Pong` may have come: the round trip, if it changed.
                if let Some(rtt) = self.session.rtt() {
                    let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
                    if self.stats.rtt_micros.load(Ordering::Relaxed) != us {
                        self.stats.rtt_micros.store(us, Ordering::Relaxed);
                    }
                }
            }
            // The transport is gone.
            Woke::Read(Ok(None) | Err(_)) => self.session.handle_lost(),
            // Nothing more goes out; what the peer sent before still comes
            // in (its `Close` says which of our asks it read: the others
            // come back to their askers as not sent).
            // (Not while this node shuts down: its own closing failed the
            // write, and the socket must be freed at once.)
            Woke::Wrote(Err(_)) if reading && !*self.shutdown.borrow() => {
                self.write_failed = Some(tokio::time::Instant::now());
            }
            Woke::Wrote(Err(_)) => self.session.handle_lost(),
            Woke::Wrote(Ok(n)) => self.wrote(n),
            Woke::Timer => {
                if self.write_failed.is_some_and(|at| tokio::time::Instant::now() >= at + READ_AFTER_WRITE_FAILED) {
                    self.session.handle_lost();
                    return;
                }
                if tokio::time::Instant::now() >= self.next_sweep {
                    self.sweep_stand_ins();
                    self.next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
                }
                if backed_up {
                    // Not reading is our own doing: it says nothing about
                    // the peer's health.
                    self.session.defer_idle(now());
                }
                self.session.handle_timeout(now());
            }
            Woke::Shutdown => {
                // What was queued before the node began to stop goes out
                // first, as far as the session has room (a member's leave
                // notice, sent just before, is among it).
                self.feed();
                if self.batch.is_done() {
                    self.take_work();
                }
                // A node shutting down does not wait for the peer's word on
                // its own asks (see below): the connection ends now, what is
                // queued still flushed, so that the socket is freed at once.
                self.session.close(now(), CloseCode::Normal, "node shutting down");
            }
        }
        if self.session.is_closing() && *self.shutdown.borrow() {
            // Closed by this side while the node shuts down (its `Close`
            // command): no wait for the peer's word either.
            self.session.handle_lost();
        }
        let (frames_in, frames_out) = self.session.frames();
        self.stats.frames_in.store(frames_in, Ordering::Relaxed);
        self.stats.frames_out.store(frames_out, Ordering::Relaxed);
        self.stats.heard(self.session.last_heard());
    }

    /// Takes everything queued at once (so frames leave in batches) and
    /// hands the session what it has room for. The batch must be done.
    fn take_work(&mut self) {
        self.outbox.take(&mut self.batch);
        outbound::feed(&mut self.session, &mut self.batch, now(), &mut self.pending);
    }

    /// `n` more bytes were written.
    fn wrote(&mut self, n: usize) {
        self.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.out_at += n;
        if self.out_at == self.out.len() {
            self.out_at = 0;
            self.out.clear();
            if self.out.capacity() > KEEP_WRITE_BUF {
                self.out = Vec::new();
            }
        }
    }

    /// Drops the stand-ins on this connection that nothing uses any more,
    /// and tells the peer it need not report their actors' ends.
    fn sweep_stand_ins(&self) {
        self.node.stand_ins.sweep(self.id, |id| self.outbox.try_send(Command::Unwatch { id }).is_ok());
    }

    /// The connection has closed: everything still waiting on it is
    /// resolved, the node forgets it, and the close frame is flushed.
    async fn finish(mut self) {
        self.forwarder.abort();
        // Messages still waiting for a busy actor end with the connection (at
        // most once): delivering them later could put them behind messages
        // the peer sends meanwhile through its next connection.
        let waiting = self.inbound.backlog.len() + usize::from(self.inbound.delivering.is_some());
        if waiting > 0 {
            let peer = self.peer.as_ref().map(|(id, _)| id.as_str());
            tracing::debug!(node = %self.node.id, ?peer, waiting, "connection ended with messages waiting for room; dropped");
        }
        self.inbound.delivering = None;
        inbound::unwatch_all(&self.node, &self.inbound.watched);
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Err(RemoteError::NodeDown));
        }
        // Asks still queued never left this node: the asker gets its
        // message back (and may send it again elsewhere).
        let left = self.outbox.close();
        for cmd in std::mem::take(&mut self.batch).into_commands().chain(left.into_commands()) {
            if let Command::Ask { reply, .. } = cmd {
                let _ = reply.send(Err(RemoteError::NotSent));
            }
        }
        let (peer, run) = match &self.peer {
            Some((peer, run)) => (peer.as_str(), Some(*run)),
            None => ("", None),
        };
        self.node.connection_ended(peer, self.id, run, self.duplicate);
        // Flush what is left (the Close frame), then close the stream; a peer
        // that stopped reading gets a second, not more.
        self.session.transmit_into(&mut self.out);
        let Driver { mut sink, out, out_at, .. } = self;
        let flush = async {
            if sink.write_all(&out[out_at..]).await.is_ok() {
                sink.close().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }
}

/// What woke a connection's task.
enum Woke {
    /// The message waiting for mailbox room was delivered.
    Delivered,
    /// Work was queued in the outbox.
    Work,
    Read(std::io::Result<Option<usize>>),
    Wrote(std::io::Result<usize>),
    /// A timer is due: the session's (heartbeat, idle, ask deadline), or
    /// the stand-in sweep.
    Timer,
    /// The node is shutting down.
    Shutdown,
}

/// Polls the message being delivered; never ready when there is none.
async fn drive(delivering: &mut Option<BoxFuture<'static, ()>>) {
    match delivering {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn log_close(node: &str, peer: Option<&str>, addr: &str, cause: &CloseCause) {
    match cause {
        CloseCause::Local { code: CloseCode::Normal, .. } | CloseCause::Peer { code: CloseCode::Normal, .. } => {
            tracing::info!(%node, ?peer, %addr, "connection closed");
        }
        CloseCause::Local { code: CloseCode::Duplicate, .. } | CloseCause::Peer { code: CloseCode::Duplicate, .. } => {
            tracing::debug!(%node, ?peer, %addr, "duplicate connection closed");
        }
        // A peer that left mid-handshake, or stopped answering: the cluster
        // reports the member's state; the connection is not news.
        CloseCause::Local { code: CloseCode::HandshakeTimeout, .. }
        | CloseCause::Peer { code: CloseCode::HandshakeTimeout, .. } => {
            tracing::debug!(%node, ?peer, %addr, cause = ?cause, "connection lost during the handshake");
        }
        CloseCause::Local { code: CloseCode::IdleTimeout, .. } | CloseCause::Lost => {
            tracing::info!(%node, ?peer, %addr, cause = ?cause, "connection lost");
        }
        // Misconfiguration or a misbehaving peer: for an operator to see.
        other => tracing::warn!(%node, ?peer, %addr, cause = ?other, "connection closed"),
    }
}
