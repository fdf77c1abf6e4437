//! One connection's task: drives a [`Session`] over a transport connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actor_core::{RefCodec, RemoteError};
use tokio::sync::{mpsc, oneshot};

use super::NodeInner;
use super::codec::ConnCodec;
use super::endpoint::Command;
use super::expose::TryTell;
use crate::proto::frame::{ActorAddr, Ask, Tell, Terminated, Watch};
use crate::proto::session::CloseCause;
use crate::proto::{AskFailure, CloseCode, Event, FailureCode, Session};
use crate::transport::Connection;

/// Commands queued per connection before senders wait (backpressure).
pub(crate) const COMMAND_QUEUE: usize = 1024;
/// Inbound messages queued for delivery to local actors before reading pauses.
const INBOUND_QUEUE: usize = 1024;
/// Actors one peer may watch through one connection.
const MAX_WATCHES: usize = 10_000;
/// Commands taken from the queue in one go before bytes are flushed.
const COMMAND_BATCH: usize = 512;
/// The writer joins queued chunks up to this size into one write.
const WRITE_COALESCE: usize = 64 * 1024;
/// Bytes handed to the writer and not yet written before the session's own
/// outbound limit takes over.
const WRITE_WINDOW: usize = 256 * 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A connection as the node sees it.
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Node messages (registry, held gossip), forwarded to `commands` in
    /// order by a task of the connection.
    pub(crate) system: super::registry::SystemSender,
    /// The node id of whoever dialed (for the crossed-connection rule).
    pub(crate) dialer: String,
    pub(crate) incarnation: u64,
    pub(crate) registered_at: tokio::time::Instant,
}

enum Inbound {
    Tell(Tell),
    Ask(Ask),
}

