//! [`Node`]: an actor system reachable by other nodes.
//!
//! A node listens on a transport, dials the peers it is asked to, runs the
//! protocol session of every connection, delivers inbound messages to the
//! actors it exposed, and hands out [`ActorRef`]s to actors on its peers that
//! work like local ones. Membership, cluster-wide names and groups are
//! services attached to a node (see [`NodeService`]; the `actor-cluster`
//! crate).
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

mod codec;
mod conn;
mod endpoint;
mod expose;
mod outbox;
mod service;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actor_core::{Actor, ActorRef, ActorSystem, ExitReason, RemoteHandle, SpawnError, SpawnOptions, WeakActorRef};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use outbox::Commands;

use self::conn::ConnHandle;
use self::endpoint::{Command, PeerEndpoint};
use self::expose::{Exposed, ExposedActor, ReplyFuture};
pub use self::expose::{RemoteActor, RemoteMessages};
pub use self::service::{NodeService, PeerRun, WeakNode};
use crate::proto::frame::Target;
use crate::proto::{FailureCode, SessionConfig};
use crate::transport::{Transport, TransportError};

/// Actors a node exposes by handle, and stand-ins one connection may hold:
/// past these, refs in messages are refused.
pub(crate) const MAX_REFS_PER_PEER: usize = 100_000;

/// How long a connection dialed by the node with the higher id stays
/// unsettled: a crossed dial from the other node may still replace it.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);

/// How long refs of a connection closed as a duplicate wait for the
/// connection that replaces it (the other side keeps it and is completing it).
pub(crate) const SUCCESSOR_GRACE: Duration = Duration::from_secs(2);

/// The reserved target name of a node's own requests (lookups).
pub(crate) const SYSTEM_TARGET: &str = "$node";
/// Wire name of a request to stop an actor (payload: its handle, u64).
pub(crate) const STOP: &str = "footlight.Stop";
/// How long dialing a member may take (connect and handshake).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const LOOKUP: &str = "footlight.Lookup";

/// Builds a [`Node`].
pub struct NodeBuilder {
    id: String,
    cluster: String,
    transport: Option<Arc<dyn Transport>>,
    listen: Option<String>,
    session: SessionConfig,
    system: Option<ActorSystem>,
    advertise: Option<String>,
    services: Vec<Arc<dyn NodeService>>,
}

impl NodeBuilder {
    /// The cluster name (default `"footlight"`); nodes of other clusters are
    /// refused during the handshake.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// The transport (required).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Where to listen for peers (required: peers dial this address).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The address other members dial to reach this node, if not the one
    /// it listens on (say, behind NAT, or listening on `0.0.0.0`).
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// Attaches a service (membership and the cluster registry are one:
    /// `actor-cluster`); see [`NodeService`].
    pub fn service(mut self, service: Arc<dyn NodeService>) -> Self {
        self.services.push(service);
        self
    }

    /// The actor system to run on (default: a new one named after the node).
    pub fn system(mut self, system: ActorSystem) -> Self {
        self.system = Some(system);
        self
    }

