//! A connection's inbound side: what the session read becomes deliveries
//! to local actors (straight into a mailbox when there is room, else in
//! order behind what waits), answers to asks, and the node's reactions to
//! watch, link and system frames.

use actor_core::entropy::HashMap;
use actor_core::remote::deliver_in;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::Instrument;

use actor_core::remote::{BoxFuture, RefCodec};

use super::super::NodeInner;
use super::super::expose::{Exposed, TryTell};
use super::super::links::exit_reason;
use super::super::outbox::{Command, Outbox};
use super::super::requests::{self, STOP, SYSTEM_TARGET};
use crate::proto::frame::{Ask, Target, TargetRef, Tell, TellRef};
use crate::proto::{FailureCode, Offer};

/// Inbound messages waiting for mailbox room before reading pauses.
const INBOUND_QUEUE: usize = 1024;
/// Bytes of inbound tells kept waiting before reading pauses (a tell larger
/// than this still waits alone).
const INBOUND_BYTES: usize = 1024 * 1024;
/// Actors one peer may watch through one connection.
pub(crate) const MAX_WATCHES: usize = 10_000;

/// An inbound message waiting for delivery.
pub(super) enum Inbound {
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
pub(super) struct Backlog {
    items: VecDeque<Inbound>,
    bytes: Vec<u8>,
    read: usize,
}

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether reading must pause until some of it is delivered.
    pub(super) fn is_full(&self) -> bool {
        self.items.len() >= INBOUND_QUEUE || self.bytes.len() - self.read >= INBOUND_BYTES
    }

    pub(super) fn push(&mut self, msg: Inbound) {
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

/// A connection's ref codec, once the peer is known.
pub(super) type SharedCodec = Arc<OnceLock<Arc<dyn RefCodec>>>;

/// The actors a peer watches through one connection, each with the task
/// that reports its end (aborted by an `Unwatch`).
pub(super) type Watched = Arc<Mutex<HashMap<u64, Option<tokio::task::AbortHandle>>>>;

/// Where the inbound side of one connection delivers: the node's exported
/// actors (the last one found by handle kept at hand: a burst usually goes
/// to one actor), and the message that waits for mailbox room, in order
/// before everything in the backlog.
pub(super) struct Delivery {
    pub(super) node: Arc<NodeInner>,
    pub(super) outbox: Outbox,
    pub(super) watched: Watched,
    pub(super) codec: SharedCodec,
    pub(super) backlog: Backlog,
    /// The message being delivered (its mailbox is full, or it is an ask
    /// being handed over).
    pub(super) delivering: Option<BoxFuture<'static, ()>>,
    last: Option<(u64, Arc<dyn Exposed>)>,
}

impl Delivery {
    pub(super) fn new(node: Arc<NodeInner>, outbox: Outbox) -> Self {
        Delivery {
            node,
            outbox,
            watched: Arc::default(),
            codec: Arc::default(),
            backlog: Backlog::default(),
            delivering: None,
            last: None,
        }
    }

    /// Whether a message may go straight in: nothing waits ahead of it.
    pub(super) fn is_idle(&self) -> bool {
        self.delivering.is_none() && self.backlog.is_empty()
    }

    /// Hands waiting messages over while their mailboxes take them; stops
    /// at the first that must wait, which then waits in `delivering`.
    pub(super) fn deliver_waiting(&mut self) {
        while self.delivering.is_none() {
            let Delivery { backlog, node, codec, last, .. } = self;
            let mut targets = Targets { node, codec, last };
            let next = backlog.pop(|msg| match msg {
                Waiting::InPlace(tell) if targets.try_tell(tell.target, tell.wire_name, tell.payload) => None,
                Waiting::InPlace(tell) => Some(Inbound::Tell(Box::new(tell.into()))),
                Waiting::Owned(msg) => targets.deliver_now(msg),
            });
            match next {
                Some(waits) => self.delivering = waits.flatten().map(|msg| self.later(msg)),
                None => break,
            }
        }
    }

    /// A tell read in place: delivered at once if nothing waits ahead of it
    /// and its mailbox has room, else kept in the backlog as it is; with the
    /// backlog full, reading pauses at it. Tells by name (node messages
    /// among them) become events.
    pub(super) fn offer(&mut self, idle: bool, tell: TellRef<'_>) -> Offer {
        if matches!(tell.target, TargetRef::Name(_)) {
            return Offer::Event;
        }
        let Delivery { backlog, node, codec, last, .. } = self;
        if idle
            && backlog.is_empty()
            && (Targets { node, codec, last }).try_tell(tell.target, tell.wire_name, tell.payload)
        {
            Offer::Taken
        } else if backlog.is_full() {
            Offer::Pause
        } else {
            backlog.push_encoded(tell);
            Offer::Taken
        }
    }

    /// An inbound tell or ask from an event: straight in when nothing waits
    /// ahead of it and there is room, otherwise behind what waits.
    pub(super) fn accept(&mut self, msg: Inbound) {
        if !self.is_idle() {
            self.backlog.push(msg);
            return;
        }
        let Delivery { node, codec, last, .. } = self;
        let waits = match msg {
            Inbound::Ask(_) => Some(msg),
            msg => (Targets { node, codec, last }).deliver_now(msg),
        };
        self.delivering = waits.map(|msg| self.later(msg));
    }

    /// A future that delivers `msg`, waiting for mailbox room.
    fn later(&self, msg: Inbound) -> BoxFuture<'static, ()> {
        let (node, outbox, watched, codec) =
            (self.node.clone(), self.outbox.clone(), self.watched.clone(), self.codec.clone());
        Box::pin(async move {
            if let Some(codec) = codec.get() {
                deliver(&node, msg, &outbox, &watched, codec).await;
            }
        })
    }
}

/// Resolves targets and delivers without waiting.
struct Targets<'a> {
    node: &'a Arc<NodeInner>,
    codec: &'a SharedCodec,
    last: &'a mut Option<(u64, Arc<dyn Exposed>)>,
}

