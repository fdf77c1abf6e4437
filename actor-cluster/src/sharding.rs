//! Cluster sharding: virtual actors (Akka's cluster sharding, Orleans'
//! grains). An actor per account, device or game, addressed by an id from
//! any node, activated on first use on the member that owns its shard, at
//! most one of each id in the cluster, moved when members come and go,
//! stopped when idle.
//!
//! Every node starts sharding for an entity type with the same name and
//! settings ([`Cluster::sharding`]); [`Sharding::entity_ref`] gives an
//! [`EntityRef`] from any node, before the entity exists. The first message
//! activates it (the factory makes it from its id).
//!
//! **Allocation.** An entity id maps to one of a fixed number of shards
//! ([`ShardingBuilder::shards`], a stable hash of the id); a shard maps to
//! the member that wins rendezvous hashing among the members in the view
//! (reachable or not, until downed) with the type's role. Every node
//! computes the same owner from the same view: no coordinator, and a join
//! moves only the shards the newcomer wins (about one in n).
//!
//! **Fencing and hand-off.** A node hosts a shard only while it holds the
//! shard's cluster-wide name (`footlight.shard.<type>.<shard>`, see
//! [`Cluster::register`]), and takes a shard only when it is connected to
//! every member, every member holds its view (their view digests agree:
//! a node that joined a side cut off from members it has not heard of
//! takes nothing there), and no other member holds that name. A node that must give
//! a shard away (a join moved it, or the node is leaving) first tells every
//! member's region to stop sending to it and buffer (and waits for each to
//! acknowledge, up to 5 s), then stops the shard's entities after the
//! messages already in their mailboxes (their `stopping` hooks run), and
//! only then withdraws the name; the new owner activates nothing before
//! that. At most [`max_moves`](ShardingBuilder::max_moves) shards with live
//! entities are handed off by a node at once (empty ones move freely).
//! After a member is **downed**, its shards are taken over only after the
//! removal margin (as for [singletons](crate::singleton)): the downed side
//! kills its entities at once when it downs itself. So with a
//! [split-brain resolver](crate::sbr), an entity id is active on at most
//! one node at any instant, unless a process stalls for longer than the
//! margin, or two nodes' views differ in two ways at once (then the
//! registry's conflict rule stops the loser's shard at once, and the node
//! reports [`ClusterEvent::NameLost`]).
//!
//! **Messages.** An [`EntityRef`] sends through this node's region: a
//! buffer (bounded by [`ShardingBuilder::buffer`], default 10,000 messages
//! per node and type; a full buffer refuses, handing the message back) in
//! front of the entity, wherever it runs. Tells from one node to one entity
//! arrive in the order sent, across moves: while a shard moves, its
//! messages wait in each sender's buffer. An ask keeps its place too, unless
//! the entity's mailbox is full when its turn comes. Delivery is at most
//! once, as for any actor: messages in flight to a node that crashes are
//! lost, and so are messages to an entity that stops or fails by itself
//! (rather than through [`Sharding::passivate`]) until its region notices,
//! within a second. A failed entity is activated afresh by the next message.
//! Where a message must be handled once, send it with
//! [reliable delivery into entities](crate::delivery::EntityProducer):
//! sequence numbers, acknowledgements and resends per shard, across moves.
//!
//! **Passivation.** [`ShardingBuilder::passivate_after`] stops entities that
//! handled nothing for that long; [`Sharding::passivate`] stops one on
//! request (an entity can ask for its own, through a `Sharding` handle it
//! keeps). Both go through the same hand-off as a move, so no message is
//! lost: messages sent meanwhile wait and re-activate the entity. With
//! [`remember_entities`](ShardingBuilder::remember_entities), a shard that
//! moves brings its active entities back on the new owner at once.
//!
//! ```ignore
//! // On every node (a complete, compiled version is in the README;
//! // `examples/bank` runs one):
//! let accounts = cluster.sharding("account", |id: &str| Account::new(id)).start()?;
//! accounts.entity_ref("alice").tell(Deposit(10))?;
//! let balance = accounts.entity_ref("alice").ask(Balance).await?;
//! ```

use actor_core::entropy::{HashMap, HashSet};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use actor_core::remote::BoxFuture;
use actor_core::{Actor, ActorRef, AskError, Context, Handler, Message, SendError, TrySendError};
use actor_remote::{PeerRun, RemoteActor, RemoteMessages};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{Cluster, ClusterError, ClusterEvent, Member};

/// The prefix of a shard's cluster-wide name (followed by the type's name,
/// a dot and the shard's number).
pub const NAME_PREFIX: &str = "footlight.shard.";
/// The prefix of the process group of a type's regions (followed by the
/// type's name).
pub const GROUP_PREFIX: &str = "footlight.sharding.";
/// The default number of shards.
pub const DEFAULT_SHARDS: u32 = 1000;
/// The default bound of a region's buffer (messages, per node and type).
pub const DEFAULT_BUFFER: usize = 10_000;
/// The default number of shards with live entities a node hands off at once.
pub const DEFAULT_MAX_MOVES: usize = 20;
/// The longest entity id (bytes).
pub const MAX_ENTITY_ID_LEN: usize = 1024;
/// The most shards a type may have.
pub const MAX_SHARDS: u32 = 65_536;
/// The most remembered entities a node keeps for one shard it has yet to
/// take.
pub const MAX_REMEMBERED_PER_SHARD: usize = 100_000;

/// How long a region waits for each member to acknowledge a hand-off.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stopping entities may take before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a region retries while something waits (a shard to take, a
/// holder to find, an entity that is moving).
const RETRY: Duration = Duration::from_millis(20);
/// How often a region checks its entities (stopped by themselves, idle).
const SWEEP: Duration = Duration::from_secs(1);

/// Why a message for an entity was refused.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum EntityError<M> {
    /// This node's region buffer is full (entities are moving, or slow);
    /// the message is handed back.
    #[error("the sharding buffer is full; message not sent")]
    Full(M),
    /// Sharding has stopped on this node (it left, or downed itself); the
    /// message is handed back.
    #[error("sharding has stopped on this node; message not sent")]
    Stopped(M),
    /// The entity's id is longer than [`MAX_ENTITY_ID_LEN`]; the message is
    /// handed back.
    #[error("entity id longer than {MAX_ENTITY_ID_LEN} bytes; message not sent")]
    IdTooLong(M),
}

impl<M> fmt::Debug for EntityError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityError::Full(_) => f.write_str("Full(..)"),
            EntityError::Stopped(_) => f.write_str("Stopped(..)"),
            EntityError::IdTooLong(_) => f.write_str("IdTooLong(..)"),
        }
    }
}

/// Why an ask to an entity failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntityAskError {
    /// This node's region buffer is full.
    #[error("the sharding buffer is full; request not sent")]
    Full,
    /// Sharding has stopped on this node.
    #[error("sharding has stopped on this node; request not sent")]
    Stopped,
    /// No reply within the ask's timeout (counted from the call, buffering
    /// included). The request may or may not have been handled.
    #[error("no reply from the entity within the timeout")]
    Timeout,
    /// The entity stopped, or its node was lost, before it replied. The
    /// request may or may not have been handled.
    #[error("the entity stopped before replying")]
    NoReply,
    /// The request was refused on its way (say, its type cannot cross
    /// nodes).
    #[error("the request was refused: {0}")]
    Refused(String),
}

/// Starts sharding for an entity type (see [`Cluster::sharding`]).
pub struct ShardingBuilder<A: Actor> {
    cluster: Cluster,
    type_name: String,
    factory: Arc<dyn Fn(&str) -> A + Send + Sync>,
    shards: u32,
    role: Option<String>,
    buffer: usize,
    max_moves: usize,
    idle: Option<Duration>,
    removal_margin: Option<Duration>,
    remember: bool,
}

impl<A: Actor> fmt::Debug for ShardingBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardingBuilder")
            .field("type_name", &self.type_name)
            .field("shards", &self.shards)
            .field("role", &self.role)
            .field("buffer", &self.buffer)
            .field("max_moves", &self.max_moves)
            .field("idle", &self.idle)
            .finish()
    }
}

impl Cluster {
    /// Sharding for the entity type named `type_name`, whose entities
    /// `factory` makes from their ids (see the [`sharding`](crate::sharding)
    /// module): call it with the same name and settings on every node, then
    /// [`start`](ShardingBuilder::start).
    pub fn sharding<A, F>(&self, type_name: &str, factory: F) -> ShardingBuilder<A>
    where
        A: RemoteActor,
        F: Fn(&str) -> A + Send + Sync + 'static,
    {
        ShardingBuilder {
            cluster: self.clone(),
            type_name: type_name.to_owned(),
            factory: Arc::new(factory),
            shards: DEFAULT_SHARDS,
            role: None,
            buffer: DEFAULT_BUFFER,
            max_moves: DEFAULT_MAX_MOVES,
            idle: None,
            removal_margin: None,
            remember: false,
        }
    }
}

impl<A: RemoteActor> ShardingBuilder<A> {
    /// The number of shards (default [`DEFAULT_SHARDS`], at most
    /// [`MAX_SHARDS`]). It must be the same on every node and never change
    /// while the cluster runs: it decides which shard an id belongs to. Ten
    /// times the most members the type will run on is a good number.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Hosts entities only on members with `role`. Nodes without it only
    /// send.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// The most messages this node's region holds while their entities are
    /// being located or moved (default [`DEFAULT_BUFFER`]); at least 1.
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// How many shards with live entities this node hands off at once
    /// (default [`DEFAULT_MAX_MOVES`]); at least 1. Shards without
    /// entities are not counted.
    pub fn max_moves(mut self, shards: usize) -> Self {
        self.max_moves = shards.max(1);
        self
    }