    /// Silence after which a peer is declared lost (default 5 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.session.idle_timeout = timeout;
        self
    }

    /// Interval of heartbeats on quiet connections (default 1 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.session.heartbeat_interval = interval;
        self
    }

    /// The largest frame accepted from peers (default 1 MiB; at least
    /// 64 KiB, which membership and registry frames need; at most 16 MiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.session.max_frame = bytes.clamp(64 * 1024, 16 * 1024 * 1024);
        self
    }

    /// Encoded bytes buffered per connection before senders wait (default
    /// 4 MiB; with the bounded outbound queue in front of it, 1024 commands
    /// and 256 KiB of encoded tells, this is what holds memory per peer in
    /// check).
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.session.max_outbound_bytes = bytes.max(1);
        self
    }

    /// Asks pending to one peer before more are refused (default 10 000).
    pub fn max_pending_asks(mut self, asks: usize) -> Self {
        self.session.max_pending_asks = asks;
        self
    }

    /// Starts listening.
    pub async fn start(self) -> Result<Node, NodeError> {
        let transport = self.transport.ok_or(NodeError::NoTransport)?;
        let listen = self.listen.ok_or(NodeError::NoListenAddress)?;
        let mut listener = transport.listen(&listen).await?;
        let addr = listener.local_addr();
        let incarnation = incarnation();
        let mut session = self.session;
        session.cluster = self.cluster.clone();
        session.node = self.id.clone();
        session.incarnation = incarnation;
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(NodeInner {
            id: self.id.clone(),
            advertised: self.advertise.unwrap_or(addr.clone()),
            addr,
            incarnation,
            system: self.system.unwrap_or_else(|| ActorSystem::new(self.id.clone())),
            transport,
            session,
            peers: Mutex::new(HashMap::new()),
            peer_changed: watch::channel(0u64).0,
            exposed: DashMap::new(),
            exposed_ids: DashMap::new(),
            exporters: DashMap::new(),
            proxies: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            remote_links: Mutex::new(HashMap::new()),
            handles: DashMap::new(),
            handle_keys: std::hash::RandomState::new(),
            shutdown,
            dialing: Mutex::new(std::collections::HashSet::new()),
            services: self.services,
            accepting: Mutex::new(None),
        });
        for service in &inner.services {
            service.started(&Node { inner: inner.clone() });
        }
        let node = inner.clone();
        let accepting = tokio::spawn(async move {
            let mut stop = node.shutdown.subscribe();
            loop {
                tokio::select! {
                    conn = listener.accept() => match conn {
                        Ok(conn) => {
                            tokio::spawn(conn::run(node.clone(), conn, false, None));
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.id, error = %e, "listener stopped");
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
        });
        *inner.accepting.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepting);
        Ok(Node { inner })
    }
}

/// A node's incarnation: different at every start (time-based, made unique
/// within the process).
fn incarnation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// An actor system reachable by other nodes. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    pub(crate) id: String,
    addr: String,
    /// The address other nodes dial to reach this one.
    advertised: String,
    incarnation: u64,
    system: ActorSystem,
    transport: Arc<dyn Transport>,
    pub(crate) session: SessionConfig,
    peers: Mutex<HashMap<String, ConnHandle>>,
    /// Bumped whenever the peer set changes.
    peer_changed: watch::Sender<u64>,
    exposed: DashMap<String, Arc<dyn Exposed>>,
    /// Exposed actors by handle (see `handles`), with their name if any.
    pub(crate) exposed_ids: DashMap<u64, (String, Arc<dyn Exposed>)>,
    /// Per exposed actor type: makes an actor of that type reachable by
    /// peers (its `ActorRef<A>`, boxed, in; its exposure out), so refs to
    /// it can be sent inside messages.
    exporters: DashMap<std::any::TypeId, Exporter>,
    /// Stand-ins of remote actors, per connection and remote actor id: told
    /// when the actor stops or the connection ends (a ref is bound to the
    /// connection it was looked up through).
    proxies: Mutex<HashMap<u64, HashMap<u64, Proxies>>>,
    /// Stand-ins of a connection closed as a duplicate before this side had
    /// the connection that replaced it: they wait (up to [`SUCCESSOR_GRACE`])
    /// for a connection to the same run of the peer.
    orphans: Mutex<HashMap<(String, u64), HashMap<u64, Proxies>>>,
    /// Links from actors of a peer's run to local actors, as
    /// `(local actor's handle, peer actor's handle)`: the local actor hears
    /// when the peer's exits, or when that run is lost.
    remote_links: Mutex<RemoteLinks>,
    /// The handle under which each exposed local actor is reachable: a
    /// random-looking 64-bit number (SipHash with this run's secret keys over
    /// the actor's id), so a peer reaches only actors whose handle it was
    /// given (by a lookup or in a message), never one it guesses. An actor's
    /// handle is the same for its whole life, also after this cache forgot
    /// it (links name their actors by handle).
    handles: DashMap<u64, u64>,
    handle_keys: std::hash::RandomState,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Nodes being dialed now (by id).
    dialing: Mutex<std::collections::HashSet<String>>,
    /// Services attached to the node (membership, the cluster registry).
    services: Vec<Arc<dyn NodeService>>,
    /// The task accepting connections (it owns the listener).
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Errors of [`Node`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
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
    /// A limit refused the request.
    #[error("refused: {0}")]
    Refused(String),
}

type Exporter = Arc<dyn Fn(Box<dyn std::any::Any + Send + Sync>) -> Option<Arc<dyn Exposed>> + Send + Sync>;

/// Moves `moved` into `into`, joining the stand-ins of an actor present in
/// both; returns the actors that were not there yet.
fn merge_proxies(into: &mut HashMap<u64, Proxies>, moved: HashMap<u64, Proxies>) -> Vec<u64> {
    let mut added = Vec::new();
    for (id, mut entry) in moved {
        match into.get_mut(&id) {
            Some(existing) => existing.handles.append(&mut entry.handles),
            None => {
                into.insert(id, entry);
                added.push(id);
            }
        }
    }
    added
}

/// Asks the peer behind `commands` to report the end of its actor `id`.
fn send_watch(commands: &Commands, id: u64) {
    if let Err(mpsc::error::TrySendError::Full(cmd)) = commands.try_send(Command::Watch { id }) {
        let commands = commands.clone();
        tokio::spawn(async move {
            let _ = commands.send(cmd).await;
        });
    }
}

/// An exit reason as a peer carries it (text): `Normal` and `Shutdown` come
/// back as such, anything else as `Failed`.
fn exit_reason(text: &str) -> ExitReason {
    match text {
        "normal" => ExitReason::Normal,
        "shutdown" => ExitReason::Shutdown,
        other => ExitReason::Failed(format!("remote: {other}")),
    }
}

/// Per run of a peer (node id, run): its links to local actors, as
/// `(local actor's handle, peer actor's handle)`.
type RemoteLinks = HashMap<(String, u64), std::collections::HashSet<(u64, u64)>>;

/// Links one peer may make to this node's actors.
const MAX_LINKS_PER_PEER: usize = 10_000;

/// The stand-ins of one remote actor on one connection.
struct Proxies {
    /// Kept while anything may need them: a stand-in that is watched must
    /// hear of its actor's end even after every ref to it was dropped.
    handles: Vec<RemoteHandle>,
    /// The latest ref handed out (a `WeakActorRef<A>`), reused by lookups.
    latest: Box<dyn std::any::Any + Send + Sync>,
}

#[derive(Serialize, Deserialize)]
struct LookupReply {
    id: u64,
    type_name: String,
}

impl Node {
    /// Starts building a node with id `id` (unique in the cluster).
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
        self.inner.incarnation
    }

    /// The actor system local actors run on.
    pub fn system(&self) -> &ActorSystem {
        &self.inner.system
    }

    /// The ids of the peers connected now.
    pub fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.inner.lock_peers().keys().cloned().collect();
        peers.sort();
        peers
    }

    /// Waits (up to 10 s) until `peer` is connected.
    ///
    /// Returns once the connection is settled: dialed by the node with the
    /// lower id (which no crossed dial can replace), or in place for
    /// 300 ms without such a replacement arriving. Messages sent through a
    /// connection that is then replaced may be lost (at-most-once).
    pub async fn wait_for_peer(&self, peer: &str) -> Result<(), NodeError> {
        let mut changed = self.inner.peer_changed.subscribe();
        let wait = async {
            loop {
                let settles_at = self.inner.lock_peers().get(peer).map(|h| {
                    let preferred = h.dialer == self.inner.id.as_str().min(peer);
                    if preferred { tokio::time::Instant::now() } else { h.registered_at + SETTLE }
                });
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
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.map_err(|_| NodeError::PeerTimeout(peer.to_owned()))
    }

    /// Lets refs to actors of type `A` on this node travel inside messages
    /// to peers, which may then send them the messages `A`'s
    /// [`RemoteActor`] impl lists. [`spawn_named`](Self::spawn_named) does
    /// this for its actor's type.
    pub fn expose<A: RemoteActor>(&self) -> Result<(), NodeError> {
        self.table::<A>().map(|_| ())
    }

    fn table<A: RemoteActor>(&self) -> Result<Arc<expose::DispatchTable<A>>, NodeError> {
        let mut messages = RemoteMessages::new();
        A::remote_messages(&mut messages);
        let (table, missing) = messages.into_parts();
        if !missing.is_empty() {
            return Err(NodeError::NotRemote { actor: std::any::type_name::<A>(), messages: missing });
        }
        let table = Arc::new(table);
        let for_exporter = table.clone();
        let exporter: Exporter = Arc::new(move |any| {
            let actor = any.downcast::<ActorRef<A>>().ok()?;
            Some(Arc::new(ExposedActor { actor: *actor, table: for_exporter.clone() }) as Arc<dyn Exposed>)
        });
        self.inner.exporters.insert(std::any::TypeId::of::<A>(), exporter);
        Ok(table)
    }

    /// Spawns `actor` on this node's system under `name`, reachable by peers
    /// with the messages its [`RemoteActor`] impl lists.
    pub fn spawn_named<A: RemoteActor>(&self, name: &str, actor: A) -> Result<ActorRef<A>, NodeError> {
        let table = self.table::<A>()?;
        let actor = self.inner.system.spawn_with(actor, SpawnOptions::new().name(name))?;
        let exposed: Arc<dyn Exposed> = Arc::new(ExposedActor { actor: actor.clone(), table });
        self.inner.exposed.insert(name.to_owned(), exposed.clone());
        let handle = self.inner.handle_of(actor.id());
        self.inner.exposed_ids.insert(handle, (name.to_owned(), exposed));
        Ok(actor)
    }

    /// A ref to the actor named `name`: an actor of this node's system
    /// registered under that name; else one that a connected peer spawned
    /// under it with [`spawn_named`](Self::spawn_named) (asked in id order).
    /// The cluster's lookup also finds cluster-wide names.
    pub async fn lookup<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, NodeError> {
        match self.inner.system.lookup::<A>(name) {
            Ok(local) => return Ok(local),
            Err(actor_core::LookupError::WrongType { actual, .. }) => {
                return Err(NodeError::WrongType {
                    name: name.to_owned(),
                    expected: std::any::type_name::<A>(),
                    actual: actual.to_owned(),
                });
            }
            Err(_) => {}
        }
        let peers: Vec<(String, ConnHandle)> =
            self.inner.lock_peers().iter().map(|(id, h)| (id.clone(), h.clone_handle())).collect();
        let mut sorted = peers;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (peer, mut handle) in sorted {
            let payload = crate::codec::encode(&name.to_owned()).map_err(|_| NodeError::NotFound(name.to_owned()))?;
            let ask = |commands: Commands, payload: Vec<u8>| async move {
                let target = Target::name(SYSTEM_TARGET);
                endpoint::ask(&commands, target, LOOKUP, payload, Duration::from_secs(5)).await
            };
            let mut reply = ask(handle.commands.clone(), payload.clone()).await;
            if matches!(reply, Err(actor_core::RemoteError::NodeDown)) {
                // The connection was replaced by another to the same run of
                // the peer (crossed dials settling): ask there.
                if let Some(next) = self.inner.await_connection_to(&peer, handle.incarnation).await {
                    handle = next;
                    reply = ask(handle.commands.clone(), payload).await;
                }
            }
            let Ok(bytes) = reply else { continue };
            let Ok(found) = crate::codec::decode::<LookupReply>(&bytes) else { continue };
            if found.type_name != std::any::type_name::<A>() {
                return Err(NodeError::WrongType {
                    name: name.to_owned(),
                    expected: std::any::type_name::<A>(),
                    actual: found.type_name,
                });
            }
            return Ok(self.inner.remote_ref::<A>(&peer, &handle, name, found.id));
        }
        Err(NodeError::NotFound(name.to_owned()))
    }

    /// Lets every attached service say goodbye (the cluster leaves, so
    /// members report the departure at once), closes every connection (peers
    /// see an orderly close), stops accepting new ones and frees the listen
    /// address, and shuts the actor system down.
    pub async fn shutdown(&self) {
        for service in &self.inner.services {
            service.leave().await;
        }
        let _ = self.inner.shutdown.send(true);
        // The listen address is free again once shutdown returns.
        let accepting = self.inner.accepting.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = accepting {
            let _ = task.await;
        }
        let handles: Vec<ConnHandle> = self.inner.lock_peers().drain().map(|(_, h)| h).collect();
        for h in &handles {
            let _ = h.commands.send(endpoint::Command::Close).await;
        }
        for h in handles {
            h.commands.closed().await;
        }
        let orphans: Vec<_> = self.inner.orphans.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for proxy in orphans.iter().flat_map(|(_, m)| m.values()).flat_map(|p| &p.handles) {
            proxy.terminate(ExitReason::NodeDown);
        }
        self.inner.system.shutdown().await;
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).field("addr", &self.inner.addr).finish()
    }
}