/// Runs a connection until it closes. `dialed_by_me` says which side dialed
/// (for the crossed-connection rule); `connected` learns the peer's node id
/// and run once the handshake is done.
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
    let (commands, mut command_rx) = mpsc::channel::<Command>(COMMAND_QUEUE);
    // Node messages keep their order and wait for room instead of being
    // dropped: one task forwards them into the command queue.
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
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let Connection { send: mut sink, recv: mut source, remote_addr, .. } = conn;

    // The writer runs apart so a slow peer never stalls reading or timers.
    let (write_tx, mut write_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (written_tx, mut written_rx) = mpsc::unbounded_channel::<usize>();
    let writer = tokio::spawn(async move {
        while let Some(mut bytes) = write_rx.recv().await {
            if bytes.len() < WRITE_COALESCE {
                // Let the tasks producing frames run once before writing: a
                // burst then leaves in one write (and fewer packets) rather
                // than one per frame. Costs no time when nothing else runs.
                tokio::task::yield_now().await;
            }
            // Coalesce what queued up meanwhile into one write.
            while bytes.len() < WRITE_COALESCE {
                match write_rx.try_recv() {
                    Ok(more) => bytes.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            let len = bytes.len();
            if sink.write(bytes).await.is_err() {
                break;
            }
            let _ = written_tx.send(len);
        }
        sink.close().await;
    });
    // Inbound messages handed to the dispatcher and not yet delivered.
    let backlog = Arc::new(AtomicUsize::new(0));
    let watched: Watched = Arc::new(std::sync::Mutex::new(HashSet::new()));
    // How refs inside messages on this connection are decoded: set once the
    // handshake names the peer (no message arrives before that).
    let codec: SharedCodec = Arc::new(std::sync::OnceLock::new());
    let dispatcher = tokio::spawn(dispatch_inbound(
        node.clone(),
        inbound_rx,
        commands.clone(),
        backlog.clone(),
        watched.clone(),
        codec.clone(),
    ));

    let mut in_flight = 0usize;
    let mut batch: Vec<Command> = Vec::with_capacity(COMMAND_BATCH);
    let mut pending: HashMap<u64, oneshot::Sender<Result<Vec<u8>, RemoteError>>> = HashMap::new();
    let mut stalled: VecDeque<Command> = VecDeque::new();
    // An inbound message waiting for room in the dispatcher's queue. While
    // one waits, events stay in the session and the transport is not read
    // (backpressure towards the peer); timers and commands keep running.
    let mut held: Option<Inbound> = None;
    let mut peer_incarnation: Option<u64> = None;
    let mut duplicate = false;
    // The peer's id once the handshake names it, registered or not (refs may
    // have been bound to this connection before it lost a tie-break).
    let mut peer_id: Option<String> = None;
    let mut connected = connected;
    let mut shutdown = node.shutdown.subscribe();
    let outbound_cap = node.session.max_outbound_bytes.saturating_mul(2);

    loop {
        // Hand encoded bytes to the writer, within the window.
        while in_flight < WRITE_WINDOW {
            match session.poll_transmit() {
                Some(bytes) => {
                    in_flight += bytes.len();
                    let _ = write_tx.send(bytes);
                }
                None => break,
            }
        }
        while held.is_none() {
            let Some(event) = session.poll_event() else { break };
            let inbound = match event {
                Event::Established(peer) if peer.node == node.id => {
                    // A seed name that resolves to this node too.
                    tracing::debug!(node = %node.id, addr = %remote_addr, "dialed itself; closing");
                    session.close(now(), CloseCode::Normal, "connected to itself");
                    None
                }
                Event::Established(peer) => {
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
                    // Membership and registry traffic: handled at once, never
                    // queued behind actor messages.
                    if let (Some(peer), Some(run)) = (peer_id.as_deref(), peer_incarnation) {
                        node.system_tell(peer, run, &tell.wire_name, tell.payload);
                    }
                    None
                }
                Event::Tell(tell) => {
                    // Straight into the mailbox when nothing is queued ahead of
                    // it and there is room; otherwise through the dispatcher,
                    // which waits for room, in order.
                    if let (0, Some(codec)) = (backlog.load(Ordering::SeqCst), codec.get()) {
                        let target = node.resolve(&tell.target);
                        match target.map(|a| a.try_tell(&tell.wire_name, &tell.payload, codec)) {
                            Some(Ok(())) => None,
                            Some(Err(TryTell::Full)) => Some(Inbound::Tell(tell)),
                            Some(Err(TryTell::Refused(code))) => {
                                tracing::warn!(target = ?tell.target, wire_name = %tell.wire_name, ?code, "inbound tell refused");
                                None
                            }
                            None => {
                                tracing::debug!(target = ?tell.target, "tell for an unknown actor dropped");
                                None
                            }
                        }
                    } else {
                        Some(Inbound::Tell(tell))
                    }
                }
                Event::Ask(ask) => Some(Inbound::Ask(ask)),
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
            };
            if let Some(item) = inbound {
                backlog.fetch_add(1, Ordering::SeqCst);
                match inbound_tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => held = Some(item),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        session.close(now(), CloseCode::Normal, "node stopping");
                    }
                }
            }
        }
        if session.is_closed() && held.is_none() {
            break;
        }
        // Retry commands the session pushed back on, now that bytes moved.
        while let Some(cmd) = stalled.pop_front() {
            if let Some(cmd) = submit(&mut session, cmd, &mut pending) {
                stalled.push_front(cmd);
                break;
            }
        }
        // Read only while inbound work can be queued and replies are not
        // piling up for a peer that does not read them.
        let reading = held.is_none() && session.outbound_len() < outbound_cap && !session.is_closed();
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            permit = inbound_tx.reserve(), if held.is_some() => match (permit, held.take()) {
                (Ok(permit), Some(item)) => permit.send(item),
                _ => session.close(now(), CloseCode::Normal, "node stopping"),
            },
            taken = command_rx.recv_many(&mut batch, COMMAND_BATCH), if stalled.is_empty() && !session.is_closed() => {
                if taken == 0 {
                    // Every sender is gone.
                    session.close(now(), CloseCode::Normal, "shutting down");
                }
                // Everything queued at once (one release of queue room for
                // the lot), so frames leave in batches.
                let mut cmds = batch.drain(..);
                while let Some(cmd) = cmds.next() {
                    if matches!(cmd, Command::Close) {
                        session.close(now(), CloseCode::Normal, "shutting down");
                        // What follows is failed below, as the session is closed.
                        stalled.extend(cmds);
                        break;
                    }
                    if let Some(cmd) = submit(&mut session, cmd, &mut pending) {
                        stalled.push_back(cmd);
                        stalled.extend(cmds);
                        break;
                    }
                }
            },
            read = source.read(), if reading => match read {
                Ok(Some(bytes)) => session.handle_input(now(), &bytes),
                Ok(None) | Err(_) => session.handle_lost(),
            },
            written = written_rx.recv() => match written {
                Some(n) => in_flight = in_flight.saturating_sub(n),
                // The writer failed: the transport is gone.
                None => session.handle_lost(),
            },
            () = sleep_until(deadline) => {
                if held.is_some() {
                    // Not reading is our own doing: it says nothing about
                    // the peer's health.
                    session.defer_idle(now());
                }
                session.handle_timeout(now());
            }
            _ = shutdown.wait_for(|stopping| *stopping) => session.close(now(), CloseCode::Normal, "node shutting down"),
        }
        if session.is_closed() {
            held = None;
        }
    }
    // Flush the Close frame, then stop the helpers.
    while let Some(bytes) = session.poll_transmit() {
        let _ = write_tx.send(bytes);
    }
    drop(write_tx);
    dispatcher.abort();
    forwarder.abort();
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(RemoteError::NodeDown));
    }
    for cmd in stalled.drain(..) {
        if let Command::Ask { reply, .. } = cmd {
            let _ = reply.send(Err(RemoteError::NodeDown));
        }
    }
    command_rx.close();
    while let Ok(cmd) = command_rx.try_recv() {
        if let Command::Ask { reply, .. } = cmd {
            let _ = reply.send(Err(RemoteError::NodeDown));
        }
    }
    node.peer_lost(peer_id.as_deref().unwrap_or_default(), conn_id, peer_incarnation, duplicate);
    // A peer that stopped reading must not keep the writer (and the
    // connection) alive.
    let mut writer = writer;
    if tokio::time::timeout(std::time::Duration::from_secs(1), &mut writer).await.is_err() {
        writer.abort();
    }
}