    /// Stops (passivates) entities that handled no message for `idle`
    /// (checked every second or every half of `idle`, whichever is longer).
    /// Off by default.
    pub fn passivate_after(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Remembers the entities of a shard that moves: the node handing it off
    /// tells the new owner which entities were active, and the new owner
    /// activates them as soon as it takes the shard, without waiting for a
    /// message. Passivated entities are not remembered. What is remembered
    /// lives in memory: after a node crashes, its entities come back with
    /// their next message only.
    pub fn remember_entities(mut self) -> Self {
        self.remember = true;
        self
    }

    /// How long after a member was downed the others take its shards over
    /// (see [`SingletonBuilder::removal_margin`](crate::SingletonBuilder::removal_margin);
    /// the same default).
    pub fn removal_margin(mut self, margin: Duration) -> Self {
        self.removal_margin = Some(margin);
        self
    }

    /// Starts this node's region. Needs a Tokio runtime. Refuses an empty
    /// or too long type name and a shard count of 0 or above
    /// [`MAX_SHARDS`].
    pub fn start(self) -> Result<Sharding<A>, ClusterError> {
        let longest = shard_name(&self.type_name, MAX_SHARDS);
        if self.type_name.is_empty() || longest.len() > crate::MAX_NAME_LEN {
            return Err(ClusterError::BadName(self.type_name));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ClusterError::BadName(format!("{} (shards: {})", self.type_name, self.shards)));
        }
        let shared = &self.cluster.shared;
        let margin = self.removal_margin.unwrap_or_else(|| {
            let detection = shared.detection.suspect_timeout;
            shared.sbr.as_ref().map_or(detection, |s| s.losing_side_within() + detection)
        });
        if shared.sbr.is_none() {
            tracing::warn!(
                node = %self.cluster.id(),
                entity_type = %self.type_name,
                "sharding without a split-brain resolver: each side of a partition would activate its own copy of an entity"
            );
        }
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        let endpoint = self.cluster.system().spawn(Endpoint { tx: peer_tx });
        let group = format!("{GROUP_PREFIX}{}", self.type_name);
        let (ops, ops_rx) = mpsc::channel(self.buffer);
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let region = Region {
            cluster: self.cluster.clone(),
            type_name: self.type_name.clone(),
            group,
            factory: self.factory,
            shards: self.shards,
            role: self.role,
            buffer: self.buffer,
            max_moves: self.max_moves,
            idle: self.idle,
            remember: self.remember,
            remembered: HashMap::default(),
            margin,
            endpoint,
            internal: internal.clone(),
            stats: stats.clone(),
            hosted: HashMap::default(),
            routes: HashMap::default(),
            buffered: 0,
            retry: HashSet::default(),
            rounds: HashMap::default(),
            next_round: 0,
            held_acks: Vec::new(),
            settle_at: None,
            not_before: Instant::now(),
            leaving: None,
            unsettled: true,
            dirty: false,
            next_sweep: Instant::now() + SWEEP,
        };
        tokio::spawn(region.run(ops_rx, internal_rx, peer_rx));
        let (settled, name) = (stats.clone(), self.type_name.clone());
        shared.ready_check(Box::new(move || {
            (!settled.settled.load(Ordering::Relaxed))
                .then(|| format!("sharding of {name}: the shards this node owns are not all taken yet"))
        }));
        let leave = internal.clone();
        shared.before_leave(Box::new(move || {
            let leave = leave.clone();
            Box::pin(async move {
                let (done, left) = oneshot::channel();
                if leave.send(Internal::Leave(done)).is_ok() {
                    let _ = left.await;
                }
            })
        }));
        Ok(Sharding {
            inner: Arc::new(Shared {
                cluster: self.cluster.clone(),
                reliable: std::sync::OnceLock::new(),
                type_name: self.type_name.into(),
                shards: self.shards,
                ops,
                internal,
                stats,
                lanes: Mutex::new(Lanes { by_id: HashMap::default(), prune_at: 1024 }),
            }),
        })
    }
}

/// The name of shard `shard` of `type_name` in the registry.
fn shard_name(type_name: &str, shard: u32) -> String {
    format!("{NAME_PREFIX}{type_name}.{shard}")
}

/// FNV-1a, 64 bits: stable across builds and platforms, as every node
/// must compute the same shard for an id and the same owner for a shard.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // A final mix, so that ids differing in the last byte spread well.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// The shard of entity `id` among `shards`.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    (fnv1a(&[id.as_bytes()]) % u64::from(shards.max(1))) as u32
}

/// The owner of `shard` among `members` (rendezvous hashing; ties by id).
fn owner_of<'a>(shard: u32, members: &[&'a Member]) -> Option<&'a Member> {
    let key = shard.to_le_bytes();
    members.iter().copied().max_by(|a, b| {
        let sa = fnv1a(&[a.id.as_bytes(), &key]);
        let sb = fnv1a(&[b.id.as_bytes(), &key]);
        sa.cmp(&sb).then_with(|| b.id.cmp(&a.id))
    })
}

struct Stats {
    entities: AtomicUsize,
    activations: AtomicUsize,
    /// The last rebalance left nothing to wait for: every shard this node
    /// owns is taken (its readiness).
    settled: std::sync::atomic::AtomicBool,
    /// The shards this node hosts, in order (watched by the reliable
    /// consumers of the type's entities).
    shards: watch::Sender<Vec<u32>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            entities: AtomicUsize::new(0),
            activations: AtomicUsize::new(0),
            settled: std::sync::atomic::AtomicBool::new(false),
            shards: watch::Sender::new(Vec::new()),
        }
    }
}

struct Shared<A: Actor> {
    cluster: Cluster,
    /// The message type reliable delivery into these entities carries, once
    /// a reliable consumer started (one type per entity type: its
    /// consumers' names are per shard).
    reliable: std::sync::OnceLock<&'static str>,
    type_name: Arc<str>,
    shards: u32,
    ops: mpsc::Sender<Delivery<A>>,
    internal: mpsc::UnboundedSender<Internal<A>>,
    stats: Arc<Stats>,
    /// Each entity's lane on this node, shared by its refs (one per id at
    /// a time: refs, the region's slot and queued messages hold it).
    lanes: Mutex<Lanes<A>>,
}

struct Lanes<A: Actor> {
    by_id: HashMap<Arc<str>, std::sync::Weak<Lane<A>>>,
    /// Entries past which dead ones are pruned.
    prune_at: usize,
}

impl<A: Actor> Lanes<A> {
    fn get(&mut self, id: &Arc<str>) -> Arc<Lane<A>> {
        if let Some(lane) = self.by_id.get(id).and_then(std::sync::Weak::upgrade) {
            return lane;
        }
        if self.by_id.len() >= self.prune_at {
            self.by_id.retain(|_, lane| lane.strong_count() > 0);
            self.prune_at = (self.by_id.len() * 2).max(1024);
        }
        let lane = Arc::new(Lane::new());
        self.by_id.insert(id.clone(), Arc::downgrade(&lane));
        lane
    }
}

/// The fast path to one entity from this node: while the region knows
/// the entity's ref and nothing for it waits (in the region or in its
/// channel), a tell goes straight to the entity, in order with the rest.
struct Lane<A: Actor> {
    state: Mutex<LaneState<A>>,
}

struct LaneState<A: Actor> {
    /// Set by the region while the way is clear; cleared by the region
    /// before it stops sending (a move, a release), and by a sender whose
    /// message must go through the region.
    direct: Option<ActorRef<A>>,
    /// Messages for the entity in the region's channel, not yet taken.
    in_channel: usize,
    /// Senders waiting for room to send straight to the entity: the region
    /// acknowledges a release only once there are none.
    waiting: usize,
}

impl<A: Actor> Lane<A> {
    fn new() -> Self {
        Lane { state: Mutex::new(LaneState { direct: None, in_channel: 0, waiting: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<A>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> bool {
        self.lock().waiting > 0
    }
}

/// A sender waiting to send straight to an entity; when the last one is
/// done (or gives up) after the region closed the lane, the region hears
/// of it, to acknowledge what waited for that.
struct Waiting<'a, A: Actor> {
    lane: &'a Lane<A>,
    internal: &'a mpsc::UnboundedSender<Internal<A>>,
}

impl<A: Actor> Drop for Waiting<'_, A> {
    fn drop(&mut self) {
        let mut lane = self.lane.lock();
        lane.waiting -= 1;
        if lane.waiting == 0 {
            drop(lane);
            let _ = self.internal.send(Internal::LaneIdle);
        }
    }
}

/// This node's handle on an entity type's sharding (see the
/// [module docs](self)). Cheap to clone.
pub struct Sharding<A: Actor> {
    inner: Arc<Shared<A>>,
}

impl<A: Actor> Clone for Sharding<A> {
    fn clone(&self) -> Self {
        Sharding { inner: self.inner.clone() }
    }
}

impl<A: Actor> fmt::Debug for Sharding<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sharding").field("type_name", &self.inner.type_name).finish()
    }
}