impl ConnHandle {
    fn clone_handle(&self) -> ConnHandle {
        ConnHandle {
            id: self.id,
            commands: self.commands.clone(),
            system: self.system.clone(),
            dialer: self.dialer.clone(),
            incarnation: self.incarnation,
            registered_at: self.registered_at,
        }
    }
}

impl NodeInner {
    /// A system tell from run `run` of `peer`: a stop request, or a
    /// service's.
    pub(crate) fn system_tell(&self, peer: &str, run: u64, wire_name: &str, payload: Vec<u8>) {
        if let Some(service) = self.services.iter().find(|s| s.handles(wire_name)) {
            service.system_message(&PeerRun { node: peer.to_owned(), run }, wire_name, payload);
            return;
        }
        match wire_name {
            STOP => match crate::codec::decode::<u64>(&payload) {
                // Only an exposed actor, by the handle the peer was given.
                Ok(id) => match self.exposed_ids.get(&id).map(|e| e.value().1.clone()) {
                    Some(actor) => {
                        tracing::debug!(node = %self.id, %peer, actor = id, "stopping an actor at a peer's request");
                        actor.stop();
                    }
                    None => tracing::debug!(node = %self.id, %peer, "stop request for an unknown actor"),
                },
                Err(_) => tracing::warn!(node = %self.id, %peer, "malformed stop request; ignored"),
            },
            other => tracing::warn!(node = %self.id, %peer, wire_name = %other, "unknown system message; ignored"),
        }
    }

