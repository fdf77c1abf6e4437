//! The peer table: the current connection to each peer node, and the rule
//! that picks one when two connections join the same pair of nodes.
//!
//! Two nodes that dial each other at once (crossed dials), or a node that
//! reconnects before its old connection is known dead, end up with two
//! connections. Both sides must keep the same one without talking about
//! it: [`keep_existing`] is that rule, a pure function of what both sides
//! know (the peer's run and who dialed).

use actor_core::entropy::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::conn::SystemSender;
use super::dial::Dialing;
use super::outbox::Outbox;
use super::service::PeerRun;

/// How long a connection dialed by the node with the higher id stays
/// unsettled at least, whatever the peer says: the peer cannot know of a
/// dial of its own by address (a seed) that reaches this node.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);
/// How long a connection dialed by the node with the higher id waits for
/// the peer's [`SETTLE`](super::requests::SETTLE) message before it counts
/// as settled anyway (a peer that does not send one).
pub(crate) const SETTLE_UNHEARD: Duration = Duration::from_secs(2);
/// How long it waits at most once the peer said its own dial is under way
/// (the dial's limit: connect, then handshake).
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(2 * super::dial::DIAL_TIMEOUT.as_secs() + 1);

/// Whether a connection can still be replaced by a crossed dial.
///
/// Only a connection dialed by the node with the higher id can: the other
/// node (the lower id) may be dialing too, and its dial wins. That node
/// says which it is over the connection: settled (no dial of its own by id
/// under way, and none by id starts while this connection lives), or its
/// dial is under way (settled follows if the dial does not replace it).
#[derive(Clone, Default)]
pub(crate) struct Settle(Arc<AtomicU8>);

const UNHEARD: u8 = 0;
const PEER_DIALING: u8 = 1;
const SETTLED: u8 = 2;

impl Settle {
    /// A connection no crossed dial can replace.
    pub(crate) fn settled() -> Self {
        Settle(Arc::new(AtomicU8::new(SETTLED)))
    }

    pub(crate) fn is_settled(&self) -> bool {
        self.0.load(Ordering::Acquire) == SETTLED
    }

    /// Records what the peer (or this node, the lower id) said: settled, or
    /// a dial under way. Settled is final. True if that changed anything.
    pub(crate) fn set(&self, settled: bool) -> bool {
        if settled {
            self.0.swap(SETTLED, Ordering::AcqRel) != SETTLED
        } else {
            self.0.compare_exchange(UNHEARD, PEER_DIALING, Ordering::AcqRel, Ordering::Acquire).is_ok()
        }
    }

    /// When the connection counts as settled (without word from the peer,
    /// at the latest).
    fn deadline(&self, registered_at: tokio::time::Instant) -> tokio::time::Instant {
        match self.0.load(Ordering::Acquire) {
            SETTLED => registered_at + SETTLE,
            PEER_DIALING => registered_at + SETTLE_MAX,
            _ => registered_at + SETTLE_UNHEARD,
        }
    }
}

/// Counters of one connection, kept by its task and read by
/// [`Node::peer_stats`](super::Node::peer_stats).
#[derive(Debug)]
pub(crate) struct ConnStats {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    /// The last heartbeat's round trip, in microseconds (0: none yet).
    pub(crate) rtt_micros: AtomicU64,
    /// When the connection was made (on the runtime's clock).
    born: std::time::Instant,
    /// When the session last heard the peer ([`Session::last_heard`]), in
    /// microseconds after `born`.
    ///
    /// [`Session::last_heard`]: crate::proto::session::Session::last_heard
    heard_micros: AtomicU64,
}

impl ConnStats {
    /// The counters of a connection made now.
    pub(crate) fn new() -> Self {
        ConnStats {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            rtt_micros: AtomicU64::new(0),
            born: tokio::time::Instant::now().into_std(),
            heard_micros: AtomicU64::new(0),
        }
    }

