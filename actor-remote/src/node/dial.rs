//! Dialing: connections this node opens, one attempt per peer at a time.

use std::collections::{HashMap, HashSet};
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
    ids: Mutex<HashSet<String>>,
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
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Claims the dial of `id`; false if one is under way.
    fn start(&self, id: &str) -> bool {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned())
    }

    fn done(&self, id: &str) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
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
    if node.peers.is_connected(id) || node.dialing.addr_under_way(addr) || !node.dialing.start(id) {
        return;
    }
    // Checked again now that the dial is claimed: a connection the peer
    // dialed meanwhile was told (`Settle`) either that this dial is under
    // way, or that it stays; then there must be no dial.
    if node.peers.is_connected(id) {
        node.dialing.done(id);
        node.settle_dialed_by_peers();
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
            node.dialing.done(&id);
            node.settle_dialed_by_peers();
            for service in &node.services {
                service.dial_failed(&id);
            }
            return;
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
        // Done dialing once the handshake is over (or failed).
        let _ = tokio::time::timeout(DIAL_TIMEOUT, rx).await;
        node.dialing.done(&id);
        node.settle_dialed_by_peers();
        let _ = task.await;
    });
}

/// Dials `addr` once and returns the peer run its handshake named.
pub(crate) async fn once(node: &Arc<NodeInner>, addr: &str) -> Result<PeerRun, NodeError> {
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