    /// Dials node `id` at `addr` unless connected or being dialed.
    pub(crate) fn ensure_connection(self: &Arc<Self>, id: &str, addr: &str) {
        if *self.shutdown.borrow() || id == self.id {
            return;
        }
        if self.lock_peers().get(id).is_some_and(|h| !h.commands.is_closed()) {
            return;
        }
        if !self.dialing.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned()) {
            return;
        }
        let (node, id, addr) = (self.clone(), id.to_owned(), addr.to_owned());
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
            if let Some(conn) = conn {
                let (tx, rx) = oneshot::channel();
                let task = tokio::spawn(conn::run(node.clone(), conn, true, Some(tx)));
                // Done dialing once the handshake is over (or failed).
                let _ = tokio::time::timeout(DIAL_TIMEOUT, rx).await;
                node.dialing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                let _ = task.await;
            } else {
                node.dialing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                for service in &node.services {
                    service.dial_failed(&id);
                }
            }
        });
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<String, ConnHandle>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an established connection; returns false if it must close.
    /// When two connections join the same pair of nodes: a newer incarnation
    /// of the peer wins; else the one dialed by the node with the lower id
    /// (both sides agree); else (same dialer) the newer one.
    pub(crate) fn register_peer(&self, peer: &str, handle: ConnHandle) -> bool {
        let mut peers = self.lock_peers();
        if let Some(existing) = peers.get(peer) {
            let preferred = self.id.as_str().min(peer);
            let keep_existing = if existing.incarnation != handle.incarnation {
                // The peer restarted: its newer run wins.
                existing.incarnation > handle.incarnation
            } else if existing.dialer != handle.dialer {
                existing.dialer == preferred
            } else {
                // Dialed twice by the same side (a reconnect while the old
                // connection is not known dead yet): the newer one wins.
                false
            };
            if keep_existing {
                return false;
            }
            tracing::debug!(node = %self.id, %peer, "replacing the connection (crossed dial or reconnect)");
            let old = existing.commands.clone();
            tokio::spawn(async move {
                let _ = old.send(endpoint::Command::Close).await;
            });
        }
        let (conn_id, incarnation, commands) = (handle.id, handle.incarnation, handle.commands.clone());
        peers.insert(peer.to_owned(), handle);
        drop(peers);
        // Services first (the registry's full copy goes out before anything
        // else of theirs), then refs waiting for this connection.
        let run = PeerRun { node: peer.to_owned(), run: incarnation };
        for service in &self.services {
            service.peer_connected(&run);
        }
        let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner()).remove(&(peer.to_owned(), incarnation));
        if let Some(orphans) = orphans {
            self.rehome(orphans, conn_id, commands);
        }
        self.peer_changed.send_modify(|n| *n += 1);
        true
    }

    /// Moves stand-ins to connection `conn_id` and renews their watches there.
    fn rehome(&self, moved: HashMap<u64, Proxies>, conn_id: u64, commands: Commands) {
        let renew =
            merge_proxies(self.proxies.lock().unwrap_or_else(|p| p.into_inner()).entry(conn_id).or_default(), moved);
        for id in renew {
            send_watch(&commands, id);
        }
    }

    /// Waits (up to [`SUCCESSOR_GRACE`]) for a live connection to run
    /// `incarnation` of `peer`.
    pub(crate) async fn await_connection_to(&self, peer: &str, incarnation: u64) -> Option<ConnHandle> {
        let mut changed = self.peer_changed.subscribe();
        let wait = async {
            loop {
                if let Some(h) = self.connection_to(peer, incarnation) {
                    return Some(h);
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(SUCCESSOR_GRACE, wait).await.ok().flatten()
    }

    /// The live connection to run `incarnation` of `peer`, if any.
    pub(crate) fn connection_to(&self, peer: &str, incarnation: u64) -> Option<ConnHandle> {
        self.lock_peers()
            .get(peer)
            .filter(|h| h.incarnation == incarnation && !h.commands.is_closed())
            .map(ConnHandle::clone_handle)
    }

    /// A connection ended: forget it (if it is still the peer's). If another
    /// connection to the same run of the peer has replaced it (crossed dials,
    /// reconnect), refs bound to it move over and their watches are renewed
    /// there; otherwise their actors are out of reach: `NodeDown`.
    pub(crate) fn peer_lost(self: &Arc<Self>, peer: &str, conn_id: u64, incarnation: Option<u64>, duplicate: bool) {
        let (removed, successor) = {
            let mut peers = self.lock_peers();
            let removed = match peers.get(peer) {
                Some(h) if h.id == conn_id => {
                    peers.remove(peer);
                    true
                }
                _ => false,
            };
            let successor = peers
                .get(peer)
                .filter(|h| Some(h.incarnation) == incarnation && !h.commands.is_closed())
                .map(|h| (h.id, h.commands.clone()));
            (removed, successor)
        };
        if removed {
            self.peer_changed.send_modify(|n| *n += 1);
        }
        if let (true, None, Some(run)) = (removed, &successor, incarnation) {
            let run = PeerRun { node: peer.to_owned(), run };
            for service in &self.services {
                service.peer_disconnected(&run);
            }
        }
        if let Some(run) = incarnation {
            self.links_after_loss(peer, run, conn_id, successor.is_some(), duplicate);
        }
        let moved = self.proxies.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn_id).unwrap_or_default();
        if moved.is_empty() {
            return;
        }
        match (successor, incarnation) {
            (Some((next_id, commands)), _) => self.rehome(moved, next_id, commands),
            (None, Some(incarnation)) if duplicate => {
                // The other side keeps a connection we do not have yet.
                let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
                merge_proxies(orphans.entry((peer.to_owned(), incarnation)).or_default(), moved);
                drop(orphans);
                let (node, peer) = (Arc::downgrade(self), peer.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(SUCCESSOR_GRACE).await;
                    let Some(node) = node.upgrade() else { return };
                    let expired = node.orphans.lock().unwrap_or_else(|p| p.into_inner()).remove(&(peer, incarnation));
                    for proxy in expired.iter().flat_map(|m| m.values()).flat_map(|p| &p.handles) {
                        proxy.terminate(ExitReason::NodeDown);
                    }
                });
            }
            _ => {
                for proxy in moved.values().flat_map(|p| &p.handles) {
                    proxy.terminate(ExitReason::NodeDown);
                }
            }
        }
    }

    /// A peer's actor `linker` linked itself to our actor `target`.
    pub(crate) fn remote_link(&self, peer: &str, run: u64, target: u64, linker: u64) {
        // A link to an actor that is gone is nothing to remember (the
        // linker's side hears of the end through its watch).
        if self.resolve(&Target::id(target)).is_none() {
            return;
        }
        let mut links = self.remote_links.lock().unwrap_or_else(|p| p.into_inner());
        let set = links.entry((peer.to_owned(), run)).or_default();
        if set.len() >= MAX_LINKS_PER_PEER {
            // Links whose local actor ended are no longer needed.
            set.retain(|(target, _)| self.exposed_ids.get(target).is_some_and(|e| e.value().1.is_alive()));
        }
        if set.len() >= MAX_LINKS_PER_PEER {
            tracing::warn!(node = %self.id, %peer, "too many links from one peer; link refused");
            return;
        }
        set.insert((target, linker));
    }

    /// A peer's actor `linker` removed its link to our actor `target`.
    pub(crate) fn remote_unlink(&self, peer: &str, run: u64, target: u64, linker: u64) {
        let mut links = self.remote_links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = links.get_mut(&(peer.to_owned(), run)) {
            set.remove(&(target, linker));
        }
    }

    /// A peer's actor `linker`, linked to our actor `target`, exited.
    pub(crate) fn remote_exit(&self, peer: &str, run: u64, conn_id: u64, target: u64, linker: u64, reason: &str) {
        {
            let mut links = self.remote_links.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(set) = links.get_mut(&(peer.to_owned(), run)) {
                set.remove(&(target, linker));
            }
        }
        if let Some(actor) = self.resolve(&Target::id(target)) {
            actor.link_exit(self.linker_id(conn_id, linker), exit_reason(reason));
        }
    }

    /// The id local actors know a peer's actor by: its stand-in's, if there
    /// is one on this connection, else a fresh one.
    fn linker_id(&self, conn_id: u64, linker: u64) -> actor_core::ActorId {
        let proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        proxies
            .get(&conn_id)
            .and_then(|actors| actors.get(&linker))
            .and_then(|p| p.handles.first())
            .map_or_else(actor_core::ActorId::fresh, RemoteHandle::id)
    }

    /// A connection to `run` of `peer` ended: its links stay with a
    /// successor, wait for one after a duplicate closed (as stand-ins do),
    /// or are lost.
    fn links_after_loss(self: &Arc<Self>, peer: &str, run: u64, conn_id: u64, successor: bool, duplicate: bool) {
        if successor {
            return;
        }
        if !duplicate {
            self.links_lost(peer, run, conn_id);
            return;
        }
        let (node, peer) = (Arc::downgrade(self), peer.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(SUCCESSOR_GRACE).await;
            let Some(node) = node.upgrade() else { return };
            if node.connection_to(&peer, run).is_none() {
                node.links_lost(&peer, run, conn_id);
            }
        });
    }

    /// A run of a peer is gone: local actors linked to its actors get
    /// `NodeDown` link exits.
    fn links_lost(&self, peer: &str, run: u64, conn_id: u64) {
        let lost = self.remote_links.lock().unwrap_or_else(|p| p.into_inner()).remove(&(peer.to_owned(), run));
        if *self.shutdown.borrow() {
            // This node is stopping its actors itself: no exits in between.
            return;
        }
        for (target, linker) in lost.into_iter().flatten() {
            if let Some(actor) = self.resolve(&Target::id(target)) {
                actor.link_exit(self.linker_id(conn_id, linker), ExitReason::NodeDown);
            }
        }
    }

    /// A peer reports that its actor `id` stopped.
    pub(crate) fn remote_terminated(&self, conn_id: u64, id: u64, reason: &str) {
        let handles = {
            let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
            proxies.get_mut(&conn_id).and_then(|actors| actors.remove(&id)).map(|p| p.handles).unwrap_or_default()
        };
        let reason = exit_reason(reason);
        for proxy in &handles {
            proxy.terminate(reason.clone());
        }
    }

    /// A ref to the peer's actor `id` through `handle`'s connection: the one
    /// handed out before if it is still in use, else a new stand-in.
    fn remote_ref<A: Actor>(self: &Arc<Self>, peer: &str, handle: &ConnHandle, name: &str, id: u64) -> ActorRef<A> {
        let reused = self
            .proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&handle.id)
            .and_then(|actors| actors.get(&id).and_then(|p| p.latest.downcast_ref::<WeakActorRef<A>>()?.upgrade()));
        if let Some(existing) = reused {
            return existing;
        }
        let endpoint = self.peer_endpoint(peer, handle.incarnation, handle.id, handle.commands.clone(), id, name);
        let (actor, remote) = ActorRef::<A>::remote(Arc::new(endpoint));
        self.adopt_proxy(handle.id, peer, handle.incarnation, id, remote, Some(Box::new(actor.downgrade())));
        actor
    }

    /// The endpoint of a ref to actor `id` (handle) of run `incarnation` of
    /// `peer`, reached through connection `conn_id` for now.
    pub(crate) fn peer_endpoint(
        self: &Arc<Self>,
        peer: &str,
        incarnation: u64,
        conn_id: u64,
        commands: Commands,
        id: u64,
        label: &str,
    ) -> PeerEndpoint {
        let codec = Arc::new(codec::ConnCodec {
            node: Arc::downgrade(self),
            conn_id,
            peer: peer.to_owned(),
            peer_incarnation: incarnation,
            commands: commands.clone(),
        });
        PeerEndpoint {
            route: endpoint::Route::new(Arc::downgrade(self), peer.to_owned(), incarnation, commands),
            target: Target::id(id),
            label: format!("{label}@{peer}"),
            addr: actor_core::RefAddr { node: peer.to_owned(), incarnation, id },
            codec,
        }
    }

    /// The handle of local actor `actor_id`, made on first use.
    pub(crate) fn handle_of(&self, actor_id: actor_core::ActorId) -> u64 {
        use std::hash::BuildHasher;
        // Never 0, which nothing is reachable by. Ids are never reused in a
        // process, so neither are handles.
        *self.handles.entry(actor_id.as_u64()).or_insert_with(|| self.handle_keys.hash_one(actor_id.as_u64()).max(1))
    }

    /// Makes the local actor `actor_id` reachable by peers holding its
    /// handle (if its type is exposed) and returns its address.
    pub(crate) fn export(
        &self,
        type_id: std::any::TypeId,
        actor_id: actor_core::ActorId,
        actor: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<actor_core::RefAddr, String> {
        let handle = self.handle_of(actor_id);
        if !self.exposed_ids.contains_key(&handle) {
            if self.exposed_ids.len() >= MAX_REFS_PER_PEER {
                self.forget_dead();
                if self.exposed_ids.len() >= MAX_REFS_PER_PEER {
                    return Err("too many exposed actors on this node".into());
                }
            }
            let exporter = self
                .exporters
                .get(&type_id)
                .map(|e| e.value().clone())
                .ok_or("this actor type is not exposed (Node::expose) and cannot be sent to peers")?;
            let exposed = exporter(actor).ok_or("actor type mismatch")?;
            self.exposed_ids.entry(handle).or_insert_with(|| (String::new(), exposed));
        }
        Ok(actor_core::RefAddr { node: self.id.clone(), incarnation: self.incarnation, id: handle })
    }

    /// Keeps a stand-in decoded from a message, so its end gets reported.
    /// `latest` (a `WeakActorRef<A>`) is the ref later lookups may reuse.
    pub(crate) fn adopt_proxy(
        self: &Arc<Self>,
        conn_id: u64,
        peer: &str,
        incarnation: u64,
        id: u64,
        handle: RemoteHandle,
        latest: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) {
        let first = {
            let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
            let actors = proxies.entry(conn_id).or_default();
            let first = !actors.contains_key(&id);
            let entry = actors.entry(id).or_insert_with(|| Proxies { handles: Vec::new(), latest: Box::new(()) });
            entry.handles.retain(|h| !h.is_unused());
            entry.handles.push(handle);
            if let Some(latest) = latest {
                entry.latest = latest;
            }
            first
        };
        let commands = self.lock_peers().get(peer).filter(|h| h.id == conn_id).map(|h| h.commands.clone());
        match commands {
            // The first ref to this actor subscribes to its end.
            Some(commands) if first => send_watch(&commands, id),
            Some(_) => {}
            // Not the peer's current connection (any more): move the
            // stand-in to its successor, park it, or report the node gone.
            None => self.peer_lost(peer, conn_id, Some(incarnation), true),
        }
    }

    /// How many stand-ins connection `conn_id` holds.
    pub(crate) fn proxies_on(&self, conn_id: u64) -> usize {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner()).get(&conn_id).map_or(0, HashMap::len)
    }

    /// Whether stand-ins of run `incarnation` of `peer` wait for a successor
    /// connection.
    pub(crate) fn awaiting_successor(&self, peer: &str, incarnation: u64) -> bool {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&(peer.to_owned(), incarnation))
    }

    /// The exposed actor a frame targets, if it is alive.
    /// The exposed actor a frame targets (by name, or by handle), if alive.
    pub(crate) fn resolve(&self, target: &Target) -> Option<Arc<dyn Exposed>> {
        let exposed = match (&target.id, &target.name) {
            (Some(id), _) => self.exposed_ids.get(id).map(|e| e.value().1.clone())?,
            (None, Some(name)) => self.exposed.get(name).map(|e| e.value().clone())?,
            (None, None) => return None,
        };
        if exposed.is_alive() {
            Some(exposed)
        } else {
            self.forget_dead();
            None
        }
    }

    /// Drops exposed actors that have stopped (their names are free again).
    fn forget_dead(&self) {
        self.exposed.retain(|_, e| e.is_alive());
        self.exposed_ids.retain(|_, (_, e)| e.is_alive());
        self.handles.retain(|_, h| self.exposed_ids.contains_key(h));
    }

    /// Answers a peer's request to the node itself.
    pub(crate) fn system_request(
        &self,
        wire_name: &str,
        payload: &[u8],
        watch: impl FnOnce(u64),
    ) -> Result<ReplyFuture, FailureCode> {
        if wire_name != LOOKUP {
            return Err(FailureCode::UnknownMessage);
        }
        let name: String = crate::codec::decode(payload).map_err(|_| FailureCode::DecodeError)?;
        let exposed = self.resolve(&Target::name(name.clone())).ok_or(FailureCode::ActorNotFound)?;
        let id = self
            .exposed_ids
            .iter()
            .find_map(|e| Arc::ptr_eq(&e.value().1, &exposed).then_some(*e.key()))
            .ok_or(FailureCode::ActorNotFound)?;
        watch(id);
        let reply = LookupReply { id, type_name: exposed.type_name().to_owned() };
        let bytes = crate::codec::encode(&reply).map_err(|_| FailureCode::Rejected)?;
        Ok(Box::pin(async move { Ok(bytes) }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::transport::mem::MemoryNetwork;

    struct Target;
    impl Actor for Target {}
    impl RemoteActor for Target {
        fn remote_messages(_: &mut RemoteMessages<Self>) {}
    }

    /// One peer run may hold at most `MAX_LINKS_PER_PEER` links to this
    /// node's actors; more are refused, links of actors that ended make room
    /// again, and links to actors that are gone are not kept at all.
    #[tokio::test]
    async fn links_from_one_peer_are_limited() {
        let net = MemoryNetwork::new();
        let node = Node::builder("n").transport(net.transport()).listen("n").start().await.unwrap();
        let t1 = node.spawn_named("t1", Target).unwrap();
        let t2 = node.spawn_named("t2", Target).unwrap();
        let (h1, h2) = (node.inner.handle_of(t1.id()), node.inner.handle_of(t2.id()));
        let links = |node: &Node, run: u64| {
            let links = node.inner.remote_links.lock().unwrap();
            links.get(&("p".to_owned(), run)).cloned().unwrap_or_default()
        };
        node.inner.remote_link("p", 1, 12345, 1);
        assert!(links(&node, 1).is_empty(), "no actor has that handle");
        for linker in 0..MAX_LINKS_PER_PEER as u64 {
            node.inner.remote_link("p", 1, h1, linker);
        }
        node.inner.remote_link("p", 1, h2, 1);
        assert_eq!(links(&node, 1).len(), MAX_LINKS_PER_PEER);
        assert!(!links(&node, 1).contains(&(h2, 1)), "refused past the limit");
        // Another run of the same peer has its own budget.
        node.inner.remote_link("p", 2, h2, 1);
        assert!(links(&node, 2).contains(&(h2, 1)));
        // Unlinking makes room.
        node.inner.remote_unlink("p", 1, h1, 0);
        node.inner.remote_link("p", 1, h2, 1);
        assert!(links(&node, 1).contains(&(h2, 1)));
        // So does the end of the linked actor.
        t1.stop();
        t1.wait_for_stop().await;
        node.inner.remote_link("p", 1, h2, 2);
        assert_eq!(links(&node, 1), [(h2, 1), (h2, 2)].into_iter().collect());
        // A handle stays the same after the cache forgot it.
        node.inner.forget_dead();
        node.inner.handles.clear();
        assert_eq!(node.inner.handle_of(t2.id()), h2);
        node.shutdown().await;
    }
}