/// A connection's ref codec, once the peer is known.
type SharedCodec = Arc<std::sync::OnceLock<Arc<dyn RefCodec>>>;

/// The actor ids a peer watches through one connection.
type Watched = Arc<std::sync::Mutex<HashSet<u64>>>;

/// Starts reporting, once, when the peer's watched actor `id` stops (at once
/// if it is gone), unless this connection ends first. A second watch of the
/// same actor is a no-op; past [`MAX_WATCHES`] a watch is answered at once.
fn watch_once(node: &Arc<NodeInner>, commands: &mpsc::Sender<Command>, watched: &Watched, id: u64) {
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

/// Hands a command to the session; gives it back if the session is full.
fn submit(
    session: &mut Session,
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
            if let Err(e) = session.send_tell(now(), tell) {
                tracing::warn!(error = %e, "tell not sent");
            }
            None
        }
        Command::Ask { target, wire_name, payload, timeout, reply } => {
            if !session.has_room() {
                return Some(Command::Ask { target, wire_name, payload, timeout, reply });
            }
            match session.send_ask(now(), target, None, wire_name.into(), payload, timeout) {
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
                Ok(payload) => session.send_reply(now(), id, payload),
                Err((code, message)) => session.send_failure(now(), id, code, message),
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
            if let Err(e) = session.send_watch(now(), watch) {
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
            if let Err(e) = session.send_terminated(now(), terminated) {
                tracing::debug!(error = %e, "terminated not sent");
            }
            None
        }
        Command::Close => {
            session.close(now(), CloseCode::Normal, "shutting down");
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

/// Delivers inbound messages to local actors in arrival order, waiting for
/// mailbox room (backpressure: the inbound queue fills, the connection stops
/// taking events).
async fn dispatch_inbound(
    node: Arc<NodeInner>,
    mut inbound: mpsc::Receiver<Inbound>,
    commands: mpsc::Sender<Command>,
    backlog: Arc<AtomicUsize>,
    watched: Watched,
    codec: SharedCodec,
) {
    while let Some(msg) = inbound.recv().await {
        if let Some(codec) = codec.get() {
            deliver(&node, msg, &commands, &watched, codec).await;
        }
        backlog.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn deliver(
    node: &Arc<NodeInner>,
    msg: Inbound,
    commands: &mpsc::Sender<Command>,
    watched: &Watched,
    codec: &Arc<dyn RefCodec>,
) {
    match msg {
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