impl Targets<'_> {
    /// Delivers a tell if its mailbox has room now, or drops it (logged) if
    /// it can never be delivered: `true`. `false`: it must wait for room.
    fn try_tell(&mut self, target: TargetRef<'_>, wire_name: &str, payload: &[u8]) -> bool {
        let Some(codec) = self.codec.get() else { return false };
        // An exported actor keeps its handle for life and leaves the node's
        // table only when it ends, so the kept one is right for its handle
        // until a delivery finds it gone.
        let by_name;
        let found = match target {
            TargetRef::Id(id) => match self.last {
                Some((last, found)) if *last == id => Some(&*found),
                _ => match self.node.exports.resolve_ref(target) {
                    Some(found) => Some(&self.last.insert((id, found)).1),
                    None => None,
                },
            },
            TargetRef::Name(_) => {
                by_name = self.node.exports.resolve_ref(target);
                by_name.as_ref()
            }
        };
        let Some(found) = found else {
            tracing::debug!(?target, "tell for an unknown actor dropped");
            return true;
        };
        match found.try_tell(wire_name, payload, codec) {
            Ok(()) => true,
            Err(TryTell::Full) => false,
            Err(TryTell::Refused(FailureCode::ActorNotFound)) => {
                tracing::debug!(?target, "tell for an actor that ended dropped");
                *self.last = None;
                true
            }
            Err(TryTell::Refused(code)) => {
                tracing::warn!(?target, %wire_name, ?code, "inbound tell refused");
                true
            }
        }
    }

    /// Delivers an inbound message if that can be done without waiting (see
    /// [`try_tell`](Self::try_tell)); gives it back when it must wait (a
    /// full mailbox, or an ask).
    fn deliver_now(&mut self, msg: Inbound) -> Option<Inbound> {
        match msg {
            Inbound::Tell(t) if self.try_tell(target_ref(&t.target), &t.wire_name, &t.payload) => None,
            other => Some(other),
        }
    }
}