impl<A: Actor> Sharding<A> {
    /// The entity type's name.
    pub fn type_name(&self) -> &str {
        &self.inner.type_name
    }

    /// A ref to entity `id`, wherever it runs (or will). Ids longer than
    /// [`MAX_ENTITY_ID_LEN`] bytes are refused when sent to
    /// ([`EntityError::IdTooLong`]).
    pub fn entity_ref(&self, id: impl Into<Arc<str>>) -> EntityRef<A> {
        let id: Arc<str> = id.into();
        let shard = shard_of(&id, self.inner.shards);
        let lane = self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner()).get(&id);
        EntityRef { id, shard, shared: self.inner.clone(), lane }
    }

    /// The shard entity `id` belongs to.
    pub fn shard_of(&self, id: &str) -> u32 {
        shard_of(id, self.inner.shards)
    }

    /// Passivates entity `id` if it runs on this node: it stops after the
    /// messages it already has, messages sent to it meanwhile wait, and the
    /// next one activates it again.
    pub fn passivate(&self, id: &str) {
        let _ = self.inner.internal.send(Internal::Passivate(id.into()));
    }

    /// The shards this node hosts now, in order.
    pub fn local_shards(&self) -> Vec<u32> {
        self.inner.stats.shards.borrow().clone()
    }

    /// The shards this node hosts, as they change.
    pub(crate) fn hosted_shards(&self) -> watch::Receiver<Vec<u32>> {
        self.inner.stats.shards.subscribe()
    }

    /// Resolves once sharding has stopped on this node.
    pub(crate) async fn stopped(&self) {
        self.inner.ops.closed().await;
    }

    /// Claims reliable delivery into these entities for message type
    /// `msg` on this node: once only (its consumers' names are per shard,
    /// not per type); hands back the type that has it.
    pub(crate) fn claim_reliable(&self, msg: &'static str) -> Result<(), &'static str> {
        self.inner.reliable.set(msg).map_err(|_| self.reliable_type().unwrap_or(msg))
    }

    /// The message type reliable delivery carries, if a consumer started.
    pub(crate) fn reliable_type(&self) -> Option<&'static str> {
        self.inner.reliable.get().copied()
    }

    /// The number of shards.
    pub(crate) fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// The node this sharding runs on.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// How many entities run on this node now.
    pub fn local_entities(&self) -> usize {
        self.inner.stats.entities.load(Ordering::Relaxed)
    }

    /// How many entities this node has activated since it started.
    pub fn activations(&self) -> usize {
        self.inner.stats.activations.load(Ordering::Relaxed)
    }
}

/// A ref to a sharded entity, from any node (see the [module docs](self)).
/// Cheap to clone.
pub struct EntityRef<A: Actor> {
    id: Arc<str>,
    shard: u32,
    shared: Arc<Shared<A>>,
    lane: Arc<Lane<A>>,
}

impl<A: Actor> Clone for EntityRef<A> {
    fn clone(&self) -> Self {
        EntityRef { id: self.id.clone(), shard: self.shard, shared: self.shared.clone(), lane: self.lane.clone() }
    }
}

impl<A: Actor> fmt::Debug for EntityRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityRef({}/{})", self.shared.type_name, self.id)
    }
}

impl<A: Actor> EntityRef<A> {
    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The entity's shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    fn delivery(&self, op: Box<dyn EntityOp<A>>) -> Delivery<A> {
        Delivery { shard: self.shard, entity: self.id.clone(), lane: self.lane.clone(), op, came_back: None }
    }

    /// Sends `msg` straight to the entity if its lane is open; hands it
    /// back otherwise, with the lane closed (it goes through the region).
    fn direct<M>(&self, lane: &mut LaneState<A>, msg: M) -> Option<M>
    where
        A: Handler<M>,
        M: Message,
    {
        let Some(target) = lane.direct.as_ref() else { return Some(msg) };
        match target.try_tell(msg) {
            Ok(()) => None,
            Err(TrySendError::Full(m) | TrySendError::Closed(m) | TrySendError::NodeDown(m)) => {
                lane.direct = None;
                Some(m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "message for an entity refused; dropped");
                None
            }
        }
    }

    /// Sends `msg` to the entity through this node's region, in order with
    /// what this node sent to it before. Refuses with [`EntityError::Full`]
    /// when the buffer is full.
    pub fn tell<M>(&self, msg: M) -> Result<(), EntityError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        if self.id.len() > MAX_ENTITY_ID_LEN {
            return Err(EntityError::IdTooLong(msg));
        }
        let mut lane = self.lane.lock();
        let Some(msg) = self.direct(&mut lane, msg) else { return Ok(()) };
        match self.shared.ops.try_reserve() {
            Ok(place) => {
                lane.in_channel += 1;
                place.send(self.delivery(Box::new(TellOp(msg))));
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(EntityError::Full(msg)),
            Err(mpsc::error::TrySendError::Closed(())) => Err(EntityError::Stopped(msg)),
        }
    }

    /// As [`tell`](Self::tell), but waits for room in the buffer instead of
    /// refusing (backpressure).
    pub async fn send<M>(&self, msg: M) -> Result<(), EntityError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        if self.id.len() > MAX_ENTITY_ID_LEN {
            return Err(EntityError::IdTooLong(msg));
        }
        let waited = {
            let mut lane = self.lane.lock();
            match lane.direct.as_ref() {
                None => Err(msg),
                Some(target) => match target.try_tell(msg) {
                    Ok(()) => return Ok(()),
                    // Wait for room right there (backpressure), counted, so
                    // that a release waits for this send to be out.
                    Err(TrySendError::Full(msg)) => {
                        let target = target.clone();
                        lane.waiting += 1;
                        Ok((target, msg))
                    }
                    Err(TrySendError::Closed(msg) | TrySendError::NodeDown(msg)) => {
                        lane.direct = None;
                        Err(msg)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "message for an entity refused; dropped");
                        return Ok(());
                    }
                },
            }
        };
        let msg = match waited {
            Err(msg) => msg,
            Ok((target, msg)) => {
                let _waiting = Waiting { lane: &self.lane, internal: &self.shared.internal };
                match target.tell(msg).await {
                    Ok(()) => return Ok(()),
                    Err(SendError::Closed(msg) | SendError::NodeDown(msg)) => {
                        self.lane.lock().direct = None;
                        msg
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "message for an entity refused; dropped");
                        return Ok(());
                    }
                }
            }
        };
        match self.shared.ops.reserve().await {
            Ok(place) => {
                // Behind this one, the next ones too (the lane may have
                // opened while this one waited for room).
                let mut lane = self.lane.lock();
                lane.direct = None;
                lane.in_channel += 1;
                place.send(self.delivery(Box::new(TellOp(msg))));
                Ok(())
            }
            Err(_) => Err(EntityError::Stopped(msg)),
        }
    }

    /// Asks the entity and waits for its reply, for at most the default ask
    /// timeout ([`DEFAULT_ASK_TIMEOUT`](actor_core::DEFAULT_ASK_TIMEOUT)),
    /// buffering included.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Reply, EntityAskError>
    where
        A: Handler<M>,
        M: Message,
    {
        self.ask_timeout(msg, actor_core::DEFAULT_ASK_TIMEOUT).await
    }

    /// [`ask`](Self::ask) with its own timeout.
    pub async fn ask_timeout<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, EntityAskError>
    where
        A: Handler<M>,
        M: Message,
    {
        if self.id.len() > MAX_ENTITY_ID_LEN {
            return Err(EntityAskError::Refused(format!("entity id longer than {MAX_ENTITY_ID_LEN} bytes")));
        }
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let op = Box::new(AskOp { msg, deadline, reply, back: self.clone() });
        {
            let mut lane = self.lane.lock();
            match self.shared.ops.try_reserve() {
                Ok(place) => {
                    lane.direct = None;
                    lane.in_channel += 1;
                    place.send(self.delivery(op));
                }
                Err(mpsc::error::TrySendError::Full(())) => return Err(EntityAskError::Full),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(EntityAskError::Stopped),
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EntityAskError::Stopped),
            Err(_) => Err(EntityAskError::Timeout),
        }
    }
}

/// A message for an entity, as a region holds it.
struct Delivery<A: Actor> {
    shard: u32,
    entity: Arc<str>,
    lane: Arc<Lane<A>>,
    op: Box<dyn EntityOp<A>>,
    /// The op came back after it went out to this target, which is stale.
    came_back: Option<actor_core::ActorId>,
}

/// What trying to send an op did.
enum Attempt<A: Actor> {
    /// Sent (or dropped for good, logged).
    Done,
    /// The entity's mailbox (or the connection to it) is full.
    Full(Box<dyn EntityOp<A>>),
    /// The entity is gone: locate it again.
    Gone(Box<dyn EntityOp<A>>),
}

/// One message for an entity.
trait EntityOp<A: Actor>: Send {
    /// Sends now if that needs no waiting.
    fn try_send(self: Box<Self>, to: &ActorRef<A>) -> Attempt<A>;
    /// Sends, waiting for room; hands itself back if the entity is gone.
    fn send(self: Box<Self>, to: ActorRef<A>) -> BoxFuture<'static, Option<Box<dyn EntityOp<A>>>>;
}

struct TellOp<M>(M);