    /// The session last heard the peer at `at`.
    pub(crate) fn heard(&self, at: std::time::Instant) {
        let micros = u64::try_from(at.saturating_duration_since(self.born).as_micros()).unwrap_or(u64::MAX);
        self.heard_micros.store(micros, Ordering::Relaxed);
    }

    /// Whether the session heard the peer within `within` of now.
    pub(crate) fn heard_within(&self, within: Duration) -> bool {
        let heard = self.born + Duration::from_micros(self.heard_micros.load(Ordering::Relaxed));
        tokio::time::Instant::now().into_std().saturating_duration_since(heard) < within
    }

    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// A connection in the peer table.
pub(crate) struct PeerConn {
    /// The connection's number, unique in this process.
    pub(crate) id: u64,
    pub(crate) outbox: Outbox,
    /// System messages of services (say, registry updates), forwarded to
    /// the outbox in order by a task of the connection.
    pub(crate) system: SystemSender,
    /// The node id of whoever dialed (for the crossed-dial rule).
    pub(crate) dialer: String,
    /// The peer's run.
    pub(crate) run: u64,
    pub(crate) registered_at: tokio::time::Instant,
    /// Whether a crossed dial may still replace it.
    pub(crate) settle: Settle,
    /// Its counters.
    pub(crate) stats: Arc<ConnStats>,
}

impl PeerConn {
    fn is_live(&self) -> bool {
        !self.outbox.is_closed()
    }