fn target_ref(target: &Target) -> TargetRef<'_> {
    match target {
        Target::Id(id) => TargetRef::Id(*id),
        Target::Name(name) => TargetRef::Name(name),
    }
}

/// Delivers one message, waiting for mailbox room; an ask's reply is awaited
/// by a task of its own and queued as a `Reply`.
async fn deliver(node: &Arc<NodeInner>, msg: Inbound, outbox: &Outbox, watched: &Watched, codec: &Arc<dyn RefCodec>) {
    match msg {
        // The backlog reads these in place; it hands over owned tells only.
        Inbound::Encoded(_) => {}
        Inbound::Tell(tell) => {
            let Some(actor) = node.exports.resolve(&tell.target) else {
                tracing::debug!(target = ?tell.target, "tell for an unknown actor dropped");
                return;
            };
            // Inside the sender's trace, if it sent one: the handler's span
            // is a child of it.
            let span = crate::trace::remote_span(&tell.wire_name, tell.trace.as_deref());
            let told =
                deliver_in(span.clone(), actor.tell(&tell.wire_name, &tell.payload, codec).instrument(span)).await;
            if let Err(code) = told {
                tracing::warn!(target = ?tell.target, wire_name = %tell.wire_name, ?code, "inbound tell refused");
            }
        }
        Inbound::Ask(ask) => {
            let timeout = std::time::Duration::from_millis(u64::from(ask.timeout_ms));
            let started = if ask.target.as_name() == Some(SYSTEM_TARGET) {
                // A lookup also watches what it found, before the asker gets
                // a ref: its end is reported even if it comes right away.
                requests::answer_lookup(
                    &ask.wire_name,
                    &ask.payload,
                    &node.id,
                    |name| {
                        let local = node.exports.named(name).map(|(handle, found)| super::super::Located {
                            node: node.id.clone(),
                            run: node.run,
                            addr: node.advertised.clone(),
                            handle,
                            type_name: found.type_name().to_owned(),
                        });
                        local.or_else(|| node.services.iter().find_map(|s| s.lookup(name)))
                    },
                    |id| watch(node, outbox, watched, id),
                )
            } else {
                match node.exports.resolve(&ask.target) {
                    Some(actor) => {
                        let span = crate::trace::remote_span(&ask.wire_name, ask.trace.as_deref());
                        let asked = actor.ask(&ask.wire_name, &ask.payload, timeout, codec).instrument(span.clone());
                        deliver_in(span, asked).await
                    }
                    None => Err(FailureCode::ActorNotFound),
                }
            };
            match started {
                Ok(reply) => {
                    let outbox = outbox.clone();
                    tokio::spawn(async move {
                        let result = reply.await;
                        let _ = outbox.send(Command::Reply { id: ask.id, result }).await;
                    });
                }
                Err(code) => {
                    let result = Err((code, format!("{code:?}")));
                    let _ = outbox.send(Command::Reply { id: ask.id, result }).await;
                }
            }
        }
    }
}

/// Starts reporting, once, when the peer's watched actor `id` stops (at once
/// if it is gone), unless this connection ends or the peer unwatches first.
/// A second watch of the same actor is a no-op; past [`MAX_WATCHES`] a
/// watch is answered at once.
pub(super) fn watch(node: &Arc<NodeInner>, outbox: &Outbox, watched: &Watched, id: u64) {
    {
        let mut set = watched.lock().unwrap_or_else(|p| p.into_inner());
        if set.contains_key(&id) {
            return;
        }
        if set.len() >= MAX_WATCHES {
            tracing::warn!(node = %node.id, "too many watches on one connection; watch refused");
            let _ = outbox.try_send(Command::Terminated { id, reason: "watch refused".into() });
            return;
        }
        set.insert(id, None);
        node.watches.fetch_add(1, Ordering::Relaxed);
    }
    let (task_node, task_outbox, task_watched) = (node.clone(), outbox.clone(), watched.clone());
    let task = tokio::spawn(async move {
        let reason = match task_node.exports.resolve(&Target::Id(id)) {
            Some(actor) => tokio::select! {
                reason = actor.wait_for_stop() => reason.to_string(),
                () = task_outbox.closed() => return,
            },
            None => "not found".to_owned(),
        };
        let _ = task_outbox.send(Command::Terminated { id, reason }).await;
        // Reported: the slot is free for another watch.
        if task_watched.lock().unwrap_or_else(|p| p.into_inner()).remove(&id).is_some() {
            task_node.watches.fetch_sub(1, Ordering::Relaxed);
        }
    });
    let mut set = watched.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(slot) = set.get_mut(&id) {
        *slot = Some(task.abort_handle());
    }
}