impl<A: Handler<M>, M: Message> EntityOp<A> for TellOp<M> {
    fn try_send(self: Box<Self>, to: &ActorRef<A>) -> Attempt<A> {
        match to.try_tell(self.0) {
            Ok(()) => Attempt::Done,
            Err(TrySendError::Full(m)) => Attempt::Full(Box::new(TellOp(m))),
            Err(TrySendError::Closed(m) | TrySendError::NodeDown(m)) => Attempt::Gone(Box::new(TellOp(m))),
            Err(e) => {
                tracing::warn!(error = %e, "message for an entity refused; dropped");
                Attempt::Done
            }
        }
    }

    fn send(self: Box<Self>, to: ActorRef<A>) -> BoxFuture<'static, Option<Box<dyn EntityOp<A>>>> {
        Box::pin(async move {
            match to.tell(self.0).await {
                Ok(()) => None,
                Err(SendError::Closed(m) | SendError::NodeDown(m)) => Some(Box::new(TellOp(m)) as Box<dyn EntityOp<A>>),
                Err(e) => {
                    tracing::warn!(error = %e, "message for an entity refused; dropped");
                    None
                }
            }
        })
    }
}

struct AskOp<A: Actor, M: Message> {
    msg: M,
    deadline: Instant,
    reply: oneshot::Sender<Result<M::Reply, EntityAskError>>,
    /// The entity's ref: a message that comes back after it went out (the
    /// entity had stopped, or its node closed without reading it) is sent
    /// again through it.
    back: EntityRef<A>,
}

impl<A: Handler<M>, M: Message> EntityOp<A> for AskOp<A, M> {
    fn try_send(self: Box<Self>, to: &ActorRef<A>) -> Attempt<A> {
        let AskOp { msg, deadline, reply, back } = *self;
        if reply.is_closed() {
            // The asker gave up: nothing to send.
            return Attempt::Done;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let to = to.clone();
        let sent_to = to.id();
        // Sent now, in order; the reply is awaited elsewhere.
        let mut asking = Box::pin(async move { to.ask(msg).timeout(timeout).await });
        let first = asking.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        match first {
            Poll::Ready(answer) => match answered(answer, deadline, reply, back) {
                Some(op) => Attempt::Gone(op),
                None => Attempt::Done,
            },
            Poll::Pending => {
                tokio::spawn(async move {
                    let Some(op) = answered(asking.await, deadline, reply, back.clone()) else { return };
                    // Through the region again, as a new message (its
                    // place in the entity's order is lost with the first
                    // attempt).
                    let Ok(place) = back.shared.ops.reserve().await else { return };
                    let mut lane = back.lane.lock();
                    lane.direct = None;
                    lane.in_channel += 1;
                    place.send(Delivery { came_back: Some(sent_to), ..back.delivery(op) });
                });
                Attempt::Done
            }
        }
    }

    fn send(self: Box<Self>, to: ActorRef<A>) -> BoxFuture<'static, Option<Box<dyn EntityOp<A>>>> {
        Box::pin(async move {
            match EntityOp::<A>::try_send(self, &to) {
                Attempt::Gone(op) => Some(op),
                Attempt::Done | Attempt::Full(_) => None,
            }
        })
    }
}

/// Hands an ask's outcome to the asker, or gives the op back to be sent
/// again when its message was not delivered.
fn answered<A: Handler<M>, M: Message>(
    answer: Result<M::Reply, AskError<M>>,
    deadline: Instant,
    reply: oneshot::Sender<Result<M::Reply, EntityAskError>>,
    back: EntityRef<A>,
) -> Option<Box<dyn EntityOp<A>>> {
    let answer = match answer.map_err(AskError::into_undelivered) {
        // Not delivered, and time is left: sent again.
        Err(Ok(msg)) if Instant::now() < deadline => return Some(Box::new(AskOp { msg, deadline, reply, back })),
        Err(Ok(_)) => Err(EntityAskError::Timeout),
        Err(Err(e)) => asked(Err(e)),
        Ok(out) => Ok(out),
    };
    let _ = reply.send(answer);
    None
}

fn asked<R, M>(result: Result<R, AskError<M>>) -> Result<R, EntityAskError> {
    result.map_err(|e| match e {
        AskError::Timeout => EntityAskError::Timeout,
        AskError::NoReply | AskError::NodeDown | AskError::Closed(_) => EntityAskError::NoReply,
        other => EntityAskError::Refused(other.to_string()),
    })
}

// ---- the region protocol (between nodes) ----

/// Where is this entity? Asked of the node holding its shard, which
/// activates it if it is not running.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Locate {
    shard: u32,
    entity: String,
}

/// The answer to [`Locate`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Located {
    /// The entity runs here, with this handle.
    Here(u64),
    /// It is being stopped (its shard moves, or it is passivated): ask again.
    Busy,
    /// This node does not hold the shard.
    NotHere,
}

impl Message for Locate {
    type Reply = Located;
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.sharding.Locate"))
    }
}

/// Stop sending to these shards and entities of `from`'s node; buffer what
/// is for them and locate them again. Answered with [`Acked`] to `from`
/// once nothing sent to them from here before is still on its way out: a
/// tell, so that it reaches `from`'s node after those messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Release {
    round: u64,
    from: ActorRef<Endpoint>,
    shards: Vec<u32>,
    entities: Vec<(u32, String)>,
}

impl Message for Release {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.sharding.Release"))
    }
}

/// The entities of `shard` that were active when it was handed off to the
/// receiver (with remembered entities).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Remember {
    shard: u32,
    entities: Vec<String>,
}

impl Message for Remember {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.sharding.Remember"))
    }
}

/// `node`'s region has sent all it will to round `round`'s shards and
/// entities.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Acked {
    round: u64,
    node: String,
}

impl Message for Acked {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(actor_remote::codec::wire("footlight.sharding.Acked"))
    }
}

/// A region's face to peers: hands their requests to the region's task.
pub(crate) struct Endpoint {
    tx: mpsc::UnboundedSender<PeerCmd>,
}

enum PeerCmd {
    Locate(Locate, oneshot::Sender<Located>),
    Release(Release),
    Acked(Acked),
    Remember(Remember),
}

impl Actor for Endpoint {}

impl Handler<Locate> for Endpoint {
    async fn handle(&mut self, msg: Locate, _ctx: &mut Context<Self>) -> Located {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(PeerCmd::Locate(msg, tx)).is_err() {
            return Located::NotHere;
        }
        rx.await.unwrap_or(Located::NotHere)
    }
}

impl Handler<Release> for Endpoint {
    async fn handle(&mut self, msg: Release, _ctx: &mut Context<Self>) {
        let _ = self.tx.send(PeerCmd::Release(msg));
    }
}

impl Handler<Remember> for Endpoint {
    async fn handle(&mut self, msg: Remember, _ctx: &mut Context<Self>) {
        let _ = self.tx.send(PeerCmd::Remember(msg));
    }
}

impl Handler<Acked> for Endpoint {
    async fn handle(&mut self, msg: Acked, _ctx: &mut Context<Self>) {
        let _ = self.tx.send(PeerCmd::Acked(msg));
    }
}

impl RemoteActor for Endpoint {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Locate>().add::<Release>().add::<Acked>().add::<Remember>();
    }
}

// ---- the region ----

/// What the region's own tasks and handles report.
enum Internal<A: Actor> {
    Passivate(Arc<str>),
    Located {
        shard: u32,
        entity: Arc<str>,
        epoch: u64,
        answer: Option<(Located, ActorRef<Endpoint>)>,
    },
    Holder {
        shard: u32,
        epoch: u64,
        holder: Option<ActorRef<Endpoint>>,
    },
    Sent {
        shard: u32,
        entity: Arc<str>,
        back: Option<Box<dyn EntityOp<A>>>,
    },
    /// The round's Release went to these nodes.
    Asked {
        round: u64,
        nodes: Vec<String>,
    },
    Stopped {
        round: u64,
    },
    Leave(oneshot::Sender<()>),
    /// The last sender waiting on a closed lane is done.
    LaneIdle,
}

/// Where a shard's holder is, as this node's region knows.
enum Holder {
    Unknown,
    Looking(u64),
    Local,
    Remote(ActorRef<Endpoint>),
}

/// This node's route to a shard (as a sender).
struct Route<A: Actor> {
    holder: Holder,
    /// Bumped whenever what this node knew of the shard is dropped: an
    /// answer asked for before is stale.
    epoch: u64,
    slots: HashMap<Arc<str>, Slot<A>>,
}

impl<A: Actor> Default for Route<A> {
    fn default() -> Self {
        Route { holder: Holder::Unknown, epoch: 0, slots: HashMap::default() }
    }
}

/// One entity as a sender sees it.
struct Slot<A: Actor> {
    target: Option<ActorRef<A>>,
    pending: VecDeque<Box<dyn EntityOp<A>>>,
    /// A locate is in flight.
    locating: bool,
    /// A send waiting for room is in flight.
    sending: bool,
    lane: Arc<Lane<A>>,
}

impl<A: Actor> Slot<A> {
    fn new(lane: Arc<Lane<A>>) -> Self {
        Slot { target: None, pending: VecDeque::new(), locating: false, sending: false, lane }
    }

    fn busy(&self) -> bool {
        self.locating || self.sending
    }

    /// Forgets the target; senders go through the region from now on.
    fn clear_target(&mut self) {
        self.target = None;
        self.lane.lock().direct = None;
    }

