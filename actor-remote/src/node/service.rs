//! The seam between a node and the services built on it (membership, the
//! cluster registry: the `actor-cluster` crate).
//!
//! A service is attached when the node is built
//! ([`NodeBuilder::service`](super::NodeBuilder::service)). What flows in are
//! the [`NodeService`] callbacks: the node started, a connection to a peer's
//! run became its current one or ended, a dial failed, a system message for
//! the service arrived, the node is leaving. What flows out is what a
//! [`NodeContext`] offers: send a system message to a peer, close a peer,
//! dial, and turn actor handles into refs and back. Nothing else of the node
//! is reachable from a service, none of it is on the user's [`Node`], and
//! the node knows nothing of what a service does with what it is told.

use std::sync::{Arc, Weak};
use std::time::Duration;

use actor_core::ActorRef;
use actor_core::remote::BoxFuture;

use super::outbox::Command;
use super::{Node, NodeError, NodeInner, RemoteActor};

/// One run of a peer node, as a connection's handshake authenticated it: a
/// restarted node comes back under the same id with a new run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerRun {
    /// The peer's node id.
    pub node: String,
    /// The peer's run ([`Node::run`] on that node).
    pub run: u64,
}

/// A service running on a node, told of its peers and of the system
/// messages addressed to it. Callbacks are made from the node's connection
/// tasks: they must not block (hand long work to a task of the service's).
pub trait NodeService: Send + Sync + 'static {
    /// Whether system messages with this wire name are this service's.
    fn handles(&self, wire_name: &str) -> bool;

    /// The node has started; called once, before any other callback, with
    /// the service's way to act on the node.
    fn started(&self, node: NodeContext);

    /// A connection to `peer` became its current one (a first connection,
    /// or one that replaced another: a crossed dial or a reconnect).
    fn peer_connected(&self, peer: &PeerRun);

    /// The last connection to `peer` ended, and no other connection to the
    /// same run replaced it.
    fn peer_disconnected(&self, peer: &PeerRun);

    /// Dialing node `id` (asked for with [`NodeContext::connect`]) failed:
    /// the transport could not reach it.
    fn dial_failed(&self, id: &str);

    /// A system message for this service from `from`: authenticated (`from`
    /// is whom the connection's handshake named) and otherwise unchecked.
    fn system_message(&self, from: &PeerRun, wire_name: &str, payload: Vec<u8>);

    /// The node is shutting down ([`Node::shutdown`]): called before the
    /// connections close, so the service can say goodbye to its peers.
    fn leave(&self) -> BoxFuture<'_, ()>;

    /// Whether this service decides when a peer's run is gone (a cluster's
    /// membership does). Then a connection that ends with no other to the
    /// same run does not make the peer's actors unreachable: refs to them
    /// wait for a new connection (a reconnect after a reset), until the
    /// service reports the run gone with [`NodeContext::peer_down`].
    /// Without such a service, a lost connection is a lost node. By
    /// default, no.
    fn decides_liveness(&self) -> bool {
        false
    }

    /// Where the actor known by `name` to this service is (a peer's
    /// `footlight.Lookup` asks, when no actor of this node was spawned under
    /// that name). By default, nowhere.
    fn lookup(&self, name: &str) -> Option<Located> {
        let _ = name;
        None
    }
}

/// Where an actor is: its node (id, run and the address to dial), its
/// handle there and its Rust type name. What [`NodeService::lookup`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The node's id.
    pub node: String,
    /// The node's run.
    pub run: u64,
    /// The address other nodes dial to reach it.
    pub addr: String,
    /// The actor's handle on that node.
    pub handle: u64,
    /// The actor's Rust type name.
    pub type_name: String,
}

/// A service's way to act on its node. It does not keep the node alive:
/// once the node is gone, sends report `false` and lookups find nothing.
#[derive(Clone, Debug)]
pub struct NodeContext {
    inner: Weak<NodeInner>,
    id: Arc<str>,
    run: u64,
    advertised: Arc<str>,
}

/// How long [`NodeContext::await_connected`] waits for a connection.
const CONNECT_GRACE: Duration = super::standins::SUCCESSOR_GRACE;

