//! Refs inside messages: how a connection encodes and decodes them.

use std::any::{Any, TypeId};
use std::sync::{Arc, Weak};

use actor_core::remote::{ImportedRef, RefCodec, StandIn};
use actor_core::{ActorId, RefAddr};

use super::NodeInner;
use super::outbox::Outbox;
use super::standins::MAX_STAND_INS_PER_CONNECTION;

/// The ref codec of one connection: local actors become addresses of this
/// node (and reachable by peers); addresses become local refs, refs through
/// this connection, or refs through the connection to the node they name.
pub(crate) struct ConnCodec {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) conn_id: u64,
    pub(crate) peer: String,
    pub(crate) peer_run: u64,
    pub(crate) outbox: Outbox,
}

impl ConnCodec {
    /// The codec of connection `conn_id` (through `outbox`) to run `run` of
    /// `peer`.
    pub(crate) fn new(node: &Arc<NodeInner>, conn_id: u64, peer: &str, run: u64, outbox: Outbox) -> Self {
        ConnCodec { node: Arc::downgrade(node), conn_id, peer: peer.to_owned(), peer_run: run, outbox }
    }
}

impl RefCodec for ConnCodec {
    fn export_local(
        &self,
        type_id: TypeId,
        actor_id: ActorId,
        actor: Box<dyn Any + Send + Sync>,
    ) -> Result<RefAddr, String> {
        let node = self.node.upgrade().ok_or("the node has stopped")?;
        let id = node.exports.export(type_id, actor_id, actor)?;
        Ok(RefAddr { node: node.id.clone(), run: node.run, id })
    }

    fn import(&self, addr: &RefAddr, _type_id: TypeId, type_name: &'static str) -> Result<ImportedRef, String> {
        let node = self.node.upgrade().ok_or("the node has stopped")?;
        if addr.node == node.id {
            if addr.run != node.run {
                return Err(format!("a ref to actor {} of an earlier run of this node", addr.id));
            }
            let exposed = node.exports.by_handle(addr.id).ok_or("no such actor here")?;
            return Ok(ImportedRef::Local(exposed.actor_any()));
        }
        let (conn_id, outbox, run) = if addr.node == self.peer {
            // The peer's current connection: this codec's may have been
            // replaced (crossed dials, reconnect) since it was made.
            match node.peers.current(&self.peer, self.peer_run) {
                Some(c) => (c.id, c.outbox, c.run),
                None => (self.conn_id, self.outbox.clone(), self.peer_run),
            }
        } else {
            let c = node.peers.any_run(&addr.node).ok_or_else(|| format!("not connected to node {:?}", addr.node))?;
            (c.id, c.outbox, c.run)
        };
        if addr.run != run {
            return Err(format!("a ref to actor {} of an earlier run of node {:?}", addr.id, addr.node));
        }
        if node.stand_ins.count_on(conn_id) >= MAX_STAND_INS_PER_CONNECTION {
            return Err("too many remote refs through one connection".into());
        }
        let endpoint = node.endpoint(&addr.node, run, conn_id, outbox, addr.id, short(type_name));
        let weak = self.node.clone();
        let (id, peer) = (addr.id, addr.node.clone());
        let register = Box::new(move |stand_in: StandIn| {
            if let Some(node) = weak.upgrade() {
                node.adopt_stand_in(conn_id, &peer, run, id, stand_in, None);
            }
        });
        Ok(ImportedRef::Remote { endpoint: Arc::new(endpoint), register })
    }
}

fn short(type_name: &str) -> &str {
    type_name.rsplit("::").next().unwrap_or(type_name)
}
