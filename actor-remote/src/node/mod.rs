//! [`Node`]: an actor system reachable by other nodes.
//!
//! A node listens on a transport, dials the peers it is asked to, runs the
//! protocol session of every connection, delivers inbound messages to the
//! actors it exports, and hands out [`ActorRef`]s to actors on its peers
//! that work like local ones. Membership, cluster-wide names and groups are
//! services attached to a node ([`NodeService`]; the `actor-cluster` crate).
//!
//! ```
//! # use actor_remote::transport::mem::MemoryNetwork;
//! # use actor_remote::Node;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryNetwork::new();
//! let a = Node::builder("a").transport(net.transport()).listen("a").start().await?;
//! let b = Node::builder("b").transport(net.transport()).listen("b").start().await?;
//! b.dial("a").await?;
//! b.wait_for_peer("a").await?;
//! # a.shutdown().await; b.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A remote ref does `tell`, `try_tell` and `ask` with messages that have a
//! wire name; watching it (or `wait_for_stop`) reports the remote actor's end
//! (its exit reason, carried as text) or the loss of its node
//! (`ExitReason::NodeDown`).
//!
//! The parts, one job each: [`peers`] (the current connection to each peer
//! and the crossed-dial rule), [`dial`], [`exports`] (local actors peers may
//! reach, by name and handle), [`standins`] (local representatives of
//! peers' actors), [`links`] (peers' links to local actors), [`requests`]
//! (what a peer may ask of the node itself), [`service`] (the seam for
//! services), [`conn`] (one task per connection), [`outbox`] (a
//! connection's outbound queue), [`endpoint`] (the far end of a remote ref).

mod builder;
mod codec;
mod conn;
mod dial;
mod endpoint;
mod exports;
mod expose;
mod links;
mod outbox;
mod peers;
mod requests;
mod service;
mod standins;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_core::remote::{StandIn, remote_ref};
use actor_core::{Actor, ActorRef, ActorSystem, ExitReason, SpawnError, SpawnOptions};
use tokio::sync::watch;

pub use self::builder::NodeBuilder;
use self::endpoint::{PeerEndpoint, Route};
use self::exports::Exports;
pub use self::expose::{RemoteActor, RemoteMessages};
use self::links::Links;
use self::outbox::{Command, Outbox};
use self::peers::{PeerConn, Peers};
pub use self::service::{Located, NodeContext, NodeService, PeerRun};
use self::standins::{SUCCESSOR_GRACE, StandIns};
use crate::proto::SessionConfig;
use crate::transport::{Transport, TransportError};

/// An actor system reachable by other nodes. Cheap to clone.
///
/// ```
/// use actor_core::{Actor, ActorRef, Context, Handler, Message};
/// use actor_remote::{Node, RemoteActor, RemoteMessages, transport::mem::MemoryNetwork};
///
/// struct Greeter;
/// impl Actor for Greeter {}
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Greet(String);
/// impl Message for Greet {
///     type Reply = String;
///     fn wire() -> Option<actor_core::Wire<Self>> {
///         Some(actor_remote::codec::wire("demo.Greet")) // what `#[message(remote = "demo.Greet")]` writes
///     }
/// }
/// impl Handler<Greet> for Greeter {
///     async fn handle(&mut self, Greet(who): Greet, _ctx: &mut Context<Self>) -> String {
///         format!("hello {who}")
///     }
/// }
/// impl RemoteActor for Greeter {
///     fn remote_messages(m: &mut RemoteMessages<Self>) {
///         m.add::<Greet>();
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = MemoryNetwork::new();
/// let a = Node::builder("a").transport(net.transport()).listen("a").start().await?;
/// let b = Node::builder("b").transport(net.transport()).listen("b").start().await?;
/// a.spawn_named("greeter", Greeter)?;               // reachable by peers, by name
/// b.dial("a").await?;
/// let greeter: ActorRef<Greeter> = b.lookup("greeter").await?;
/// assert!(greeter.is_remote());
/// assert_eq!(greeter.ask(Greet("b".into())).await?, "hello b");
/// # a.shutdown().await; b.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// A node's state: its identity and configuration, and one owned part per
/// job (see the module docs).
/// One connected peer as [`Node::peer_stats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's node id.
    pub id: String,
    /// The peer's run.
    pub run: u64,
    /// The round trip of the connection's last heartbeat (a `Ping` goes out
    /// when nothing else was sent for a second, and at least every five
    /// seconds), if one was answered. It includes the time the `Ping` and
    /// the `Pong` waited behind other traffic.
    pub rtt: Option<Duration>,
    /// Bytes written to the transport on this connection.
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
    /// Frames queued for the peer on this connection (each message,
    /// request, reply, heartbeat and control frame is one).
    pub frames_sent: u64,
    /// Whole frames read from it.
    pub frames_received: u64,
    /// Tells waiting in the connection's outbound queue, encoded (bytes).
    pub queued_bytes: usize,
    /// Other messages (asks, replies, watches, system messages) waiting
    /// there.
    pub queued_other: usize,
    /// How long this connection has been up.
    pub connected_for: Duration,
    /// Connections opened to this peer since this node started (this one
    /// included): more than one means reconnects.
    pub connections_opened: u64,
}

