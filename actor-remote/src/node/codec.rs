//! Refs inside messages: how a connection encodes and decodes them.

use std::any::{Any, TypeId};
use std::sync::{Arc, Weak};

use actor_core::{ActorId, ImportedRef, RefAddr, RefCodec, RemoteHandle};

use super::NodeInner;
use super::outbox::Commands;

/// The ref codec of one connection: local actors become addresses of this
/// node (and reachable by peers); addresses become local refs, refs through
/// this connection, or refs through the connection to the node they name.
pub(crate) struct ConnCodec {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) conn_id: u64,
    pub(crate) peer: String,
    pub(crate) peer_incarnation: u64,
    pub(crate) commands: Commands,
}

impl RefCodec for ConnCodec {
    fn export_local(
        &self,
        type_id: TypeId,
        actor_id: ActorId,
        actor: Box<dyn Any + Send + Sync>,
    ) -> Result<RefAddr, String> {
        let node = self.node.upgrade().ok_or("the node has stopped")?;
        node.export(type_id, actor_id, actor)
    }

    fn import(&self, addr: &RefAddr, _type_id: TypeId, type_name: &'static str) -> Result<ImportedRef, String> {
        let node = self.node.upgrade().ok_or("the node has stopped")?;
        if addr.node == node.id {
            if addr.incarnation != node.incarnation {
                return Err(format!("a ref to actor {} of an earlier run of this node", addr.id));
            }
            let exposed = node.exposed_ids.get(&addr.id).map(|e| e.value().1.clone()).ok_or("no such actor here")?;
            return Ok(ImportedRef::Local(exposed.actor_any()));
        }
        let (conn_id, commands, incarnation) = if addr.node == self.peer {
            // The peer's current connection: this codec's may have been
            // replaced (crossed dials, reconnect) since it was made.
            match node.connection_to(&self.peer, self.peer_incarnation) {
                Some(h) => (h.id, h.commands, h.incarnation),
                None => (self.conn_id, self.commands.clone(), self.peer_incarnation),
            }
        } else {
            let peers = node.lock_peers();
            let handle = peers.get(&addr.node).ok_or_else(|| format!("not connected to node {:?}", addr.node))?;
            (handle.id, handle.commands.clone(), handle.incarnation)
        };
        if addr.incarnation != incarnation {
            return Err(format!("a ref to actor {} of an earlier run of node {:?}", addr.id, addr.node));
        }
        if node.proxies_on(conn_id) >= super::MAX_REFS_PER_PEER {
            return Err("too many remote refs through one connection".into());
        }
        let endpoint = node.peer_endpoint(&addr.node, incarnation, conn_id, commands, addr.id, short(type_name));
        let weak = self.node.clone();
        let (id, peer) = (addr.id, addr.node.clone());
        let register = Box::new(move |handle: RemoteHandle| {
            if let Some(node) = weak.upgrade() {
                node.adopt_proxy(conn_id, &peer, incarnation, id, handle, None);
            }
        });
        Ok(ImportedRef::Remote { endpoint: Arc::new(endpoint), register })
    }
}

fn short(type_name: &str) -> &str {
    type_name.rsplit("::").next().unwrap_or(type_name)
}