    /// Lets senders go straight to the target while nothing waits.
    fn open_lane(&self) {
        if let Some(target) = &self.target
            && !self.busy()
            && self.pending.is_empty()
        {
            let mut lane = self.lane.lock();
            if lane.in_channel == 0 {
                lane.direct = Some(target.clone());
            }
        }
    }
}

/// A shard this node hosts.
struct Hosted<A: Actor> {
    entities: HashMap<Arc<str>, Active<A>>,
    handing_off: bool,
}

struct Active<A: Actor> {
    actor: ActorRef<A>,
    passivating: bool,
    idle_since: Instant,
}

/// A Release to acknowledge once this node's sends to it are out.
struct HeldAck {
    round: u64,
    to: ActorRef<Endpoint>,
    shards: Vec<u32>,
    entities: Vec<(u32, Arc<str>)>,
}

/// A hand-off or passivation in progress.
struct Round<A: Actor> {
    shards: Vec<u32>,
    /// The entities, as they were when the round began.
    entities: Vec<(u32, Arc<str>, ActorRef<A>)>,
    /// The nodes whose acknowledgement is awaited (`None` until the
    /// Release went out), and those that came early.
    awaiting: Option<HashSet<String>>,
    early: HashSet<String>,
    /// Past this, the round goes on without the missing acknowledgements.
    deadline: Instant,
    stopping: bool,
}

struct Region<A: RemoteActor> {
    cluster: Cluster,
    type_name: String,
    group: String,
    factory: Arc<dyn Fn(&str) -> A + Send + Sync>,
    shards: u32,
    role: Option<String>,
    buffer: usize,
    max_moves: usize,
    idle: Option<Duration>,
    remember: bool,
    /// Entities to activate when this node takes their shard.
    remembered: HashMap<u32, Vec<Arc<str>>>,
    margin: Duration,
    endpoint: ActorRef<Endpoint>,
    internal: mpsc::UnboundedSender<Internal<A>>,
    stats: Arc<Stats>,
    hosted: HashMap<u32, Hosted<A>>,
    routes: HashMap<u32, Route<A>>,
    /// Ops waiting in slots.
    buffered: usize,
    /// Shards with slots to locate again at the next retry.
    retry: HashSet<u32>,
    rounds: HashMap<u64, Round<A>>,
    next_round: u64,
    /// Releases asked of this node, acknowledged once what it sent to
    /// their shards and entities is out.
    held_acks: Vec<HeldAck>,
    /// The next time a waiting rebalance needs to run (the end of the
    /// removal margin).
    settle_at: Option<Instant>,
    /// No shard is taken before this (the removal margin after a down).
    not_before: Instant,
    leaving: Option<Vec<oneshot::Sender<()>>>,
    /// Shards to take or give away wait: rebalance again at the next retry.
    unsettled: bool,
    /// The view or the hosted shards changed: rebalance now.
    dirty: bool,
    next_sweep: Instant,
}