pub(crate) struct NodeInner {
    pub(crate) id: String,
    addr: String,
    /// The address other nodes dial to reach this one.
    advertised: String,
    pub(crate) run: u64,
    system: ActorSystem,
    transport: Arc<dyn Transport>,
    pub(crate) session: SessionConfig,
    pub(crate) peers: Peers,
    dialing: dial::Dialing,
    pub(crate) exports: Exports,
    pub(crate) stand_ins: StandIns,
    pub(crate) links: Links,
    /// Watches peers hold on this node's actors, over all connections.
    pub(crate) watches: std::sync::atomic::AtomicUsize,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Services attached to the node (membership, the cluster registry).
    services: Vec<Arc<dyn NodeService>>,
    /// Peer runs a service reported gone (kept so that a connection ending
    /// after the report does not park refs to them again).
    pub(crate) gone_runs: Mutex<actor_core::entropy::HashSet<(String, u64)>>,
    /// The task accepting connections (it owns the listener).
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Peer runs remembered as gone; past this, the record starts over (a
/// connection of a forgotten run that ends later then fails its refs after
/// waiting like any other, at worst).
const MAX_GONE_RUNS: usize = 10_000;

/// Errors of [`Node`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A dial reached this node itself (an address or seed name that
    /// resolves to this node).
    #[error("{0} is this node itself")]
    DialedItself(String),
    /// The builder was given no transport.
    #[error("no transport configured")]
    NoTransport,
    /// The builder was given no listen address.
    #[error("no listen address configured")]
    NoListenAddress,
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The actor type is not exposed, or a message it lists has no wire name.
    #[error("cannot expose {actor}: message types without a wire name: {messages:?}")]
    NotRemote {
        /// The actor type.
        actor: &'static str,
        /// Its listed messages that lack `remote = "..."`.
        messages: Vec<&'static str>,
    },
    /// The name is taken.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// No node answered for that name.
    #[error("no actor named {0:?} on this node or its peers")]
    NotFound(String),
    /// An actor with that name exists but is of another type.
    #[error("the actor named {name:?} is a {actual}, not a {expected}")]
    WrongType {
        /// The name looked up.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// The type found.
        actual: String,
    },
    /// The peer did not connect in time.
    #[error("peer {0:?} did not connect in time")]
    PeerTimeout(String),
    /// Only actors of this node can be exported.
    #[error("only actors of this node can be exported")]
    NotLocal,
    /// The node is gone.
    #[error("the node has shut down")]
    Stopped,
    /// The transport's certificate names another node id: peers would refuse
    /// every connection of this node.
    #[error("node {node:?} has a certificate for {certified:?}; its peers would refuse it")]
    IdentityMismatch {
        /// The node's id.
        node: String,
        /// The id its certificate names.
        certified: String,
    },
    /// A limit refused the request.
    #[error("refused: {0}")]
    Refused(String),
}

impl Node {
    /// Starts building a node with id `id` (unique in the cluster).
    ///
    /// ```
    /// # use actor_remote::{Node, transport::mem::MemoryNetwork};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let net = MemoryNetwork::new();
    /// let node = Node::builder("a")
    ///     .transport(net.transport())
    ///     .listen("a")
    ///     .idle_timeout(std::time::Duration::from_secs(3))
    ///     .start()
    ///     .await?;
    /// assert_eq!(node.id(), "a");
    /// # node.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn builder(id: impl Into<String>) -> NodeBuilder {
        let id = id.into();
        NodeBuilder {
            session: SessionConfig::new("footlight", id.clone(), 0),
            id,
            cluster: "footlight".into(),
            transport: None,
            listen: None,
            system: None,
            advertise: None,
            services: Vec::new(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The address this node listens on.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The address other nodes dial to reach this one: the one given to
    /// [`NodeBuilder::advertise`], else [`addr`](Self::addr).
    pub fn advertised_addr(&self) -> &str {
        &self.inner.advertised
    }

    /// This node's run: a number different at every start, so peers tell a
    /// restarted node from its earlier run.
    pub fn run(&self) -> u64 {
        self.inner.run
    }

    /// The actor system local actors run on.
    pub fn system(&self) -> &ActorSystem {
        &self.inner.system
    }

    /// The ids of the peers connected now, in order.
    pub fn peers(&self) -> Vec<String> {
        self.inner.peers.all().into_iter().map(|(id, _)| id).collect()
    }

    /// The peers connected now, in order, with their connection's
    /// counters (for operators: the operations endpoint shows them).
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.inner
            .peers
            .all()
            .into_iter()
            .map(|(id, conn)| {
                let (queued_bytes, queued_other) = conn.outbox.depth();
                PeerStats {
                    connections_opened: self.inner.peers.opens(&id),
                    id,
                    run: conn.run,
                    rtt: conn.stats.rtt(),
                    bytes_sent: conn.stats.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
                    bytes_received: conn.stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
                    frames_sent: conn.stats.frames_out.load(std::sync::atomic::Ordering::Relaxed),
                    frames_received: conn.stats.frames_in.load(std::sync::atomic::Ordering::Relaxed),
                    queued_bytes,
                    queued_other,
                    connected_for: conn.registered_at.elapsed(),
                }
            })
            .collect()
    }

    /// Waits (up to 10 s) until `peer` is connected.
    ///
    /// Returns once the connection is settled: dialed by the node with the
    /// lower id (which no crossed dial can replace), or dialed by the node
    /// with the higher id, 300 ms old and, seen from the higher id,
    /// confirmed by the peer (no dial of its own to this node under way;
    /// after 2 s without word, or 11 s after it said its dial is under way,
    /// it counts as settled anyway); and no dial of this node's to the peer
    /// by id is under way. Messages sent through a
    /// connection that is then replaced may be lost (at-most-once).
    pub async fn wait_for_peer(&self, peer: &str) -> Result<(), NodeError> {
        let settled = self.inner.peers.settled(&self.inner.id, peer, &self.inner.dialing);
        tokio::time::timeout(Duration::from_secs(10), settled)
            .await
            .map_err(|_| NodeError::PeerTimeout(peer.to_owned()))
    }

    /// Lets refs to actors of type `A` on this node travel inside messages
    /// to peers, which may then send them the messages `A`'s
    /// [`RemoteActor`] impl lists. [`spawn_named`](Self::spawn_named) does
    /// this for its actor's type.
    pub fn expose<A: RemoteActor>(&self) -> Result<(), NodeError> {
        self.inner.exports.expose::<A>().map(|_| ())
    }

    /// Spawns `actor` on this node's system under `name`, reachable by peers
    /// with the messages its [`RemoteActor`] impl lists.
    pub fn spawn_named<A: RemoteActor>(&self, name: &str, actor: A) -> Result<ActorRef<A>, NodeError> {
        let table = self.inner.exports.expose::<A>()?;
        let actor = self.inner.system.spawn_with(actor, SpawnOptions::new().name(name))?;
        self.inner.exports.add_named(name, &actor, table);
        Ok(actor)
    }

    /// A ref to the actor named `name`: an actor of this node's system
    /// registered under that name; else one that a connected peer spawned
    /// under it with [`spawn_named`](Self::spawn_named) (asked in id order).
    /// The cluster's lookup also finds cluster-wide names.
    pub async fn lookup<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, NodeError> {
        let wrong_type = |actual: String| NodeError::WrongType {
            name: name.to_owned(),
            expected: std::any::type_name::<A>(),
            actual,
        };
        match self.inner.system.lookup::<A>(name) {
            Ok(local) => return Ok(local),
            Err(actor_core::LookupError::WrongType { actual, .. }) => return Err(wrong_type(actual.to_owned())),
            Err(_) => {}
        }
        for (peer, mut conn) in self.inner.peers.all() {
            let mut reply = requests::lookup(&conn.outbox, name).await;
            if matches!(reply, Err(actor_core::remote::RemoteError::NodeDown)) {
                // The connection was replaced by another to the same run of
                // the peer (crossed dials settling): ask there.
                if let Some(next) = self.inner.peers.await_current(&peer, conn.run, SUCCESSOR_GRACE).await {
                    conn = next;
                    reply = requests::lookup(&conn.outbox, name).await;
                }
            }
            let Ok(found) = reply else { continue };
            if found.type_name != std::any::type_name::<A>() {
                return Err(wrong_type(found.type_name));
            }
            // Held by the answering peer, or by another node it names (a
            // cluster-wide name): this node itself, or a node reached through
            // this node's connection to it (dialed at the address given, if
            // there is none yet).
            let holder = match (found.node, found.run) {
                (Some(node), Some(run)) if node == self.inner.id => {
                    if run != self.inner.run {
                        continue;
                    }
                    let Some(local) = self.inner.exports.by_handle(found.id) else { continue };
                    match local.actor_any().downcast::<ActorRef<A>>() {
                        Ok(actor) => return Ok(*actor),
                        Err(_) => continue,
                    }
                }
                (Some(node), Some(run)) if node != peer => {
                    if self.inner.peers.current(&node, run).is_none()
                        && let Some(addr) = &found.addr
                    {
                        dial::ensure(&self.inner, &node, addr);
                    }
                    match self.inner.peers.await_current(&node, run, SUCCESSOR_GRACE).await {
                        Some(holder) => Some((node, holder)),
                        None => continue,
                    }
                }
                _ => None,
            };
            let (peer, conn) = holder.unwrap_or((peer, conn));
            return Ok(self.inner.remote_ref::<A>(&peer, &conn, name, found.id));
        }
        Err(NodeError::NotFound(name.to_owned()))
    }

    /// Lets every attached service say goodbye (the cluster leaves, so
    /// members report the departure at once), closes every connection (peers
    /// see an orderly close, behind what was queued for them before the
    /// shutdown began, as far as each connection's outbound limit allows),
    /// stops accepting new ones and frees the listen address, and shuts the
    /// actor system down.
    pub async fn shutdown(&self) {
        for service in &self.inner.services {
            service.leave().await;
        }
        // `send_replace`: stored even while nothing subscribes yet (a task that
        // has not run subscribes later and must see it).
        self.inner.shutdown.send_replace(true);
        // The listen address is free again once shutdown returns.
        let accepting = self.inner.accepting.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = accepting {
            let _ = task.await;
        }
        let conns = self.inner.peers.drain();
        for conn in &conns {
            let _ = conn.outbox.send(Command::Close).await;
        }
        for conn in conns {
            conn.outbox.closed().await;
        }
        for parked in self.inner.stand_ins.unpark_all() {
            parked.terminate_all(&ExitReason::NodeDown);
        }
        // Sockets go, even while clones of this node live on.
        self.inner.transport.shutdown().await;
        self.inner.system.shutdown().await;
    }
}

/// Sends a peer what this node says of the connection (see
/// [`requests::SETTLE`]).
fn say_settle(system: &conn::SystemSender, stays: bool) {
    match crate::codec::encode(&stays) {
        Ok(payload) => {
            let _ = system.send((requests::SETTLE, payload));
        }
        Err(e) => tracing::error!(error = %e, "settle message failed to encode"),
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).field("addr", &self.inner.addr).finish()
    }
}

/// A connection's life as the node sees it: it comes up, may be replaced,
/// and ends; what hangs on it (stand-ins, links) follows.
impl NodeInner {
    /// A connection to `peer` completed its handshake: it becomes the peer's
    /// current one unless the crossed-dial rule keeps the existing one
    /// (false: it must close as a duplicate).
    pub(crate) fn connection_up(&self, peer: &str, conn: PeerConn) -> bool {
        let (conn_id, run, outbox) = (conn.id, conn.run, conn.outbox.clone());
        // This node has the lower id and the peer dialed: only a dial of
        // this node's can replace the connection, and the peer waits to hear
        // whether one is under way.
        let says = (self.id.as_str() < peer && conn.dialer == peer).then(|| (conn.settle.clone(), conn.system.clone()));
        let Some(replaced) = self.peers.insert(&self.id, peer, conn) else { return false };
        // A dial of this node's to the peer that has not got past connecting
        // is not needed any more (and, to an address the peer's run has
        // left, would hold the connection unsettled until its timeout).
        if self.dialing.call_off(peer) {
            self.peers.touch();
        }
        if let Some((settle, system)) = says {
            // After the insert: a dial claimed from now on sees the
            // connection and does not start (see `dial::ensure`).
            let stays = !self.dialing.may_reach(peer);
            if stays && settle.set(true) {
                self.peers.touch();
            }
            say_settle(&system, stays);
        }
        if let Some(old) = replaced {
            // The same run: a duplicate (crossed dial or reconnect); an
            // older run: that run is gone.
            let close = if old.run == run { Command::Replaced } else { Command::Close };
            tracing::debug!(node = %self.id, %peer, "replacing the connection (crossed dial, reconnect or restart)");
            tokio::spawn(async move {
                let _ = old.outbox.send(close).await;
            });
        }
        // Services first (the registry's full copy goes out before anything
        // else of theirs), then refs waiting for this connection.
        let peer_run = PeerRun { node: peer.to_owned(), run };
        for service in &self.services {
            service.peer_connected(&peer_run);
        }
        if let Some(parked) = self.stand_ins.unpark(peer, run) {
            self.stand_ins.rehome(parked, conn_id, &outbox);
        }
        true
    }

