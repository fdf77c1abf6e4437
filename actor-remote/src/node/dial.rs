//! Dialing: connections this node opens, one attempt per peer at a time.

use actor_core::entropy::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::service::PeerRun;
use super::{NodeError, NodeInner, conn};

/// How long dialing a node may take (connect and handshake).
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes being dialed now, by id, and the addresses dialed by address
/// only (whose node is known once their handshake is done).
#[derive(Default)]
pub(crate) struct Dialing {
    /// Dials by id under way.
    ids: Mutex<HashMap<String, ById>>,
    /// Dials by address under way, per address.
    addrs: Mutex<HashMap<String, usize>>,
    /// Numbers the dials by id (a dial ends only its own entry).
    next: std::sync::atomic::AtomicU64,
}

/// A dial by id under way.
struct ById {
    /// The address it dials.
    addr: String,
    /// Which dial it is.
    token: u64,
    /// Still connecting: no hello of this node's has gone out on it, so the
    /// peer cannot have taken its connection yet, and the dial may be
    /// called off (see [`Dialing::call_off`]).
    connecting: bool,
    /// Wakes the dial once it is called off.
    called_off: Arc<Notify>,
}

impl Dialing {
    /// Whether a dial by address to `addr` is under way.
    fn addr_under_way(&self, addr: &str) -> bool {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(addr)
    }

    /// Whether this node is dialing node `id`: a connection to `id` may
    /// still be replaced by that dial (crossed dials, or two of this
    /// node's).
    pub(crate) fn may_reach(&self, id: &str) -> bool {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    /// The node a dial by id to `addr` under way is dialing, if any.
    fn id_dialed_at(&self, addr: &str) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter().find(|(_, d)| d.addr == addr).map(|(id, _)| id.clone())
    }

    /// Claims the dial of `id` at `addr`: its token and what wakes it if it
    /// is called off; `None` if one is under way.
    fn start(&self, id: &str, addr: &str) -> Option<(u64, Arc<Notify>)> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.contains_key(id) {
            return None;
        }
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let called_off = Arc::new(Notify::new());
        ids.insert(
            id.to_owned(),
            ById { addr: addr.to_owned(), token, connecting: true, called_off: called_off.clone() },
        );
        Some((token, called_off))
    }

    /// The dial `token` of `id` connected: true if it goes on to its
    /// handshake, false if it was called off meanwhile.
    fn connected(&self, id: &str, token: u64) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        match ids.get_mut(id) {
            Some(d) if d.token == token => {
                d.connecting = false;
                true
            }
            _ => false,
        }
    }

    /// A connection to `id` has come up: a dial of `id` that is still
    /// connecting is called off (it is no longer needed, and the peer has
    /// seen nothing of it). Such a dial can take long, as one to the address
    /// of a run that is gone waits for its timeout; meanwhile the peer's
    /// connection could not be said to stay, and requests on it would wait.
    /// A dial past its connecting step is left to finish: the peer may have
    /// taken its connection already.
    /// True if a dial was called off (waits on `may_reach` must be woken).
    pub(crate) fn call_off(&self, id: &str) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.get(id).is_some_and(|d| d.connecting)
            && let Some(d) = ids.remove(id)
        {
            d.called_off.notify_one();
            return true;
        }
        false
    }

    /// The dial `token` of `id` is over: a connection that node dialed
    /// meanwhile may now be said to stay.
    fn ended(node: &NodeInner, id: &str, token: u64) {
        {
            let mut ids = node.dialing.ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.get(id).is_some_and(|d| d.token == token) {
                ids.remove(id);
            }
        }
        node.settle_dialed_by_peers();
    }
}

/// Dials node `id` at `addr` in the background unless it is connected or
/// being dialed. Services hear of a dial that could not reach the node.
pub(crate) fn ensure(node: &Arc<NodeInner>, id: &str, addr: &str) {
    if *node.shutdown.borrow() || id == node.id {
        return;
    }
    // A dial by address to the same address (a seed) reaches the node too:
    // a second dial would replace its connection, failing what is in flight.
    if node.peers.is_connected(id) || node.dialing.addr_under_way(addr) {
        return;
    }
    let Some((token, called_off)) = node.dialing.start(id, addr) else { return };
    // Checked again now that the dial is claimed: a connection the peer
    // dialed meanwhile was told (`Settle`) either that this dial is under
    // way, or that it stays; then there must be no dial.
    if node.peers.is_connected(id) {
        Dialing::ended(node, id, token);
        return;
    }
    let (node, id, addr) = (node.clone(), id.to_owned(), addr.to_owned());
    tokio::spawn(async move {
        let dialed = tokio::select! {
            dialed = tokio::time::timeout(DIAL_TIMEOUT, node.transport.connect(&addr)) => dialed,
            // A connection to the node came up meanwhile: not needed.
            () = called_off.notified() => {
                tracing::debug!(node = %node.id, peer = %id, %addr, "connected meanwhile; dial called off");
                return;
            }
        };
        let conn = match dialed {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::debug!(node = %node.id, peer = %id, %addr, error = %e, "node not reachable");
                None
            }
            Err(_) => None,
        };
        let Some(conn) = conn else {
            Dialing::ended(&node, &id, token);
            for service in &node.services {
                service.dial_failed(&id);
            }
            return;
        };
        if !node.dialing.connected(&id, token) {
            // Called off as it connected: the connection is dropped before
            // any hello of this node's goes out on it.
            return;
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
        // Done dialing once the handshake is over (or failed); a handshake
        // still not done by then is given up, so that it cannot complete
        // later and replace a connection said to stay.
        if tokio::time::timeout(DIAL_TIMEOUT, rx).await.is_err() {
            task.abort();
        }
        Dialing::ended(&node, &id, token);
        let _ = task.await;
    });
}

/// Dials `addr` once and returns the peer run its handshake named.
pub(crate) async fn once(node: &Arc<NodeInner>, addr: &str) -> Result<PeerRun, NodeError> {
    // A dial by id to this address is under way: its connection is the one
    // wanted (a second would replace it, failing what is in flight on it).
    if let Some(id) = node.dialing.id_dialed_at(addr) {
        let mut changed = node.peers.subscribe();
        let ended = async {
            while node.dialing.may_reach(&id) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(2 * DIAL_TIMEOUT, ended).await;
        if let Some(conn) = node.peers.any_run(&id).filter(|_| node.peers.is_connected(&id)) {
            return Ok(PeerRun { node: id, run: conn.run });
        }
    }
    let _under_way = ByAddr::start(node, addr);
    let conn = node.transport.connect(addr).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
    match rx.await {
        Ok((id, _)) if id == node.id => Err(NodeError::DialedItself(addr.to_owned())),
        Ok((node, run)) => Ok(PeerRun { node, run }),
        Err(_) => Err(NodeError::Refused(format!("no handshake with {addr}"))),
    }
}

/// A dial by address under way, until dropped.
struct ByAddr<'a>(&'a NodeInner, &'a str);

impl<'a> ByAddr<'a> {
    fn start(node: &'a NodeInner, addr: &'a str) -> Self {
        *node.dialing.addrs.lock().unwrap_or_else(|p| p.into_inner()).entry(addr.to_owned()).or_default() += 1;
        ByAddr(node, addr)
    }
}

impl Drop for ByAddr<'_> {
    fn drop(&mut self) {
        let ByAddr(node, addr) = *self;
        let mut addrs = node.dialing.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = addrs.get_mut(addr) {
            *n -= 1;
            if *n == 0 {
                addrs.remove(addr);
            }
        }
    }
}
