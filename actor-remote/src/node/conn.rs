//! One connection's task: drives a [`Session`] over a transport connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actor_core::{BoxFuture, RefCodec, RemoteError};
use tokio::sync::{mpsc, oneshot};

use super::NodeInner;
use super::codec::ConnCodec;
use super::endpoint::Command;
use super::expose::{Exposed, TryTell};
use super::outbox::{CloseOnDrop, Commands, Next, Queued};
use crate::proto::frame::{ActorAddr, Ask, Target, Tell, TellRef, Terminated, Watch};
use crate::proto::session::CloseCause;
use crate::proto::{AskFailure, CloseCode, Event, FailureCode, Offer, Session};
use crate::transport::Connection;

/// Inbound messages waiting for mailbox room before reading pauses.
const INBOUND_QUEUE: usize = 1024;
/// Bytes of inbound tells kept waiting before reading pauses (a tell larger
/// than this still waits alone).
const INBOUND_BYTES: usize = 1024 * 1024;
/// Actors one peer may watch through one connection.
const MAX_WATCHES: usize = 10_000;
/// Bytes taken from the transport in one read.
const READ_BUF: usize = 16 * 1024;
/// A write buffer larger than this is given back once it has drained.
const KEEP_WRITE_BUF: usize = 256 * 1024;

/// A connection's ordered channel for system messages: sent in order, never
/// dropped for lack of room.
pub(crate) type SystemSender = mpsc::UnboundedSender<(&'static str, Vec<u8>)>;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A connection as the node sees it.
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    pub(crate) commands: Commands,
    /// System messages of services (say, registry updates), forwarded to
    /// `commands` in order by a task of the connection.
    pub(crate) system: SystemSender,
    /// The node id of whoever dialed (for the crossed-connection rule).
    pub(crate) dialer: String,
    pub(crate) incarnation: u64,
    pub(crate) registered_at: tokio::time::Instant,
}

/// An inbound message waiting for delivery.
enum Inbound {
    Tell(Box<Tell>),
    Ask(Box<Ask>),
    /// A tell kept as its encoded body, the next `len` bytes of the
    /// backlog's buffer.
    Encoded(usize),
}

/// Inbound messages waiting for delivery, in arrival order. Tells read in
/// place are kept as their encoded bodies in one buffer, so a busy actor
/// costs no allocation per message.
#[derive(Default)]
struct Backlog {
    items: VecDeque<Inbound>,
    bytes: Vec<u8>,
    read: usize,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether reading must pause until some of it is delivered.
    fn is_full(&self) -> bool {
        self.items.len() >= INBOUND_QUEUE || self.bytes.len() - self.read >= INBOUND_BYTES
    }

    fn push(&mut self, msg: Inbound) {
        self.items.push_back(msg);
    }

    fn push_encoded(&mut self, tell: TellRef<'_>) {
        let body = tell.body();
        self.bytes.extend_from_slice(body);
        self.items.push_back(Inbound::Encoded(body.len()));
    }

    /// Takes the oldest message (`None` when there is none); `f` gets it,
    /// read in place if it was kept encoded.
    fn pop<R>(&mut self, f: impl FnOnce(Waiting<'_>) -> R) -> Option<Option<R>> {
        let item = self.items.pop_front()?;
        let out = match item {
            Inbound::Encoded(len) => {
                let start = self.read;
                self.read += len;
                let body = &self.bytes[start..self.read];
                // It decoded when it was kept.
                TellRef::decode(body).map(|tell| f(Waiting::InPlace(tell)))
            }
            other => Some(f(Waiting::Owned(other))),
        };
        let out = Some(out);
        if self.items.is_empty() {
            self.bytes.clear();
            self.read = 0;
            if self.bytes.capacity() > 2 * INBOUND_BYTES {
                self.bytes = Vec::new();
            }
        } else if self.read >= INBOUND_BYTES / 4 && self.read >= self.bytes.len() / 2 {
            // A backlog that never quite empties: drop what was delivered,
            // so the buffer stays near the limit.
            self.bytes.drain(..self.read);
            self.read = 0;
        }
        out
    }
}

/// A message taken from the backlog.
enum Waiting<'a> {
    InPlace(TellRef<'a>),
    Owned(Inbound),
}

/// What delivering inbound messages needs, shared with the futures that wait
/// for mailbox room.
#[derive(Clone)]
struct Delivery {
    node: Arc<NodeInner>,
    commands: Commands,
    watched: Watched,
    codec: SharedCodec,
}

impl Delivery {
    /// A future that delivers `msg`, waiting for mailbox room.
    fn later(&self, msg: Inbound) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            if let Some(codec) = this.codec.get() {
                deliver(&this.node, msg, &this.commands, &this.watched, codec).await;
            }
        })
    }
}