/// The peer no longer needs to hear when its watched actor `id` stops.
pub(super) fn unwatch(node: &NodeInner, watched: &Watched, id: u64) {
    let removed = watched.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    if let Some(task) = removed {
        node.watches.fetch_sub(1, Ordering::Relaxed);
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// The connection ended: its watches end with it.
pub(super) fn unwatch_all(node: &NodeInner, watched: &Watched) {
    let all: Vec<_> = watched.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
    node.watches.fetch_sub(all.len(), Ordering::Relaxed);
    for task in all.into_iter().filter_map(|(_, task)| task) {
        task.abort();
    }
}

/// A system tell from run `run` of `peer`: a stop request, or a service's.
pub(super) fn system_tell(node: &NodeInner, peer: &str, run: u64, wire_name: &str, payload: Vec<u8>) {
    if let Some(service) = node.services.iter().find(|s| s.handles(wire_name)) {
        service.system_message(&super::super::PeerRun { node: peer.to_owned(), run }, wire_name, payload);
        return;
    }
    match wire_name {
        STOP => match crate::codec::decode::<u64>(&payload) {
            // Only an exported actor, by the handle the peer was given.
            Ok(id) => match node.exports.by_handle(id) {
                Some(actor) => {
                    tracing::debug!(node = %node.id, %peer, actor = id, "stopping an actor at a peer's request");
                    actor.stop();
                }
                None => tracing::debug!(node = %node.id, %peer, "stop request for an unknown actor"),
            },
            Err(_) => tracing::warn!(node = %node.id, %peer, "malformed stop request; ignored"),
        },
        other => tracing::warn!(node = %node.id, %peer, wire_name = %other, "unknown system message; ignored"),
    }
}

/// A peer's actor `linker` linked itself to our actor `target`.
pub(crate) fn link(node: &NodeInner, peer: &str, run: u64, target: u64, linker: u64) {
    // A link to an actor that is gone is nothing to remember (the linker's
    // side hears of the end through its watch).
    if node.exports.resolve(&Target::Id(target)).is_none() {
        return;
    }
    if !node.links.add(peer, run, target, linker, |t| node.exports.is_alive(t)) {
        tracing::warn!(node = %node.id, %peer, "too many links from one peer; link refused");
    }
}

/// A peer's actor `linker`, linked to our actor `target`, exited. Only a
/// link this run of the peer made (with `Link`) carries the exit: an `Exit`
/// for any other pair is ignored, so a peer cannot stop an actor it merely
/// knows the handle of.
pub(super) fn exit(node: &NodeInner, peer: &str, run: u64, conn_id: u64, target: u64, linker: u64, reason: &str) {
    if !node.links.remove(peer, run, target, linker) {
        tracing::debug!(node = %node.id, %peer, target, linker, "exit for a link this peer did not make; ignored");
        return;
    }
    if let Some(actor) = node.exports.resolve(&Target::Id(target)) {
        actor.link_exit(node.linker_id(conn_id, linker), exit_reason(reason));
    }
}

/// A peer reports that its actor `id` stopped.
pub(super) fn terminated(node: &NodeInner, conn_id: u64, id: u64, reason: &str) {
    node.stand_ins.take_actor(conn_id, id).terminate_all(&exit_reason(reason));
}