impl<A: RemoteActor> Region<A> {
    async fn run(
        mut self,
        mut ops: mpsc::Receiver<Delivery<A>>,
        mut internal: mpsc::UnboundedReceiver<Internal<A>>,
        mut peers: mpsc::UnboundedReceiver<PeerCmd>,
    ) {
        let mut events = self.cluster.subscribe();
        // Until this node has joined, only a leave matters.
        {
            let cluster = self.cluster.clone();
            let joined = cluster.joined();
            tokio::pin!(joined);
            loop {
                tokio::select! {
                    result = &mut joined => if result.is_err() { return } else { break },
                    cmd = internal.recv() => if let Some(Internal::Leave(done)) = cmd {
                        let _ = done.send(());
                        return;
                    },
                }
            }
        }
        if let Err(e) = self.cluster.join(&self.group, &self.endpoint) {
            tracing::error!(node = %self.me(), entity_type = %self.type_name, error = %e, "sharding region not started");
            return;
        }
        self.rebalance();
        loop {
            let mut wake = self.next_sweep;
            if self.unsettled || !self.retry.is_empty() {
                wake = wake.min(Instant::now() + RETRY);
            }
            if let Some(at) = self.settle_at {
                wake = wake.min(at);
            }
            if let Some(at) = self.rounds.values().filter(|r| !r.stopping).map(|r| r.deadline).min() {
                wake = wake.min(at);
            }
            tokio::select! {
                biased;
                Some(cmd) = internal.recv() => self.internal(cmd),
                Some(cmd) = peers.recv() => self.peer(cmd),
                event = events.recv() => match event {
                    Some(ClusterEvent::SelfDowned { .. }) | None => break,
                    Some(event) => self.event(event),
                },
                Some(d) = ops.recv(), if self.buffered < self.buffer => {
                    self.deliver(d);
                    // Take what else is ready without another turn of the loop.
                    for _ in 0..64 {
                        if self.buffered >= self.buffer {
                            break;
                        }
                        match ops.try_recv() {
                            Ok(d) => self.deliver(d),
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= self.next_sweep {
                        self.sweep();
                    }
                    for shard in std::mem::take(&mut self.retry) {
                        self.resolve_shard(shard);
                    }
                    self.check_rounds();
                    if self.unsettled || self.settle_at.is_some_and(|at| now >= at) {
                        self.rebalance();
                    }
                    continue;
                }
            }
            if self.dirty {
                self.rebalance();
            }
        }
        // The cluster stopped here (it downed itself, or the node stopped).
        self.kill_all();
        if let Some(waiting) = self.leaving.take() {
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    fn me(&self) -> &str {
        self.cluster.id()
    }

    fn publish_shards(&self) {
        let mut shards: Vec<u32> = self.hosted.keys().copied().collect();
        shards.sort_unstable();
        self.stats.shards.send_replace(shards);
    }

    // ---- sending ----

    fn deliver(&mut self, d: Delivery<A>) {
        let Delivery { shard, entity, lane, op, came_back } = d;
        {
            let mut lane = lane.lock();
            lane.in_channel = lane.in_channel.saturating_sub(1);
        }
        let route = self.routes.entry(shard).or_default();
        let slot = route.slots.entry(entity.clone()).or_insert_with(|| Slot::new(lane));
        if let Some(stale) = came_back
            && !slot.busy()
            && slot.target.as_ref().is_some_and(|t| t.id() == stale)
        {
            // Where it went, the entity is gone: find it again (unless it
            // was found afresh meanwhile).
            slot.clear_target();
        }
        if let Some(target) = &slot.target
            && !slot.busy()
            && slot.pending.is_empty()
        {
            match op.try_send(target) {
                Attempt::Done => slot.open_lane(),
                Attempt::Full(op) => {
                    slot.pending.push_front(op);
                    self.buffered += 1;
                    self.send_waiting(shard, &entity);
                }
                Attempt::Gone(op) => {
                    slot.pending.push_front(op);
                    slot.clear_target();
                    self.buffered += 1;
                    self.resolve(shard, &entity);
                }
            }
            return;
        }
        slot.pending.push_back(op);
        self.buffered += 1;
        if !slot.busy() && slot.target.is_none() {
            self.resolve(shard, &entity);
        }
    }

    /// Sends the first waiting op of a slot on a task, waiting for room.
    fn send_waiting(&mut self, shard: u32, entity: &Arc<str>) {
        let Some(route) = self.routes.get_mut(&shard) else { return };
        let Some(slot) = route.slots.get_mut(entity) else { return };
        let (Some(target), Some(op)) = (slot.target.clone(), slot.pending.pop_front()) else { return };
        self.buffered -= 1;
        slot.sending = true;
        let internal = self.internal.clone();
        let entity = entity.clone();
        tokio::spawn(async move {
            let back = op.send(target).await;
            let _ = internal.send(Internal::Sent { shard, entity, back });
        });
    }

    /// Sends a slot's waiting ops to its target, in order, while they go
    /// without waiting.
    fn flush(&mut self, shard: u32, entity: &Arc<str>) {
        let Some(route) = self.routes.get_mut(&shard) else { return };
        let Some(slot) = route.slots.get_mut(entity) else { return };
        if slot.busy() {
            return;
        }
        let Some(target) = slot.target.clone() else { return };
        while let Some(op) = slot.pending.pop_front() {
            self.buffered -= 1;
            match op.try_send(&target) {
                Attempt::Done => {}
                Attempt::Full(op) => {
                    slot.pending.push_front(op);
                    self.buffered += 1;
                    self.send_waiting(shard, entity);
                    return;
                }
                Attempt::Gone(op) => {
                    slot.pending.push_front(op);
                    slot.clear_target();
                    self.buffered += 1;
                    self.resolve(shard, entity);
                    return;
                }
            }
        }
        slot.open_lane();
    }

    /// Finds the entity's target: locally, or by asking its shard's holder.
    fn resolve(&mut self, shard: u32, entity: &Arc<str>) {
        let Some(route) = self.routes.get_mut(&shard) else { return };
        match &route.holder {
            Holder::Looking(_) => {}
            Holder::Unknown => {
                if self.hosted.contains_key(&shard) {
                    route.holder = Holder::Local;
                    self.resolve(shard, entity);
                    return;
                }
                let epoch = route.epoch;
                route.holder = Holder::Looking(epoch);
                let cluster = self.cluster.clone();
                let internal = self.internal.clone();
                let name = shard_name(&self.type_name, shard);
                tokio::spawn(async move {
                    // The registry's copy only: no asking around.
                    let shared = &cluster.shared;
                    let holder = match shared.ctx() {
                        Some(ctx) => shared.registry.lookup::<Endpoint>(shared, ctx, &name).await.ok().flatten(),
                        None => None,
                    };
                    let _ = internal.send(Internal::Holder { shard, epoch, holder });
                });
            }
            Holder::Local => match self.local_target(shard, entity) {
                Some(target) => {
                    if let Some(slot) = self.routes.get_mut(&shard).and_then(|r| r.slots.get_mut(entity)) {
                        slot.target = Some(target);
                    }
                    self.flush(shard, entity);
                }
                None => {
                    if !self.hosted.contains_key(&shard) {
                        route_reset(self.routes.get_mut(&shard));
                    }
                    self.retry.insert(shard);
                }
            },
            Holder::Remote(endpoint) => {
                let Some(slot) = route.slots.get_mut(entity) else { return };
                slot.locating = true;
                let endpoint = endpoint.clone();
                let epoch = route.epoch;
                let internal = self.internal.clone();
                let entity = entity.clone();
                tokio::spawn(async move {
                    let asked = Locate { shard, entity: entity.to_string() };
                    let answer = endpoint.ask(asked).timeout(ROUND_TIMEOUT).await.ok().map(|a| (a, endpoint));
                    let _ = internal.send(Internal::Located { shard, entity, epoch, answer });
                });
            }
        }
    }

    /// Resolves every slot of a shard that waits with nothing in flight.
    fn resolve_shard(&mut self, shard: u32) {
        let Some(route) = self.routes.get(&shard) else { return };
        let waiting: Vec<Arc<str>> = route
            .slots
            .iter()
            .filter(|(_, s)| !s.busy() && s.target.is_none() && !s.pending.is_empty())
            .map(|(e, _)| e.clone())
            .collect();
        for entity in waiting {
            self.resolve(shard, &entity);
        }
    }

    // ---- hosting ----

    /// The local entity, activated if need be; `None` while it, or its
    /// shard, is being stopped, or the shard is not hosted here.
    fn local_target(&mut self, shard: u32, entity: &Arc<str>) -> Option<ActorRef<A>> {
        let hosted = self.hosted.get_mut(&shard)?;
        if hosted.handing_off {
            return None;
        }
        if let Some(active) = hosted.entities.get(entity) {
            // One that stopped by itself waits for the sweep's round, which
            // tells every sender to drop its ref first.
            return (!active.passivating && active.actor.is_alive()).then(|| active.actor.clone());
        }
        let actor = self.cluster.system().spawn((self.factory)(entity));
        hosted
            .entities
            .insert(entity.clone(), Active { actor: actor.clone(), passivating: false, idle_since: Instant::now() });
        self.stats.entities.fetch_add(1, Ordering::Relaxed);
        self.stats.activations.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(node = %self.me(), entity_type = %self.type_name, %entity, shard, "entity activated");
        Some(actor)
    }

    /// Activates remembered entities of a shard this node now hosts.
    fn activate_remembered(&mut self, shard: u32, ids: Vec<Arc<str>>) {
        let count = ids.len();
        for id in ids {
            self.local_target(shard, &id);
        }
        tracing::debug!(node = %self.me(), entity_type = %self.type_name, shard, count, "remembered entities activated");
    }

    fn locate(&mut self, msg: Locate) -> Located {
        if msg.shard >= self.shards
            || msg.entity.len() > MAX_ENTITY_ID_LEN
            || shard_of(&msg.entity, self.shards) != msg.shard
        {
            tracing::warn!(node = %self.me(), entity_type = %self.type_name, shard = msg.shard, "locate for an entity not of that shard (malformed, or another shard count); refused");
            return Located::NotHere;
        }
        match self.hosted.get(&msg.shard) {
            None => return Located::NotHere,
            Some(h) if h.handing_off => return Located::Busy,
            Some(_) => {}
        }
        let entity: Arc<str> = msg.entity.into();
        let Some(actor) = self.local_target(msg.shard, &entity) else { return Located::Busy };
        match self.cluster.shared.ctx().map(|ctx| ctx.export(&actor)) {
            Some(Ok(handle)) => Located::Here(handle),
            _ => Located::NotHere,
        }
    }

    // ---- commands ----

    fn peer(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Locate(msg, reply) => {
                let _ = reply.send(self.locate(msg));
            }
            PeerCmd::Release(msg) => {
                let entities: Vec<(u32, Arc<str>)> = msg
                    .entities
                    .into_iter()
                    .filter(|(s, _)| *s < self.shards)
                    .map(|(s, e)| (s, Arc::<str>::from(e)))
                    .collect();
                let shards: Vec<u32> = msg.shards.into_iter().filter(|s| *s < self.shards).collect();
                self.release(&shards, &entities);
                self.held_acks.push(HeldAck { round: msg.round, to: msg.from, shards, entities });
                self.answer_releases();
            }
            PeerCmd::Remember(Remember { shard, entities }) => {
                let shards = self.shards;
                let ids: Vec<Arc<str>> = entities
                    .into_iter()
                    .filter(|e| e.len() <= MAX_ENTITY_ID_LEN && shard_of(e, shards) == shard)
                    .map(Arc::from)
                    .collect();
                if shard >= shards || ids.is_empty() {
                    return;
                }
                if self.hosted.get(&shard).is_some_and(|h| !h.handing_off) {
                    self.activate_remembered(shard, ids);
                } else {
                    let list = self.remembered.entry(shard).or_default();
                    list.extend(ids);
                    list.truncate(MAX_REMEMBERED_PER_SHARD);
                }
            }
            PeerCmd::Acked(Acked { round, node }) => {
                if let Some(r) = self.rounds.get_mut(&round) {
                    match &mut r.awaiting {
                        Some(awaiting) => {
                            awaiting.remove(&node);
                        }
                        None => {
                            r.early.insert(node);
                        }
                    }
                }
                self.check_rounds();
            }
        }
    }

    /// Whether this node still has a send waiting for room to any of
    /// `shards` or `entities` (a send already handed to the connection is
    /// ahead of anything sent after it).
    fn sending_to(&self, shards: &[u32], entities: &[(u32, Arc<str>)]) -> bool {
        shards.iter().any(|s| {
            // A slot with a send in flight is never dropped, so its flag says it.
            self.routes.get(s).is_some_and(|r| r.slots.values().any(|slot| slot.sending || slot.lane.waiting()))
        }) || entities.iter().any(|(s, e)| {
            self.routes.get(s).and_then(|r| r.slots.get(e)).is_some_and(|slot| slot.sending || slot.lane.waiting())
        })
    }

    /// Drops what this node knows of `shards` and `entities` as a sender:
    /// what is for them waits, and is located again later.
    fn release(&mut self, shards: &[u32], entities: &[(u32, Arc<str>)]) {
        for shard in shards {
            if let Some(route) = self.routes.get_mut(shard) {
                route_reset(Some(route));
                self.retry.insert(*shard);
            }
        }
        for (shard, entity) in entities {
            if let Some(route) = self.routes.get_mut(shard) {
                route.epoch += 1;
                if let Some(slot) = route.slots.get_mut(entity) {
                    slot.clear_target();
                    if !slot.busy() && slot.pending.is_empty() && !slot.lane.waiting() {
                        route.slots.remove(entity);
                    }
                }
                self.retry.insert(*shard);
            }
        }
    }

    /// Acknowledges the releases this node has no send waiting for any
    /// more. The acknowledgement is a tell on the connection the messages
    /// went out on, so it reaches the releasing node after them.
    fn answer_releases(&mut self) {
        let held = std::mem::take(&mut self.held_acks);
        let (still, ready): (Vec<_>, Vec<_>) = held.into_iter().partition(|h| self.sending_to(&h.shards, &h.entities));
        self.held_acks = still;
        for h in ready {
            let ack = Acked { round: h.round, node: self.me().to_owned() };
            if let Err(actor_core::TrySendError::Full(ack)) = h.to.try_tell(ack) {
                let to = h.to.clone();
                tokio::spawn(async move {
                    let _ = to.tell(ack).await;
                });
            }
        }
    }

    fn internal(&mut self, cmd: Internal<A>) {
        match cmd {
            Internal::Passivate(entity) => {
                let shard = shard_of(&entity, self.shards);
                let Some(hosted) = self.hosted.get_mut(&shard) else { return };
                if hosted.handing_off {
                    return;
                }
                let Some(active) = hosted.entities.get_mut(&entity) else { return };
                if active.passivating {
                    return;
                }
                active.passivating = true;
                let actor = active.actor.clone();
                self.start_round(Vec::new(), vec![(shard, entity, actor)]);
            }
            Internal::Holder { shard, epoch, holder } => {
                let local = self.hosted.contains_key(&shard);
                let Some(route) = self.routes.get_mut(&shard) else { return };
                if !matches!(route.holder, Holder::Looking(e) if e == epoch) {
                    return;
                }
                // The registry may still name this node for a shard it just
                // gave away: look again later then.
                route.holder = match holder {
                    Some(h) if h.remote_addr().is_some() => Holder::Remote(h),
                    Some(_) if local => Holder::Local,
                    _ => {
                        self.retry.insert(shard);
                        Holder::Unknown
                    }
                };
                if !matches!(route.holder, Holder::Unknown) {
                    self.resolve_shard(shard);
                }
            }
            Internal::Located { shard, entity, epoch, answer } => {
                let Some(route) = self.routes.get_mut(&shard) else { return };
                let Some(slot) = route.slots.get_mut(&entity) else { return };
                slot.locating = false;
                if route.epoch != epoch {
                    self.retry.insert(shard);
                    return;
                }
                match answer {
                    Some((Located::Here(handle), endpoint)) => {
                        let target = endpoint.remote_addr().and_then(|addr| {
                            let peer = PeerRun { node: addr.node, run: addr.run };
                            self.cluster.shared.ctx()?.remote_ref_unwatched::<A>(&peer, handle, &entity)
                        });
                        match target {
                            Some(target) => {
                                slot.target = Some(target);
                                self.flush(shard, &entity);
                            }
                            None => {
                                route_reset(Some(route));
                                self.retry.insert(shard);
                            }
                        }
                    }
                    Some((Located::Busy, _)) => {
                        self.retry.insert(shard);
                    }
                    Some((Located::NotHere, _)) | None => {
                        route_reset(Some(route));
                        self.retry.insert(shard);
                    }
                }
            }
            Internal::Sent { shard, entity, back } => {
                if let Some(slot) = self.routes.get_mut(&shard).and_then(|r| r.slots.get_mut(&entity)) {
                    slot.sending = false;
                    if let Some(op) = back {
                        slot.pending.push_front(op);
                        slot.clear_target();
                        self.buffered += 1;
                    }
                    if slot.target.is_some() {
                        self.flush(shard, &entity);
                    } else {
                        self.retry.insert(shard);
                    }
                }
                self.answer_releases();
                self.check_rounds();
            }
            Internal::Asked { round, nodes } => {
                if let Some(r) = self.rounds.get_mut(&round) {
                    let awaiting: HashSet<String> = nodes.into_iter().filter(|n| !r.early.contains(n)).collect();
                    r.awaiting = Some(awaiting);
                }
                self.check_rounds();
            }
            Internal::Stopped { round } => self.end_round(round),
            Internal::LaneIdle => {
                self.answer_releases();
                self.check_rounds();
            }
            Internal::Leave(done) => {
                self.leaving.get_or_insert_with(Vec::new).push(done);
                self.dirty = true;
            }
        }
    }

    fn event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::MemberDown(m) => {
                if self.role.as_deref().is_none_or(|r| m.has_role(r)) {
                    self.not_before = self.not_before.max(Instant::now() + self.margin);
                    tracing::info!(node = %self.me(), entity_type = %self.type_name, down = %m.id, margin = ?self.margin, "a member was downed: its shards are taken over after the removal margin");
                }
                self.forget_holder(&m.id);
            }
            ClusterEvent::MemberLeft(m) => self.forget_holder(&m.id),
            ClusterEvent::NameLost { name, winner } => {
                let prefix = format!("{NAME_PREFIX}{}.", self.type_name);
                if let Some(shard) = name.strip_prefix(&prefix).and_then(|s| s.parse::<u32>().ok())
                    && let Some(hosted) = self.hosted.remove(&shard)
                {
                    tracing::error!(node = %self.me(), entity_type = %self.type_name, shard, %winner, "another node holds this shard too; its entities here are killed");
                    self.kill(hosted);
                    route_reset(self.routes.get_mut(&shard));
                    self.retry.insert(shard);
                    self.publish_shards();
                }
            }
            _ => {}
        }
        self.dirty = true;
    }

    /// A member is gone: routes to shards it held are looked up again.
    fn forget_holder(&mut self, node: &str) {
        let mut gone = Vec::new();
        for (shard, route) in &mut self.routes {
            if let Holder::Remote(ep) = &route.holder
                && ep.remote_addr().is_some_and(|a| a.node == node)
            {
                route_reset(Some(route));
                gone.push(*shard);
            }
        }
        self.retry.extend(gone);
    }

    // ---- rounds: hand-off and passivation ----

    fn start_round(&mut self, shards: Vec<u32>, entities: Vec<(u32, Arc<str>, ActorRef<A>)>) {
        let round = self.next_round;
        self.next_round += 1;
        for shard in &shards {
            if let Some(h) = self.hosted.get_mut(shard) {
                h.handing_off = true;
            }
        }
        let names: Vec<(u32, Arc<str>)> = entities.iter().map(|(s, e, _)| (*s, e.clone())).collect();
        // This node is a sender too.
        self.release(&shards, &names);
        tracing::debug!(node = %self.me(), entity_type = %self.type_name, ?shards, entities = entities.len(), "hand-off: asking every region to stop sending");
        let msg = Release {
            round,
            from: self.endpoint.clone(),
            shards: shards.clone(),
            entities: names.iter().map(|(s, e)| (*s, e.to_string())).collect(),
        };
        self.rounds.insert(
            round,
            Round {
                shards,
                entities,
                awaiting: None,
                early: HashSet::default(),
                // Finding the regions, then their answers.
                deadline: Instant::now() + 2 * ROUND_TIMEOUT,
                stopping: false,
            },
        );
        let cluster = self.cluster.clone();
        let group = self.group.clone();
        let internal = self.internal.clone();
        let me = self.endpoint.id();
        tokio::spawn(async move {
            let mut nodes = Vec::new();
            for endpoint in cluster.group_waiting::<Endpoint>(&group, ROUND_TIMEOUT).await {
                let Some(addr) = endpoint.remote_addr() else { continue };
                if endpoint.id() == me {
                    continue;
                }
                match endpoint.tell(msg.clone()).await {
                    Ok(()) => nodes.push(addr.node),
                    Err(e) => {
                        tracing::debug!(region = ?endpoint, error = %e, "a region was not told of a hand-off (it is gone)")
                    }
                }
            }
            let _ = internal.send(Internal::Asked { round, nodes });
        });
    }

    /// Stops the entities of the rounds that every region has acknowledged
    /// (or whose time is up) and that this node no longer sends to.
    fn check_rounds(&mut self) {
        let now = Instant::now();
        let ready: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, r)| !r.stopping)
            .filter(|(_, r)| {
                let names: Vec<(u32, Arc<str>)> = r.entities.iter().map(|(s, e, _)| (*s, e.clone())).collect();
                let acked = r.awaiting.as_ref().is_some_and(HashSet::is_empty);
                let late = now >= r.deadline;
                if late && !acked {
                    tracing::warn!(node = %self.me(), entity_type = %self.type_name, missing = ?r.awaiting, "regions did not acknowledge a hand-off in time; messages they had in flight may be lost");
                }
                // Past the deadline, a send that still waits (an entity that
                // never makes room) no longer holds the round up.
                (acked && !self.sending_to(&r.shards, &names)) || late
            })
            .map(|(id, _)| *id)
            .collect();
        for round in ready {
            self.stop_round(round);
        }
    }

    /// Every region stopped sending: stop the entities, after what they
    /// already have.
    fn stop_round(&mut self, round: u64) {
        let Some(r) = self.rounds.get_mut(&round) else { return };
        r.stopping = true;
        let mut actors: Vec<ActorRef<A>> = r.entities.iter().map(|(_, _, a)| a.clone()).collect();
        for shard in &r.shards {
            if let Some(h) = self.hosted.get(shard) {
                actors.extend(h.entities.values().map(|a| a.actor.clone()));
            }
        }
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let mut stops = tokio::task::JoinSet::new();
            for actor in actors {
                stops.spawn(async move {
                    let graceful = async {
                        actor.stop_after_queued().await;
                        actor.wait_for_stop().await
                    };
                    if tokio::time::timeout(STOP_TIMEOUT, graceful).await.is_err() {
                        tracing::error!(entity = ?actor, "an entity did not stop in {STOP_TIMEOUT:?}; killing it");
                        actor.kill();
                        actor.wait_for_stop().await;
                    }
                });
            }
            while stops.join_next().await.is_some() {}
            let _ = internal.send(Internal::Stopped { round });
        });
    }

    /// The entities stopped: withdraw the shards' names.
    fn end_round(&mut self, round: u64) {
        let Some(r) = self.rounds.remove(&round) else { return };
        for shard in &r.shards {
            if let Some(h) = self.hosted.remove(shard) {
                if self.remember {
                    let active: Vec<String> =
                        h.entities.iter().filter(|(_, a)| !a.passivating).map(|(e, _)| e.to_string()).collect();
                    self.remember_at_new_owner(*shard, active);
                }
                self.stats.entities.fetch_sub(h.entities.len(), Ordering::Relaxed);
                self.cluster.unregister(&shard_name(&self.type_name, *shard));
                route_reset(self.routes.get_mut(shard));
                self.retry.insert(*shard);
            }
        }
        for (shard, entity, actor) in &r.entities {
            // Only the activation the round stopped (the shard may have
            // moved away and back meanwhile).
            if let Some(h) = self.hosted.get_mut(shard)
                && h.entities.get(entity).is_some_and(|a| a.actor.id() == actor.id())
            {
                h.entities.remove(entity);
                self.stats.entities.fetch_sub(1, Ordering::Relaxed);
                self.retry.insert(*shard);
            }
        }
        if !r.shards.is_empty() {
            tracing::debug!(node = %self.me(), entity_type = %self.type_name, shards = ?r.shards, "hand-off done");
            self.publish_shards();
        }
        self.dirty = true;
    }

    /// Tells the shard's new owner (by this node's view) which entities to
    /// activate when it takes the shard.
    fn remember_at_new_owner(&self, shard: u32, entities: Vec<String>) {
        if entities.is_empty() {
            return;
        }
        let me = self.me().to_owned();
        let members = self.cluster.members();
        let eligible: Vec<&Member> =
            members.iter().filter(|m| self.role.as_deref().is_none_or(|r| m.has_role(r)) && m.id != me).collect();
        let Some(owner) = owner_of(shard, &eligible).map(|m| m.id.clone()) else { return };
        let (cluster, group) = (self.cluster.clone(), self.group.clone());
        tokio::spawn(async move {
            for endpoint in cluster.group_waiting::<Endpoint>(&group, ROUND_TIMEOUT).await {
                if endpoint.remote_addr().is_some_and(|a| a.node == owner) {
                    let _ = endpoint.tell(Remember { shard, entities }).await;
                    return;
                }
            }
        });
    }

    /// Kills a shard's entities at once (no hooks).
    fn kill(&self, hosted: Hosted<A>) {
        self.stats.entities.fetch_sub(hosted.entities.len(), Ordering::Relaxed);
        for active in hosted.entities.into_values() {
            active.actor.kill();
        }
    }

    fn kill_all(&mut self) {
        let hosted: Vec<_> = self.hosted.drain().collect();
        if !hosted.is_empty() {
            tracing::warn!(node = %self.me(), entity_type = %self.type_name, shards = hosted.len(), "out of the cluster: killing every entity here");
        }
        for (_, h) in hosted {
            self.kill(h);
        }
        self.rounds.clear();
        self.remembered.clear();
        for route in self.routes.values_mut() {
            route_reset(Some(route));
        }
        self.publish_shards();
    }

    /// Entities that stopped by themselves leave; idle ones are passivated.
    fn sweep(&mut self) {
        let now = Instant::now();
        let every = self.idle.map_or(SWEEP, |i| (i / 2).max(SWEEP));
        self.next_sweep = now + every;
        let mut dead = Vec::new();
        let mut idle = Vec::new();
        for (shard, hosted) in &mut self.hosted {
            if hosted.handing_off {
                continue;
            }
            for (entity, active) in &mut hosted.entities {
                if active.passivating {
                    continue;
                }
                if !active.actor.is_alive() {
                    active.passivating = true;
                    dead.push((*shard, entity.clone(), active.actor.clone()));
                } else if actor_core::remote::take_activity(&active.actor) {
                    active.idle_since = now;
                } else if self.idle.is_some_and(|i| now.duration_since(active.idle_since) >= i) {
                    active.passivating = true;
                    idle.push((*shard, entity.clone(), active.actor.clone()));
                }
            }
        }
        if !dead.is_empty() {
            // Senders drop their refs to them; the round removes them (while
            // it runs, they count as passivating: nothing activates them).
            self.start_round(Vec::new(), dead);
        }
        if !idle.is_empty() {
            tracing::debug!(node = %self.me(), entity_type = %self.type_name, count = idle.len(), "passivating idle entities");
            self.start_round(Vec::new(), idle);
        }
    }

    /// Gives away the shards this node should no longer host (a bounded
    /// number with entities at once), and takes those it should, once
    /// their previous holders let go.
    fn rebalance(&mut self) {
        self.unsettled = false;
        self.dirty = false;
        // Set again below only while this node waits to take shards: a
        // node that is leaving, or no longer eligible, has no margin to
        // wait for, and a wake-up time left in the past would spin the loop.
        self.settle_at = None;
        if self.cluster.is_downed() {
            // The loop ends at the `SelfDowned` event, which follows.
            self.kill_all();
            return;
        }
        let me = self.me().to_owned();
        let members = self.cluster.members();
        let leaving = self.leaving.is_some();
        let eligible: Vec<&Member> = members
            .iter()
            .filter(|m| self.role.as_deref().is_none_or(|r| m.has_role(r)))
            .filter(|m| !(leaving && m.id == me))
            .collect();
        // Give away.
        let mut empty = Vec::new();
        let mut full = Vec::new();
        let mut moving = 0;
        for (shard, hosted) in &self.hosted {
            if hosted.handing_off {
                moving += 1;
                continue;
            }
            if owner_of(*shard, &eligible).is_some_and(|o| o.id == me) {
                continue;
            }
            if hosted.entities.is_empty() { empty.push(*shard) } else { full.push(*shard) }
        }
        for shard in &empty {
            self.hosted.remove(shard);
            self.cluster.unregister(&shard_name(&self.type_name, *shard));
            route_reset(self.routes.get_mut(shard));
            self.retry.insert(*shard);
        }
        full.sort_unstable();
        let room = self.max_moves.saturating_sub(moving);
        if full.len() > room {
            self.unsettled = true;
        }
        full.truncate(room);
        if !full.is_empty() {
            self.start_round(full, Vec::new());
        }
        // Take.
        if !leaving && eligible.iter().any(|m| m.id == me) {
            // Every member's full registry copy in hand: "nobody holds the
            // shard" is then known, not assumed.
            let shared = &self.cluster.shared;
            let synced = members.iter().all(|m| m.id == me || shared.registry.synced_with(shared, &m.id));
            // And every member holds this node's view: a node that joined a
            // side cut off from members it has not heard of takes nothing
            // there.
            let synced = synced && shared.views_converged();
            let mut waiting = false;
            if Instant::now() < self.not_before {
                // Nothing to do before the margin ends: sleep till then.
                self.settle_at = Some(self.not_before);
            } else if !synced {
                waiting = true;
            } else {
                for shard in 0..self.shards {
                    if self.hosted.contains_key(&shard) || owner_of(shard, &eligible).is_none_or(|o| o.id != me) {
                        continue;
                    }
                    let name = shard_name(&self.type_name, shard);
                    if !self.cluster.shared.registry.other_holders(&self.cluster.shared, &name).is_empty() {
                        waiting = true;
                        continue;
                    }
                    if let Err(e) = self.cluster.register(&name, &self.endpoint) {
                        tracing::debug!(node = %me, entity_type = %self.type_name, shard, error = %e, "shard not taken yet");
                        waiting = true;
                        continue;
                    }
                    self.hosted.insert(shard, Hosted { entities: HashMap::default(), handing_off: false });
                    let route = self.routes.entry(shard).or_default();
                    route_reset(Some(route));
                    route.holder = Holder::Local;
                    self.retry.insert(shard);
                    if let Some(ids) = self.remembered.remove(&shard) {
                        self.activate_remembered(shard, ids);
                    }
                }
            }
            if waiting {
                self.unsettled = true;
            }
        }
        if self.hosted.len() != self.stats.shards.borrow().len() || !empty.is_empty() {
            self.publish_shards();
        }
        // Ready once every shard this node owns is here (giving shards away
        // does not count; the removal margin does, for the shards it owns).
        let owns_untaken = !leaving
            && (0..self.shards).any(|shard| {
                !self.hosted.contains_key(&shard) && owner_of(shard, &eligible).is_some_and(|o| o.id == me)
            });
        self.stats.settled.store(!owns_untaken, Ordering::Relaxed);
        if leaving && self.hosted.is_empty() && self.rounds.is_empty() {
            for done in self.leaving.as_mut().map(std::mem::take).unwrap_or_default() {
                let _ = done.send(());
            }
        }
    }
}