    /// Connection `conn_id` to `peer` (run `run`, if the handshake named
    /// it) ended. If another connection to the same run has replaced it
    /// (crossed dials, reconnect), its stand-ins and links move over;
    /// otherwise, unless it closed as a `duplicate` (the other side keeps a
    /// connection this side does not have yet: they wait for it a little),
    /// the peer's actors are out of reach: `NodeDown`.
    pub(crate) fn connection_ended(self: &Arc<Self>, peer: &str, conn_id: u64, run: Option<u64>, duplicate: bool) {
        // A duplicate's end means a successor is expected: said before the
        // connection leaves the table, so that a request finding it gone
        // knows to wait for the successor rather than report NodeDown.
        if duplicate && let Some(run) = run {
            self.stand_ins.park(peer, run, Default::default());
        }
        let (removed, successor) = self.peers.remove(peer, conn_id, run);
        let Some(run) = run else { return };
        if removed && successor.is_none() {
            let peer_run = PeerRun { node: peer.to_owned(), run };
            for service in &self.services {
                service.peer_disconnected(&peer_run);
            }
        }
        let moved = self.stand_ins.take(conn_id);
        match successor {
            // Stand-ins move over; links are per run and stay.
            Some(next) => {
                if let Some(parked) = self.stand_ins.unpark(peer, run) {
                    self.stand_ins.rehome(parked, next.id, &next.outbox);
                }
                if !moved.is_empty() {
                    self.stand_ins.rehome(moved, next.id, &next.outbox);
                }
            }
            // The other side keeps a connection this side does not have
            // yet: stand-ins, links and requests wait for it, once, a
            // little. Parked even with no stand-ins: the entry is what tells
            // a request on the closed connection that a successor is
            // expected (else it would fail with NodeDown, the peer up).
            None if duplicate => {
                self.stand_ins.park(peer, run, moved);
                let (node, peer) = (Arc::downgrade(self), peer.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(SUCCESSOR_GRACE).await;
                    let Some(node) = node.upgrade() else { return };
                    if let Some(expired) = node.stand_ins.unpark(&peer, run) {
                        expired.terminate_all(&ExitReason::NodeDown);
                    }
                    if node.peers.current(&peer, run).is_none() {
                        node.links_lost(&peer, run, conn_id);
                    }
                });
            }
            // A service decides when the run is gone (a cluster's
            // membership): the refs wait for a new connection, unless it
            // has decided already.
            None if self.liveness_by_service() && !self.is_gone(peer, run) => {
                tracing::debug!(node = %self.id, %peer, "connection lost; refs to the peer wait for a new one");
                self.stand_ins.park(peer, run, moved);
            }
            None => {
                self.links_lost(peer, run, conn_id);
                moved.terminate_all(&ExitReason::NodeDown);
            }
        }
    }