    /// When node `me` may trust this connection to `peer` to stay: no
    /// crossed dial of the peer's replaces it (see [`Settle`]), and no dial
    /// of `me`'s own to the peer is under way (its end wakes the waits, see
    /// `NodeInner::settle_dialed_by_peers`; meanwhile, look again shortly).
    fn settles_at(&self, me: &str, peer: &str, dialing: &Dialing) -> tokio::time::Instant {
        let at =
            if self.dialer == me.min(peer) { self.registered_at } else { self.settle.deadline(self.registered_at) };
        if dialing.may_reach(peer) { at.max(tokio::time::Instant::now() + SETTLE) } else { at }
    }
}

impl Clone for PeerConn {
    fn clone(&self) -> Self {
        PeerConn {
            id: self.id,
            outbox: self.outbox.clone(),
            system: self.system.clone(),
            dialer: self.dialer.clone(),
            run: self.run,
            registered_at: self.registered_at,
            settle: self.settle.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// What the crossed-dial rule looks at in one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dialed<'a> {
    /// The peer's run on that connection.
    pub(crate) run: u64,
    /// Who dialed it.
    pub(crate) dialer: &'a str,
}

/// Whether node `me` keeps its `existing` connection to `peer` over a `new`
/// one (and closes the new one as a duplicate): a newer run of the peer
/// wins; else the connection dialed by the node with the lower id (both
/// sides agree on that); else, both dialed by the same side (a reconnect
/// while the old connection is not known dead yet), the new one.
pub(crate) fn keep_existing(me: &str, peer: &str, existing: Dialed<'_>, new: Dialed<'_>) -> bool {
    if existing.run != new.run {
        return existing.run > new.run;
    }
    if existing.dialer != new.dialer {
        return existing.dialer == me.min(peer);
    }
    false
}

/// The current connection to each peer node, by node id.
pub(crate) struct Peers {
    map: Mutex<HashMap<String, PeerConn>>,
    /// Bumped whenever the table changes.
    changed: watch::Sender<u64>,
    /// Connections opened to each peer (kept for at most
    /// [`MAX_OPEN_COUNTS`] peers: past it, those not connected are
    /// forgotten).
    opens: Mutex<HashMap<String, u64>>,
}

/// The most peers whose connection count is kept.
pub(crate) const MAX_OPEN_COUNTS: usize = 10_000;

impl Default for Peers {
    fn default() -> Self {
        Peers { map: Mutex::default(), changed: watch::channel(0).0, opens: Mutex::default() }
    }
}

impl Peers {
    /// A connection to `peer` was opened (and entered the table).
    fn count_open(&self, peer: &str) {
        let mut opens = self.opens.lock().unwrap_or_else(|p| p.into_inner());
        if opens.len() >= MAX_OPEN_COUNTS && !opens.contains_key(peer) {
            let connected = self.lock();
            opens.retain(|id, _| connected.contains_key(id));
        }
        *opens.entry(peer.to_owned()).or_default() += 1;
    }

    /// Connections opened to `peer` so far.
    pub(crate) fn opens(&self, peer: &str) -> u64 {
        self.opens.lock().unwrap_or_else(|p| p.into_inner()).get(peer).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PeerConn>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an established connection of node `me` to `peer`, unless the
    /// crossed-dial rule keeps the existing one: `None` then (the new one
    /// must close). Otherwise the connection it replaced, if any (it must
    /// close).
    pub(crate) fn insert(&self, me: &str, peer: &str, conn: PeerConn) -> Option<Option<PeerConn>> {
        let mut peers = self.lock();
        if let Some(existing) = peers.get(peer) {
            let old = Dialed { run: existing.run, dialer: &existing.dialer };
            let new = Dialed { run: conn.run, dialer: &conn.dialer };
            if keep_existing(me, peer, old, new) {
                return None;
            }
        }
        let replaced = peers.insert(peer.to_owned(), conn);
        drop(peers);
        self.count_open(peer);
        self.changed.send_modify(|n| *n += 1);
        Some(replaced)
    }

    /// Forgets connection `conn_id` to `peer` if it is still the peer's
    /// current one (true if it was), and gives the live connection to the
    /// same run `run` that replaced it, if any.
    pub(crate) fn remove(&self, peer: &str, conn_id: u64, run: Option<u64>) -> (bool, Option<PeerConn>) {
        let mut peers = self.lock();
        let removed = match peers.get(peer) {
            Some(c) if c.id == conn_id => {
                peers.remove(peer);
                true
            }
            _ => false,
        };
        let successor = peers.get(peer).filter(|c| Some(c.run) == run && c.is_live()).cloned();
        drop(peers);
        if removed {
            self.changed.send_modify(|n| *n += 1);
        }
        (removed, successor)
    }

    /// The live connection to run `run` of `peer`, if any.
    pub(crate) fn current(&self, peer: &str, run: u64) -> Option<PeerConn> {
        self.lock().get(peer).filter(|c| c.run == run && c.is_live()).cloned()
    }

    /// The connection to `peer`, whatever its run, if any.
    pub(crate) fn any_run(&self, peer: &str) -> Option<PeerConn> {
        self.lock().get(peer).cloned()
    }

    /// The outbox of connection `conn_id` if it is `peer`'s current one.
    pub(crate) fn current_outbox(&self, peer: &str, conn_id: u64) -> Option<Outbox> {
        self.lock().get(peer).filter(|c| c.id == conn_id).map(|c| c.outbox.clone())
    }

    /// Whether `peer` has a live connection.
    pub(crate) fn is_connected(&self, peer: &str) -> bool {
        self.lock().get(peer).is_some_and(PeerConn::is_live)
    }

    /// Waits (up to `grace`) for a live connection to run `run` of `peer`.
    pub(crate) async fn await_current(&self, peer: &str, run: u64, grace: Duration) -> Option<PeerConn> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                if let Some(c) = self.current(peer, run) {
                    return Some(c);
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(grace, wait).await.ok().flatten()
    }

    /// The live connection to run `run` of `peer` once the end of a closed
    /// one to that run has been processed (the table still holds a closed
    /// connection until its driver reports the end, which says whether a
    /// successor is expected); `None` if there is none then, or after
    /// `grace`.
    pub(crate) async fn await_end_processed(&self, peer: &str, run: u64, grace: Duration) -> Option<PeerConn> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                match self.lock().get(peer) {
                    Some(c) if c.run == run && c.is_live() => return Some(c.clone()),
                    Some(c) if c.run == run => {}
                    _ => return None,
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(grace, wait).await.ok().flatten()
    }

    /// Waits until `peer` is connected and the connection is settled (see
    /// [`Node::wait_for_peer`](super::Node::wait_for_peer)).
    pub(crate) async fn settled(&self, me: &str, peer: &str, dialing: &Dialing) {
        let mut changed = self.changed.subscribe();
        loop {
            let settles_at = self.lock().get(peer).map(|c| c.settles_at(me, peer, dialing));
            match settles_at {
                Some(at) if at <= tokio::time::Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        res = changed.changed() => if res.is_err() { std::future::pending::<()>().await },
                    }
                }
                None => {
                    if changed.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// The connection to run `run` of `peer` once it is settled (see
    /// [`Settle`]); if it is replaced meanwhile, its successor (settled in
    /// turn). `None` if there is no live connection to that run (then, or
    /// after a replacement).
    pub(crate) async fn await_settled(&self, me: &str, peer: &str, run: u64, dialing: &Dialing) -> Option<PeerConn> {
        let mut changed = self.changed.subscribe();
        loop {
            let conn = self.current(peer, run)?;
            let at = conn.settles_at(me, peer, dialing);
            if at <= tokio::time::Instant::now() {
                return Some(conn);
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                res = changed.changed() => if res.is_err() { return Some(conn) },
            }
        }
    }

    /// Changes of the table (and of connections' [`Settle`]).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes the waits for a settled connection: one's [`Settle`] changed.
    pub(crate) fn touch(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The connections to peers that this node (the lower id) has not yet
    /// said are settled, for peers it is not dialing: it says so now.
    pub(crate) fn unsettled_dialed_by_peers(&self, me: &str) -> Vec<(String, PeerConn)> {
        self.lock()
            .iter()
            .filter(|(id, c)| me < id.as_str() && c.dialer == **id && !c.settle.is_settled() && c.is_live())
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect()
    }

    /// Waits until no connection to `peer` is left.
    pub(crate) async fn gone(&self, peer: &str) {
        let mut changed = self.changed.subscribe();
        while self.lock().contains_key(peer) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// The peer runs connected now, in node id order.
    pub(crate) fn runs(&self) -> Vec<PeerRun> {
        let mut runs: Vec<PeerRun> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.is_live())
            .map(|(id, c)| PeerRun { node: id.clone(), run: c.run })
            .collect();
        runs.sort_by(|a, b| a.node.cmp(&b.node));
        runs
    }

    /// Every entry, in node id order.
    pub(crate) fn all(&self) -> Vec<(String, PeerConn)> {
        let mut all: Vec<(String, PeerConn)> = self.lock().iter().map(|(id, c)| (id.clone(), c.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Empties the table (the node is shutting down).
    pub(crate) fn drain(&self) -> Vec<PeerConn> {
        let drained: Vec<PeerConn> = self.lock().drain().map(|(_, c)| c).collect();
        self.changed.send_modify(|n| *n += 1);
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a pair apply the rule to the same two connections and
    /// must agree on which one stays.
    #[test]
    fn both_sides_keep_the_same_connection() {
        // (existing run, existing dialer, new run, new dialer, kept by "a")
        let table = [
            // Same run, crossed dials: the one "a" (the lower id) dialed stays.
            (1, "a", 1, "b", true),
            (1, "b", 1, "a", false),
            // Same run, same dialer: a reconnect, the new one wins.
            (1, "a", 1, "a", false),
            (1, "b", 1, "b", false),
            // A newer run of the peer wins whoever dialed.
            (1, "a", 2, "b", false),
            (2, "b", 1, "a", true),
        ];
        for (old_run, old_dialer, new_run, new_dialer, kept) in table {
            let old = Dialed { run: old_run, dialer: old_dialer };
            let new = Dialed { run: new_run, dialer: new_dialer };
            assert_eq!(keep_existing("a", "b", old, new), kept, "{old:?} vs {new:?} at a");
            // Node "b" sees the same two connections; where the runs are
            // equal they are the same pair, and "b" must keep the same one.
            if old_run == new_run {
                assert_eq!(keep_existing("b", "a", old, new), kept, "{old:?} vs {new:?} at b");
            }
        }
    }
}