impl NodeContext {
    pub(crate) fn new(node: &Arc<NodeInner>) -> Self {
        NodeContext {
            inner: Arc::downgrade(node),
            id: Arc::from(node.id.as_str()),
            run: node.run,
            advertised: Arc::from(node.advertised.as_str()),
        }
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's run.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The address other nodes dial to reach this one.
    pub fn advertised_addr(&self) -> &str {
        &self.advertised
    }

    /// The node, if it still exists.
    pub fn node(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }

    /// Sends a system message to `to` through its current connection, after
    /// every system message sent to it before, waiting for room rather than
    /// dropping it. False if `to` is not connected.
    pub fn send_system(&self, to: &PeerRun, wire_name: &'static str, payload: Vec<u8>) -> bool {
        let Some(node) = self.inner.upgrade() else { return false };
        match node.peers.current(&to.node, to.run) {
            Some(conn) => conn.system.send((wire_name, payload)).is_ok(),
            None => false,
        }
    }

    /// Sends a system message to `to` as a datagram: queued if its
    /// connection has room now, and dropped rather than sent late: a
    /// connection over which nothing arrived from the peer for 1.5 heartbeat
    /// intervals (a partition not declared yet) drops it instead of letting
    /// it arrive after the heal. False if there is no room or `to` is not
    /// connected. For traffic built for datagrams, such as SWIM packets.
    pub fn send_datagram(&self, to: &PeerRun, wire_name: &'static str, payload: Vec<u8>) -> bool {
        let Some(node) = self.inner.upgrade() else { return false };
        match node.peers.current(&to.node, to.run) {
            Some(conn) => conn.outbox.try_send(Command::Datagram { wire_name, payload }).is_ok(),
            None => false,
        }
    }

    /// The peer runs connected now, in node id order.
    pub fn connected(&self) -> Vec<PeerRun> {
        self.inner.upgrade().map(|node| node.peers.runs()).unwrap_or_default()
    }

    /// Whether `peer` is connected now.
    pub fn is_connected(&self, peer: &PeerRun) -> bool {
        self.inner.upgrade().is_some_and(|node| node.peers.current(&peer.node, peer.run).is_some())
    }

    /// Whether bytes came from `peer` over its connection within one and
    /// a half heartbeat intervals (a quiet connection carries one every
    /// interval, 1 s by default): direct evidence that it is up and
    /// reachable from here.
    pub fn hears(&self, peer: &PeerRun) -> bool {
        self.inner.upgrade().is_some_and(|node| {
            let within = node.session.heartbeat_interval.mul_f32(1.5);
            node.peers.current(&peer.node, peer.run).is_some_and(|conn| conn.stats.heard_within(within))
        })
    }

    /// Waits (up to 2 s) until `peer` is connected; false if it is not by then.
    pub async fn await_connected(&self, peer: &PeerRun) -> bool {
        let Some(node) = self.inner.upgrade() else { return false };
        node.peers.await_current(&peer.node, peer.run, CONNECT_GRACE).await.is_some()
    }

    /// The service decided that run `peer` is gone (see
    /// [`NodeService::decides_liveness`]): refs to its actors fail with
    /// `NodeDown` and their watchers hear so, local actors linked to them
    /// get `NodeDown` exits, and its connection, if any, closes.
    pub fn peer_down(&self, peer: &PeerRun) {
        let Some(node) = self.inner.upgrade() else { return };
        node.run_gone(&peer.node, peer.run);
        self.close_peer(peer);
    }

    /// Closes the connection to `peer` (an orderly close), if there is one.
    pub fn close_peer(&self, peer: &PeerRun) {
        let Some(node) = self.inner.upgrade() else { return };
        if let Some(conn) = node.peers.current(&peer.node, peer.run) {
            tokio::spawn(async move {
                let _ = conn.outbox.send(Command::Close).await;
            });
        }
    }

    /// Dials node `id` at `addr` in the background, unless it is connected
    /// or being dialed already. A dial that cannot reach the node is reported
    /// to the services ([`NodeService::dial_failed`]).
    pub fn connect(&self, id: &str, addr: &str) {
        if let Some(node) = self.inner.upgrade() {
            super::dial::ensure(&node, id, addr);
        }
    }

    /// The addresses `name` resolves to on the node's transport (a DNS
    /// name may give several).
    pub async fn resolve(&self, name: &str) -> Vec<String> {
        let Some(node) = self.inner.upgrade() else { return Vec::new() };
        node.transport.resolve(name).await
    }

    /// Waits until no connection to node `id` is left (or the node shuts
    /// down, or is gone).
    pub async fn disconnected(&self, id: &str) {
        let Some(node) = self.inner.upgrade() else { return };
        let mut stop = node.shutdown.subscribe();
        tokio::select! {
            () = node.peers.gone(id) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
    }

    /// Whether the node is shutting down, has, or is gone.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.upgrade().is_none_or(|node| *node.shutdown.borrow())
    }

    /// Makes local actor `actor` reachable by peers (see
    /// [`Node::expose`]) and returns its handle: the number peers address
    /// it by, the same for the actor's whole life.
    pub fn export<A: RemoteActor>(&self, actor: &ActorRef<A>) -> Result<u64, NodeError> {
        let node = self.inner.upgrade().ok_or(NodeError::Stopped)?;
        node.export(actor)
    }

    /// The handle of local actor `actor`, if it was exported.
    pub fn handle_of<A: actor_core::Actor>(&self, actor: &ActorRef<A>) -> Option<u64> {
        self.inner.upgrade()?.exports.known_handle(actor.id())
    }

    /// The exported local actor with handle `handle`, if it is an `A`.
    pub fn exported<A: actor_core::Actor>(&self, handle: u64) -> Option<ActorRef<A>> {
        let exposed = self.inner.upgrade()?.exports.by_handle(handle)?;
        exposed.actor_any().downcast::<ActorRef<A>>().ok().map(|a| *a)
    }

    /// A ref to the actor with handle `handle` on `peer` (labelled `label`
    /// in logs and `Debug`), if `peer` is connected now.
    pub fn remote_ref<A: actor_core::Actor>(&self, peer: &PeerRun, handle: u64, label: &str) -> Option<ActorRef<A>> {
        let node = self.inner.upgrade()?;
        let conn = node.peers.current(&peer.node, peer.run)?;
        Some(node.remote_ref::<A>(&peer.node, &conn, label, handle))
    }
}

impl NodeContext {
    /// As [`remote_ref`](Self::remote_ref), but the ref does not subscribe
    /// to the actor's end: no watch goes to the peer (a connection accepts
    /// at most 10,000), and nothing is kept on this node for it but the
    /// ref itself. Its sends fail only when the node is lost; messages to
    /// an actor that has ended are dropped by the peer, and the ref's
    /// [`wait_for_stop`](actor_core::ActorRef::wait_for_stop) never returns.
    /// For services that learn of their actors' ends by their own protocol
    /// and hold refs to many remote actors (cluster sharding).
    pub fn remote_ref_unwatched<A: actor_core::Actor>(
        &self,
        peer: &PeerRun,
        handle: u64,
        label: &str,
    ) -> Option<ActorRef<A>> {
        let node = self.inner.upgrade()?;
        let conn = node.peers.current(&peer.node, peer.run)?;
        let endpoint = node.endpoint(&peer.node, conn.run, conn.id, conn.outbox.clone(), handle, label);
        let (actor, _unkept) = actor_core::remote::remote_ref::<A>(Arc::new(endpoint));
        Some(actor)
    }
}

impl Node {
    /// Dials `addr` and returns the peer run its handshake named, once the
    /// connection is in the peer table (or lost the crossed-dial rule to
    /// another connection to the same peer, which then is). A cluster dials
    /// its members itself; this is for plain remoting.
    pub async fn dial(&self, addr: &str) -> Result<PeerRun, NodeError> {
        super::dial::once(&self.inner, addr).await
    }
}

impl NodeInner {
    /// [`NodeContext::export`].
    fn export<A: RemoteActor>(&self, actor: &ActorRef<A>) -> Result<u64, NodeError> {
        if actor.is_remote() {
            return Err(NodeError::NotLocal);
        }
        self.exports.expose::<A>()?;
        self.exports
            .export(std::any::TypeId::of::<A>(), actor.id(), Box::new(actor.clone()))
            .map_err(NodeError::Refused)
    }
}