    /// Tells each peer that dialed this node (the lower id) and has not
    /// heard it yet that its connection stays, unless a dial of this node's
    /// may still reach it.
    pub(crate) fn settle_dialed_by_peers(&self) {
        for (peer, conn) in self.peers.unsettled_dialed_by_peers(&self.id) {
            if !self.dialing.may_reach(&peer) {
                let _ = conn.settle.set(true);
                say_settle(&conn.system, true);
            }
        }
        self.peers.touch();
    }

    /// Whether a service decides when peers' runs are gone.
    fn liveness_by_service(&self) -> bool {
        self.services.iter().any(|s| s.decides_liveness())
    }

    fn is_gone(&self, peer: &str, run: u64) -> bool {
        self.gone_runs.lock().unwrap_or_else(|p| p.into_inner()).contains(&(peer.to_owned(), run))
    }

    /// A service reported run `run` of `peer` gone: refs waiting for a new
    /// connection to it fail with `NodeDown`, links to its actors fire.
    pub(crate) fn run_gone(&self, peer: &str, run: u64) {
        {
            let mut gone = self.gone_runs.lock().unwrap_or_else(|p| p.into_inner());
            if gone.len() >= MAX_GONE_RUNS {
                gone.clear();
            }
            gone.insert((peer.to_owned(), run));
        }
        if let Some(parked) = self.stand_ins.unpark(peer, run) {
            parked.terminate_all(&ExitReason::NodeDown);
        }
        if self.peers.current(peer, run).is_none() {
            self.links_lost(peer, run, 0);
        }
    }