/// Forgets where a shard's entities are: every slot is located again.
fn route_reset<A: Actor>(route: Option<&mut Route<A>>) {
    let Some(route) = route else { return };
    route.epoch += 1;
    route.holder = Holder::Unknown;
    route.slots.retain(|_, slot| {
        slot.clear_target();
        slot.busy() || !slot.pending.is_empty() || slot.lane.waiting()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Actor for Nothing {}

    #[test]
    fn lanes_of_ids_nobody_holds_any_more_are_pruned() {
        let mut lanes: Lanes<Nothing> = Lanes { by_id: HashMap::default(), prune_at: 1024 };
        let kept = lanes.get(&Arc::from("kept"));
        for i in 0..10_000 {
            drop(lanes.get(&Arc::from(format!("e{i}").as_str())));
        }
        assert!(lanes.by_id.len() <= 2048, "{} entries", lanes.by_id.len());
        // One lane per id while it is held.
        assert!(Arc::ptr_eq(&kept, &lanes.get(&Arc::from("kept"))));
    }

    #[test]
    fn shards_spread_and_are_stable() {
        let mut counts = vec![0u32; 10];
        for i in 0..10_000 {
            counts[shard_of(&format!("account-{i}"), 10) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        // Fixed values: every build must agree.
        assert_eq!(shard_of("alice", 1000), shard_of("alice", 1000));
        assert_eq!(fnv1a(&[b"a"]), fnv1a(&[b"a"]));
        assert_ne!(fnv1a(&[b"ab"]), fnv1a(&[b"a", b"c"]));
    }

    fn member(id: &str) -> Member {
        Member { id: id.into(), addr: id.into(), run: 1, roles: Vec::new() }
    }

    #[test]
    fn a_join_moves_about_one_in_n_shards_and_only_to_the_newcomer() {
        let (a, b, c, d) = (member("a"), member("b"), member("c"), member("d"));
        let three = [&a, &b, &c];
        let four = [&a, &b, &c, &d];
        let mut moved = 0;
        for shard in 0..1000 {
            let before = owner_of(shard, &three).unwrap().id.clone();
            let after = owner_of(shard, &four).unwrap().id.clone();
            if before != after {
                assert_eq!(after, "d", "shard {shard} moved between old members");
                moved += 1;
            }
        }
        assert!((180..320).contains(&moved), "{moved} of 1000 moved");
    }
}