/// Runs a connection until it closes. `dialed_by_me` says which side dialed
/// (for the crossed-connection rule); `connected` learns the peer's node id
/// and run once the handshake is done.
///
/// One task does all of a connection's work: it takes commands, feeds the
/// session, writes its bytes, reads the peer's and delivers inbound messages
/// straight into mailboxes. Only a message whose mailbox is full (and every
/// ask, whose reply is awaited) waits in a future of its own, in order;
/// meanwhile replies, timers and commands keep going.
pub(crate) async fn run(
    node: Arc<NodeInner>,
    conn: Connection,
    dialed_by_me: bool,
    connected: Option<oneshot::Sender<(String, u64)>>,
) {
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let mut config = node.session.clone();
    config.expected_peer = conn.peer_identity.clone();
    let mut session = Session::new(config, now());
    let commands = Commands::new();
    let _closes = CloseOnDrop(commands.clone());
    // Node messages keep their order and wait for room instead of being
    // dropped: one task forwards them into the outbound queue.
    let (system, mut system_rx) = mpsc::unbounded_channel::<(&'static str, Vec<u8>)>();
    let forwarder = {
        let commands = commands.clone();
        tokio::spawn(async move {
            while let Some((wire_name, payload)) = system_rx.recv().await {
                let target = crate::proto::frame::Target::name(super::SYSTEM_TARGET);
                if commands.send(Command::Tell { target, wire_name, payload }).await.is_err() {
                    break;
                }
            }
        })
    };
    let Connection { send: mut sink, recv: mut source, remote_addr, .. } = conn;

    // Bytes being written (from `out_at` on); the session's buffer fills
    // meanwhile and the two swap once this one has drained.
    let mut out: Vec<u8> = Vec::new();
    let mut out_at = 0usize;
    let mut read_buf = vec![0u8; READ_BUF];
    let watched: Watched = Arc::new(std::sync::Mutex::new(HashSet::new()));
    // How refs inside messages on this connection are decoded: set once the
    // handshake names the peer (no message arrives before that).
    let codec: SharedCodec = Arc::new(std::sync::OnceLock::new());
    let delivery =
        Delivery { node: node.clone(), commands: commands.clone(), watched: watched.clone(), codec: codec.clone() };
    // Inbound messages waiting, in arrival order, behind `delivering` (the
    // one whose mailbox is full, or an ask being handed over).
    let mut inbound = Backlog::default();
    let mut targets = Targets { node: node.clone(), codec: codec.clone(), last: None };
    let mut delivering: Option<BoxFuture<'static, ()>> = None;

    // What was taken from the outbound queue and not yet handed to the
    // session (it waits while the session's buffer is at its limit).
    let mut batch = Queued::default();
    let mut pending: HashMap<u64, oneshot::Sender<Result<Vec<u8>, RemoteError>>> = HashMap::new();
    let mut peer_incarnation: Option<u64> = None;
    let mut duplicate = false;
    // The peer's id once the handshake names it, registered or not (refs may
    // have been bound to this connection before it lost a tie-break).
    let mut peer_id: Option<String> = None;
    let mut connected = connected;
    let mut shutdown = node.shutdown.subscribe();
    let outbound_cap = node.session.max_outbound_bytes.saturating_mul(2);

    loop {
        if out.is_empty() {
            session.transmit_into(&mut out);
        }
        // Hand waiting messages over while their mailboxes take them.
        while delivering.is_none() {
            let next = inbound.pop(|msg| match msg {
                Waiting::InPlace(tell) if targets.deliver_in_place(tell) => None,
                Waiting::InPlace(tell) => Some(Inbound::Tell(Box::new(tell.into()))),
                Waiting::Owned(msg) => targets.deliver_now(msg),
            });
            match next {
                Some(waits) => delivering = waits.flatten().map(|msg| delivery.later(msg)),
                None => break,
            }
        }
        if session.is_input_paused() && !inbound.is_full() {
            let idle = delivering.is_none();
            session.handle_input_with(now(), &[], |tell| offer(&mut targets, idle, &mut inbound, tell));
        }
        // Once the session has closed, every event left is taken: replies
        // reach their askers and the close is seen; messages that must wait
        // are dropped with the connection below.
        while !inbound.is_full() || session.is_closed() {
            let Some(event) = session.poll_event() else { break };
            let queued = match event {
                Event::Established(peer) if peer.node == node.id => {
                    // A seed name that resolves to this node too.
                    tracing::debug!(node = %node.id, addr = %remote_addr, "dialed itself; closing");
                    session.close(now(), CloseCode::Normal, "connected to itself");
                    None
                }
                Event::Established(peer) => {
                    commands.set_max_frame(peer.max_frame);
                    let dialer = if dialed_by_me { node.id.clone() } else { peer.node.clone() };
                    let handle = ConnHandle {
                        id: conn_id,
                        commands: commands.clone(),
                        system: system.clone(),
                        dialer,
                        incarnation: peer.incarnation,
                        registered_at: tokio::time::Instant::now(),
                    };
                    if let Some(tx) = connected.take() {
                        let _ = tx.send((peer.node.clone(), peer.incarnation));
                    }
                    peer_incarnation = Some(peer.incarnation);
                    peer_id = Some(peer.node.clone());
                    let _ = codec.set(Arc::new(ConnCodec {
                        node: Arc::downgrade(&node),
                        conn_id,
                        peer: peer.node.clone(),
                        peer_incarnation: peer.incarnation,
                        commands: commands.clone(),
                    }));
                    if node.register_peer(&peer.node, handle) {
                        tracing::info!(node = %node.id, peer = %peer.node, addr = %remote_addr, "connected");
                    } else {
                        session.close(now(), CloseCode::Duplicate, "a connection between these nodes already exists");
                    }
                    None
                }
                Event::Tell(tell) if tell.target.name.as_deref() == Some(super::SYSTEM_TARGET) => {
                    // Services' traffic (membership, registry): handled at once, never
                    // queued behind actor messages.
                    if let (Some(peer), Some(run)) = (peer_id.as_deref(), peer_incarnation) {
                        node.system_tell(peer, run, &tell.wire_name, tell.payload);
                    }
                    None
                }
                // Straight into the mailbox when nothing waits ahead of it
                // and there is room; otherwise behind what waits, in order.
                Event::Tell(tell) if delivering.is_none() && inbound.is_empty() => {
                    let msg = Inbound::Tell(Box::new(tell));
                    delivering = targets.deliver_now(msg).map(|msg| delivery.later(msg));
                    None
                }
                Event::Tell(tell) => Some(Inbound::Tell(Box::new(tell))),
                Event::Ask(ask) if delivering.is_none() && inbound.is_empty() => {
                    delivering = Some(delivery.later(Inbound::Ask(Box::new(ask))));
                    None
                }
                Event::Ask(ask) => Some(Inbound::Ask(Box::new(ask))),
                Event::Reply { id, payload } => {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Ok(payload));
                    }
                    None
                }
                Event::AskFailed { id, failure } => {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Err(ask_failure(failure)));
                    }
                    None
                }
                Event::Closed(cause) => {
                    duplicate = matches!(
                        cause,
                        CloseCause::Local { code: CloseCode::Duplicate, .. }
                            | CloseCause::Peer { code: CloseCode::Duplicate, .. }
                    );
                    log_close(&node.id, peer_id.as_deref(), &remote_addr, &cause);
                    None
                }
                Event::Watch(watch) => {
                    watch_once(&node, &commands, &watched, watch.target.id);
                    None
                }
                Event::Unwatch(_) => None,
                Event::Terminated(t) => {
                    node.remote_terminated(conn_id, t.actor.id, &t.reason);
                    None
                }
                Event::Link(link) => {
                    if let (Some(peer), Some(run)) = (peer_id.as_deref(), peer_incarnation) {
                        node.remote_link(peer, run, link.target, link.linker);
                    }
                    None
                }
                Event::Unlink(link) => {
                    if let (Some(peer), Some(run)) = (peer_id.as_deref(), peer_incarnation) {
                        node.remote_unlink(peer, run, link.target, link.linker);
                    }
                    None
                }
                Event::Exit(exit) => {
                    if let (Some(peer), Some(run)) = (peer_id.as_deref(), peer_incarnation) {
                        node.remote_exit(peer, run, conn_id, exit.target, exit.linker, &exit.reason);
                    }
                    None
                }
            };
            if let Some(msg) = queued {
                inbound.push(msg);
            }
        }
        if session.is_closed() {
            break;
        }
        if out.is_empty() {
            session.transmit_into(&mut out);
        }
        // Go on with what the session pushed back on, now that bytes moved.
        if !batch.is_done() {
            feed(&mut session, &mut batch, now(), &mut pending);
        }
        // Read only while inbound work can be queued and replies are not
        // piling up for a peer that does not read them.
        let backed_up = inbound.is_full();
        let unwritten = session.outbound_len() + (out.len() - out_at);
        let reading = !backed_up && !session.is_input_paused() && unwritten < outbound_cap;
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = drive(&mut delivering), if delivering.is_some() => delivering = None,
            () = commands.work(), if batch.is_done() && !session.is_closed() => {
                // Everything queued at once, so frames leave in batches.
                commands.take(&mut batch);
                feed(&mut session, &mut batch, now(), &mut pending);
            },
            read = source.read(&mut read_buf), if reading => match read {
                Ok(Some(n)) => {
                    let idle = delivering.is_none();
                    session.handle_input_with(now(), &read_buf[..n], |tell| offer(&mut targets, idle, &mut inbound, tell));
                }
                Ok(None) | Err(_) => session.handle_lost(),
            },
            written = sink.write(&out[out_at..]), if !out.is_empty() => match written {
                Ok(n) => {
                    out_at += n;
                    if out_at == out.len() {
                        out_at = 0;
                        out.clear();
                        if out.capacity() > KEEP_WRITE_BUF {
                            out = Vec::new();
                        }
                    }
                }
                // The transport is gone.
                Err(_) => session.handle_lost(),
            },
            () = sleep_until(deadline) => {
                if backed_up {
                    // Not reading is our own doing: it says nothing about
                    // the peer's health.
                    session.defer_idle(now());
                }
                session.handle_timeout(now());
            }
            _ = shutdown.wait_for(|stopping| *stopping) => session.close(now(), CloseCode::Normal, "node shutting down"),
        }
    }
    forwarder.abort();
    // Messages still waiting for a busy actor end with the connection (at
    // most once): delivering them later could put them behind messages
    // the peer sends meanwhile through its next connection.
    let waiting = inbound.len() + usize::from(delivering.is_some());
    if waiting > 0 {
        tracing::debug!(node = %node.id, peer = ?peer_id, waiting, "connection ended with messages waiting for room; dropped");
    }
    drop(delivering);
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(RemoteError::NodeDown));
    }
    let left = commands.close();
    for cmd in std::mem::take(&mut batch).into_commands().chain(left.into_commands()) {
        if let Command::Ask { reply, .. } = cmd {
            let _ = reply.send(Err(RemoteError::NodeDown));
        }
    }
    node.peer_lost(peer_id.as_deref().unwrap_or_default(), conn_id, peer_incarnation, duplicate);
    // Flush what is left (the Close frame), then close the stream; a peer
    // that stopped reading gets a second, not more.
    session.transmit_into(&mut out);
    let flush = async {
        if sink.write_all(&out[out_at..]).await.is_ok() {
            sink.close().await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
}

/// Polls the message being delivered; never ready when there is none.
async fn drive(delivering: &mut Option<BoxFuture<'static, ()>>) {
    match delivering {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// What becomes of a tell read in place: delivered at once if nothing waits
/// ahead of it and its mailbox has room, else kept in the backlog as it is;
/// with the backlog full, reading pauses at it. Tells by name (node messages
/// among them) become events.
fn offer(targets: &mut Targets, idle: bool, inbound: &mut Backlog, tell: TellRef<'_>) -> Offer {
    if tell.target_name.is_some() {
        Offer::Event
    } else if idle && inbound.is_empty() && targets.deliver_in_place(tell) {
        Offer::Taken
    } else if inbound.is_full() {
        Offer::Pause
    } else {
        inbound.push_encoded(tell);
        Offer::Taken
    }
}

/// Where inbound tells go: the node's exposed actors, the last one found by
/// id kept at hand (a burst usually goes to one actor). An exposed actor
/// keeps its id for life and leaves the node's table only when it ends, so
/// the kept one is right for its id until a delivery finds it gone.
struct Targets {
    node: Arc<NodeInner>,
    codec: SharedCodec,
    last: Option<(u64, Arc<dyn Exposed>)>,
}

impl Targets {
    /// Delivers a tell if its mailbox has room now, or drops it (logged) if
    /// it can never be delivered: `true`. `false`: it must wait for room.
    fn try_tell(&mut self, id: Option<u64>, name: Option<&str>, wire_name: &str, payload: &[u8]) -> bool {
        let Some(codec) = self.codec.get() else { return false };
        let by_name;
        let target = match (id, name) {
            (Some(id), _) => match &self.last {
                Some((last, target)) if *last == id => Some(target),
                _ => self.node.resolve(&Target::id(id)).map(|target| &self.last.insert((id, target)).1),
            },
            (None, Some(name)) => {
                by_name = self.node.resolve(&Target::name(name));
                by_name.as_ref()
            }
            (None, None) => None,
        };
        let Some(target) = target else {
            tracing::debug!(?id, ?name, "tell for an unknown actor dropped");
            return true;
        };
        match target.try_tell(wire_name, payload, codec) {
            Ok(()) => true,
            Err(TryTell::Full) => false,
            Err(TryTell::Refused(FailureCode::ActorNotFound)) => {
                tracing::debug!(?id, ?name, "tell for an actor that ended dropped");
                self.last = None;
                true
            }
            Err(TryTell::Refused(code)) => {
                tracing::warn!(?id, ?name, %wire_name, ?code, "inbound tell refused");
                true
            }
        }
    }

    /// [`try_tell`](Self::try_tell) for a tell read in place.
    fn deliver_in_place(&mut self, tell: TellRef<'_>) -> bool {
        self.try_tell(tell.target_id, tell.target_name, tell.wire_name, tell.payload)
    }

    /// Delivers an inbound message if that can be done without waiting (see
    /// [`try_tell`](Self::try_tell)); gives it back when it must wait (a
    /// full mailbox, or an ask).
    fn deliver_now(&mut self, msg: Inbound) -> Option<Inbound> {
        match msg {
            Inbound::Tell(t) if self.try_tell(t.target.id, t.target.name.as_deref(), &t.wire_name, &t.payload) => None,
            other => Some(other),
        }
    }
}

/// A connection's ref codec, once the peer is known.
type SharedCodec = Arc<std::sync::OnceLock<Arc<dyn RefCodec>>>;

/// The actor ids a peer watches through one connection.
type Watched = Arc<std::sync::Mutex<HashSet<u64>>>;

/// Starts reporting, once, when the peer's watched actor `id` stops (at once
/// if it is gone), unless this connection ends first. A second watch of the
/// same actor is a no-op; past [`MAX_WATCHES`] a watch is answered at once.
fn watch_once(node: &Arc<NodeInner>, commands: &Commands, watched: &Watched, id: u64) {
    {
        let mut set = watched.lock().unwrap_or_else(|p| p.into_inner());
        if set.contains(&id) {
            return;
        }
        if set.len() >= MAX_WATCHES {
            tracing::warn!(node = %node.id, "too many watches on one connection; watch refused");
            let _ = commands.try_send(Command::Terminated { id, reason: "watch refused".into() });
            return;
        }
        set.insert(id);
    }
    let (node, commands, watched) = (node.clone(), commands.clone(), watched.clone());
    tokio::spawn(async move {
        let reason = match node.resolve(&crate::proto::frame::Target::id(id)) {
            Some(actor) => tokio::select! {
                reason = actor.wait_for_stop() => reason.to_string(),
                () = commands.closed() => return,
            },
            None => "not found".to_owned(),
        };
        let _ = commands.send(Command::Terminated { id, reason }).await;
        // Reported: the slot is free for another watch.
        watched.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Hands the batch taken from the outbound queue to the session, in queue
/// order, while it has room: frames as they are, commands one by one. What
/// the session pushes back on stays in the batch.
fn feed(
    session: &mut Session,
    batch: &mut Queued,
    now: Instant,
    pending: &mut HashMap<u64, oneshot::Sender<Result<Vec<u8>, RemoteError>>>,
) {
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
            Some(Next::Command(Command::Close)) => {
                // What follows is failed when the connection ends.
                session.close(now, CloseCode::Normal, "shutting down");
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
fn submit(
    session: &mut Session,
    now: Instant,
    cmd: Command,
    pending: &mut HashMap<u64, oneshot::Sender<Result<Vec<u8>, RemoteError>>>,
) -> Option<Command> {
    use crate::proto::SendError;
    match cmd {
        Command::Tell { target, wire_name, payload } => {
            if !session.has_room() {
                return Some(Command::Tell { target, wire_name, payload });
            }
            let tell = Tell { target, sender: None, wire_name: wire_name.into(), payload };
            // `has_room` said yes, so only a closed session or a frame over the
            // peer's limit can refuse it; neither can be retried.
            if let Err(e) = session.send_tell(now, tell) {
                tracing::warn!(error = %e, "tell not sent");
            }
            None
        }
        Command::Ask { target, wire_name, payload, timeout, reply } => {
            if !session.has_room() {
                return Some(Command::Ask { target, wire_name, payload, timeout, reply });
            }
            match session.send_ask(now, target, None, wire_name.into(), payload, timeout) {
                Ok(id) => {
                    pending.insert(id, reply);
                    None
                }
                Err(SendError::TooManyPendingAsks(n)) => {
                    let _ = reply.send(Err(RemoteError::Rejected(format!("{n} asks already pending to this node"))));
                    None
                }
                Err(SendError::Closed) => {
                    let _ = reply.send(Err(RemoteError::NodeDown));
                    None
                }
                Err(e) => {
                    let _ = reply.send(Err(RemoteError::Rejected(e.to_string())));
                    None
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
            None
        }
        Command::Watch { id } => {
            // Before the handshake there is no peer to watch on: drop it.
            let peer = session.peer().cloned()?;
            let (me, incarnation) = session.local();
            let watch = Watch {
                target: ActorAddr { node: peer.node, incarnation: peer.incarnation, id },
                watcher: ActorAddr { node: me.to_owned(), incarnation, id: 0 },
            };
            if let Err(e) = session.send_watch(now, watch) {
                tracing::debug!(error = %e, "watch not sent");
            }
            None
        }
        Command::Terminated { id, reason } => {
            let peer = session.peer().cloned()?;
            let (me, incarnation) = session.local();
            let terminated = Terminated {
                actor: ActorAddr { node: me.to_owned(), incarnation, id },
                watcher: ActorAddr { node: peer.node, incarnation: peer.incarnation, id: 0 },
                reason,
            };
            if let Err(e) = session.send_terminated(now, terminated) {
                tracing::debug!(error = %e, "terminated not sent");
            }
            None
        }
        Command::Link { target, linker } => {
            if let Err(e) = session.send_link(now, crate::proto::frame::Link { target, linker }) {
                tracing::debug!(error = %e, "link not sent");
            }
            None
        }
        Command::Unlink { target, linker } => {
            if let Err(e) = session.send_unlink(now, crate::proto::frame::Link { target, linker }) {
                tracing::debug!(error = %e, "unlink not sent");
            }
            None
        }
        Command::Exit { target, linker, reason } => {
            if let Err(e) = session.send_exit(now, crate::proto::frame::Exit { target, linker, reason }) {
                tracing::debug!(error = %e, "exit not sent");
            }
            None
        }
        Command::Close => {
            session.close(now, CloseCode::Normal, "shutting down");
            None
        }
    }
}

fn ask_failure(failure: AskFailure) -> RemoteError {
    match failure {
        AskFailure::Remote { code, message } => match code {
            FailureCode::ActorNotFound => RemoteError::ActorNotFound,
            FailureCode::UnknownMessage => RemoteError::UnknownMessage,
            FailureCode::NoReply => RemoteError::NoReply,
            FailureCode::Timeout => RemoteError::Timeout,
            _ => RemoteError::Rejected(message),
        },
        AskFailure::Timeout => RemoteError::Timeout,
        _ => RemoteError::NodeDown,
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
        other => tracing::warn!(%node, ?peer, %addr, cause = ?other, "connection lost"),
    }
}

async fn deliver(
    node: &Arc<NodeInner>,
    msg: Inbound,
    commands: &Commands,
    watched: &Watched,
    codec: &Arc<dyn RefCodec>,
) {
    match msg {
        // The backlog reads these in place; it hands over owned tells only.
        Inbound::Encoded(_) => {}
        Inbound::Tell(tell) => {
            let Some(actor) = node.resolve(&tell.target) else {
                tracing::debug!(target = ?tell.target, "tell for an unknown actor dropped");
                return;
            };
            if let Err(code) = actor.tell(&tell.wire_name, &tell.payload, codec).await {
                tracing::warn!(target = ?tell.target, wire_name = %tell.wire_name, ?code, "inbound tell refused");
            }
        }
        Inbound::Ask(ask) => {
            let timeout = std::time::Duration::from_millis(u64::from(ask.timeout_ms));
            let started = if ask.target.name.as_deref() == Some(super::SYSTEM_TARGET) {
                // A lookup also watches what it found, before the asker gets
                // a ref: its end is reported even if it comes right away.
                node.system_request(&ask.wire_name, &ask.payload, |id| watch_once(node, commands, watched, id))
            } else {
                match node.resolve(&ask.target) {
                    Some(actor) => actor.ask(&ask.wire_name, &ask.payload, timeout, codec).await,
                    None => Err(FailureCode::ActorNotFound),
                }
            };
            match started {
                Ok(reply) => {
                    let commands = commands.clone();
                    tokio::spawn(async move {
                        let result = reply.await;
                        let _ = commands.send(Command::Reply { id: ask.id, result }).await;
                    });
                }
                Err(code) => {
                    let result = Err((code, format!("{code:?}")));
                    let _ = commands.send(Command::Reply { id: ask.id, result }).await;
                }
            }
        }
    }
}