    /// A run of a peer is gone: local actors linked to its actors get
    /// `NodeDown` link exits.
    fn links_lost(&self, peer: &str, run: u64, conn_id: u64) {
        let lost = self.links.take_run(peer, run);
        if *self.shutdown.borrow() {
            // This node is stopping its actors itself: no exits in between.
            return;
        }
        for (target, linker) in lost {
            if let Some(actor) = self.exports.resolve_ref(crate::proto::frame::TargetRef::Id(target)) {
                actor.link_exit(self.linker_id(conn_id, linker), ExitReason::NodeDown);
            }
        }
    }

    /// The id local actors know a peer's actor by: its stand-in's, if there
    /// is one on this connection, else a fresh one.
    pub(crate) fn linker_id(&self, conn_id: u64, linker: u64) -> actor_core::ActorId {
        self.stand_ins.local_id(conn_id, linker).unwrap_or_else(actor_core::ActorId::fresh)
    }

    /// A ref to the peer's actor `id` through connection `conn`: the one
    /// handed out before if it is still in use, else a new stand-in.
    fn remote_ref<A: Actor>(self: &Arc<Self>, peer: &str, conn: &PeerConn, name: &str, id: u64) -> ActorRef<A> {
        if let Some(existing) = self.stand_ins.reuse::<A>(conn.id, id) {
            return existing;
        }
        let endpoint = self.endpoint(peer, conn.run, conn.id, conn.outbox.clone(), id, name);
        let (actor, stand_in) = remote_ref::<A>(Arc::new(endpoint));
        self.adopt_stand_in(conn.id, peer, conn.run, id, stand_in, Some(Box::new(actor.downgrade())));
        actor
    }

