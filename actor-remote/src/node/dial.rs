//! Dialing: connections this node opens, one attempt per peer at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::service::PeerRun;
use super::{NodeError, NodeInner, conn};

/// How long dialing a node may take (connect and handshake).
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes being dialed now, by id.
#[derive(Default)]
pub(crate) struct Dialing {
    ids: Mutex<HashSet<String>>,
}

impl Dialing {
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
    if node.peers.is_connected(id) || !node.dialing.start(id) {
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
        let _ = task.await;
    });
}

/// Dials `addr` once and returns the peer run its handshake named.
pub(crate) async fn once(node: &Arc<NodeInner>, addr: &str) -> Result<PeerRun, NodeError> {
    let conn = node.transport.connect(addr).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
    match rx.await {
        Ok((id, _)) if id == node.id => Err(NodeError::DialedItself(addr.to_owned())),
        Ok((node, run)) => Ok(PeerRun { node, run }),
        Err(_) => Err(NodeError::Refused(format!("no handshake with {addr}"))),
    }
}
