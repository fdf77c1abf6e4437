//! Dialing: connections this node opens, one attempt per peer at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::service::PeerRun;
use super::{NodeError, NodeInner, conn};

/// How long dialing a node may take (connect and handshake).
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes being dialed now, by id, and the addresses dialed by address
/// only (whose node is known once their handshake is done).
#[derive(Default)]
pub(crate) struct Dialing {
    /// Dials by id under way: the address each dials.
    ids: Mutex<HashMap<String, String>>,
    /// Dials by address under way, per address.
    addrs: Mutex<HashMap<String, usize>>,
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
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(_, a)| *a == addr).map(|(id, _)| id.clone())
    }

    /// Claims the dial of `id` at `addr`; false if one is under way.
    fn start(&self, id: &str, addr: &str) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(id.to_owned(), addr.to_owned());
        true
    }

    /// The dial of `id` is over: a connection that node dialed meanwhile
    /// may now be said to stay.
    fn ended(node: &NodeInner, id: &str) {
        node.dialing.ids.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
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
    if node.peers.is_connected(id) || node.dialing.addr_under_way(addr) || !node.dialing.start(id, addr) {
        return;
    }
    // Checked again now that the dial is claimed: a connection the peer
    // dialed meanwhile was told (`Settle`) either that this dial is under
    // way, or that it stays; then there must be no dial.
    if node.peers.is_connected(id) {
        Dialing::ended(node, id);
        return;
    }
    let (node, id, addr) = (node.clone(), id.to_owned(), addr.to_owned());
    tokio::spawn(async move {
        let dialed = tokio::time::timeout(DIAL_TIMEOUT, node.transport.connect(&addr)).await;
        let conn = match dialed {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::debug!(node = %node.id, peer = %id, %addr, error = %e, "node not reachable");
                None
            }
            Err(_) => None,
        };
        let Some(conn) = conn else {
            Dialing::ended(&node, &id);
            for service in &node.services {
                service.dial_failed(&id);
            }
            return;
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
        // Done dialing once the handshake is over (or failed); a handshake
        // still not done by then is given up, so that it cannot complete
        // later and replace a connection said to stay.
        if tokio::time::timeout(DIAL_TIMEOUT, rx).await.is_err() {
            task.abort();
        }
        Dialing::ended(&node, &id);
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