    /// The endpoint of a ref to actor `id` (handle) of run `run` of `peer`,
    /// reached through connection `conn_id` for now.
    pub(crate) fn endpoint(
        self: &Arc<Self>,
        peer: &str,
        run: u64,
        conn_id: u64,
        outbox: Outbox,
        id: u64,
        label: &str,
    ) -> PeerEndpoint {
        let codec = Arc::new(codec::ConnCodec::new(self, conn_id, peer, run, outbox.clone()));
        PeerEndpoint {
            route: Arc::new(Route::new(Arc::downgrade(self), peer.to_owned(), run, outbox)),
            soon: Arc::default(),
            handle: id,
            label: format!("{label}@{peer}"),
            addr: actor_core::RefAddr { node: peer.to_owned(), run, id },
            codec,
        }
    }

    /// Keeps a stand-in of the peer's actor `id` on connection `conn_id`,
    /// so its end gets reported. `latest` (a `WeakActorRef<A>`) is the ref
    /// later lookups may reuse.
    pub(crate) fn adopt_stand_in(
        self: &Arc<Self>,
        conn_id: u64,
        peer: &str,
        run: u64,
        id: u64,
        stand_in: StandIn,
        latest: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) {
        let first = self.stand_ins.adopt(conn_id, id, stand_in, latest);
        match self.peers.current_outbox(peer, conn_id) {
            // The first ref to this actor subscribes to its end.
            Some(outbox) if first => standins::send_watch(&outbox, id),
            Some(_) => {}
            // Not the peer's current connection (any more): move the
            // stand-in to its successor, park it, or report the node gone.
            None => self.connection_ended(peer, conn_id, Some(run), true),
        }
    }
}

#[cfg(test)]
mod tests;
