//! [`Cluster`]: a node's membership in a cluster, and the service that
//! carries it.
//!
//! The service ([`Shared`]) is attached to the node as a
//! [`NodeService`]: the node tells it of peers and of the system messages
//! named [`GOSSIP`], [`LEAVING`] and [`REGISTRY`]; it answers through the
//! node's public methods (send a system message, close a peer, dial). It
//! owns the SWIM task (`membership`), the member view (`view`), the
//! registry (`registry`) and the seed dialers.

use actor_core::entropy::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actor_core::remote::BoxFuture;
use actor_core::{Actor, ActorRef};
use actor_remote::{Node, NodeBuilder, NodeContext, NodeError, NodeService, PeerRun};
use tokio::sync::{mpsc, oneshot, watch};

use crate::convergence::{Convergence, VIEW_DIGEST, ViewDigest};
use crate::membership::{
    self, DOWNED, DownedNotice, FailureDetection, GOSSIP, GossipStats, Ident, Input, LEAVING, MAX_PACKET, Member,
};
use crate::registry::{REGISTRY, Registry};
use crate::view::{SharedView, Subscription, View};

/// SWIM packets held per member while it is being dialed.
const HELD_GOSSIP: usize = 32;
/// The most downed runs a node remembers (see `Shared::downed_runs`); the
/// oldest is forgotten first.
const MAX_DOWNED_RUNS: usize = 4096;

/// The runs a resolver downed, oldest first, and when each was last told.
#[derive(Default)]
struct DownedRuns {
    by_node: BTreeMap<String, BTreeMap<u64, Option<tokio::time::Instant>>>,
    order: VecDeque<(String, u64)>,
}

impl DownedRuns {
    fn insert(&mut self, id: &str, run: u64) -> bool {
        if self.contains(id, run) {
            return false;
        }
        if self.order.len() >= MAX_DOWNED_RUNS
            && let Some((old, old_run)) = self.order.pop_front()
            && let Some(runs) = self.by_node.get_mut(&old)
        {
            runs.remove(&old_run);
            if runs.is_empty() {
                self.by_node.remove(&old);
            }
        }
        self.by_node.entry(id.to_owned()).or_default().insert(run, None);
        self.order.push_back((id.to_owned(), run));
        true
    }

    fn contains(&self, id: &str, run: u64) -> bool {
        self.by_node.get(id).is_some_and(|runs| runs.contains_key(&run))
    }

    /// Whether that run may be told now (not in the last second); if so,
    /// notes it was.
    fn may_tell(&mut self, id: &str, run: u64) -> bool {
        let Some(told) = self.by_node.get_mut(id).and_then(|runs| runs.get_mut(&run)) else { return false };
        let now = tokio::time::Instant::now();
        if told.is_some_and(|at| now.duration_since(at) < std::time::Duration::from_secs(1)) {
            return false;
        }
        *told = Some(now);
        true
    }
}
/// A SWIM packet held for a member, with when it was made.
type Held = (tokio::time::Instant, Vec<u8>);

/// How long a held SWIM packet stays worth sending: membership was built for
/// datagrams, and a verdict delivered late misleads it (a packet from a
/// partition's other side, say).
const HELD_FOR: Duration = Duration::from_secs(1);

/// Builds a [`Cluster`]: the node to run it on, the seeds to join through,
/// failure detection.
pub struct ClusterBuilder {
    node: NodeBuilder,
    seeds: Vec<String>,
    sbr: Option<crate::SplitBrainResolver>,
    roles: Vec<String>,
    detection: FailureDetection,
    reconnect_every: Duration,
}

impl ClusterBuilder {
    /// Nodes to join the cluster through (any one answering is enough; the
    /// others are learned by gossip). Each is dialed, and redialed after its
    /// connection is lost, until the node shuts down. A seed may be a name
    /// the transport resolves to several addresses (over QUIC, a DNS name
    /// such as a Kubernetes headless service, `name:port`): it is resolved
    /// again before every attempt, and each address is tried in turn.
    ///
    /// Some node must found the cluster: one without seeds, one whose
    /// every seed is itself, or, among nodes that all list the same seeds
    /// with themselves among them, the lowest address (see
    /// [`Cluster::joined`]). Nodes that only list each other are never
    /// admitted.
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// This member's roles (say `"frontend"`, `"worker"`): set once, seen
    /// by every member in [`Member::roles`] and in events, and usable for
    /// placement ([`Cluster::members_with_role`]). At most
    /// [`MAX_ROLES`](crate::MAX_ROLES), each 1 to 255 bytes; `start` refuses
    /// others ([`ClusterError::BadName`]).
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut roles: Vec<String> = roles.into_iter().map(Into::into).collect();
        roles.sort();
        roles.dedup();
        self.roles = roles;
        self
    }

    /// Decides partitions with a split-brain resolver (see
    /// [`sbr`](crate::sbr)): once the set of unreachable members has held
    /// still for its `stable_after`, this node's side either downs them or
    /// downs itself ([`ClusterEvent::SelfDowned`](crate::ClusterEvent::SelfDowned)).
    /// Every member must use the same settings. Off by default for now:
    /// without it each side of a partition downs the other and carries on.
    pub fn split_brain_resolver(mut self, resolver: crate::SplitBrainResolver) -> Self {
        self.sbr = Some(resolver);
        self
    }

    /// How members are probed and declared down (see [`FailureDetection`]);
    /// the defaults declare a silent member down in about 3.5 s.
    pub fn failure_detection(mut self, detection: FailureDetection) -> Self {
        self.detection = detection;
        self
    }

    /// Starts the node with the cluster service attached, and starts
    /// joining through the seeds.
    pub async fn start(self) -> Result<Cluster, ClusterError> {
        if self.roles.len() > membership::MAX_ROLES {
            return Err(ClusterError::BadName(format!(
                "{} roles (at most {})",
                self.roles.len(),
                membership::MAX_ROLES
            )));
        }
        if let Some(bad) = self.roles.iter().find(|r| r.is_empty() || r.len() > crate::MAX_NAME_LEN) {
            return Err(ClusterError::BadName(bad.clone()));
        }
        let bytes: usize = self.roles.iter().map(String::len).sum();
        if bytes > membership::MAX_ROLE_BYTES {
            return Err(ClusterError::BadName(format!(
                "{bytes} bytes of roles (at most {})",
                membership::MAX_ROLE_BYTES
            )));
        }
        let (inputs, inputs_rx) = mpsc::channel(membership::INPUT_QUEUE);
        let shared = Arc::new_cyclic(|this| Shared {
            this: this.clone(),
            started: OnceLock::new(),
            inputs,
            inputs_rx: Mutex::new(Some(inputs_rx)),
            detection: self.detection,
            sbr: self.sbr,
            downed: std::sync::atomic::AtomicBool::new(false),
            downed_runs: Mutex::default(),
            convergence: Mutex::default(),
            roles: self.roles.clone(),
            view: SharedView::default(),
            stats: Mutex::default(),
            held: Mutex::default(),
            registry: Registry::default(),
            stopped: watch::channel(false).0,
            before_leave: Mutex::default(),
            ready_checks: Mutex::default(),
        });
        let node = self.node.service(shared.clone()).start().await?;
        // Without seeds this node founds the cluster: admitted at once.
        if self.seeds.is_empty() {
            shared.admit();
        }
        let distinct: actor_core::entropy::HashSet<&String> = self.seeds.iter().collect();
        let seeds = Arc::new(SelfSeeds { total: distinct.len(), resolved: Mutex::default() });
        if let Some(ctx) = shared.ctx()
            && !self.seeds.is_empty()
        {
            tokio::spawn(found_if_lowest(ctx.clone(), Arc::downgrade(&shared), seeds.clone(), self.reconnect_every));
        }
        for seed in self.seeds {
            if let Some(ctx) = shared.ctx() {
                let (inputs, weak) = (shared.inputs.clone(), Arc::downgrade(&shared));
                tokio::spawn(keep_connected(ctx.clone(), inputs, weak, seeds.clone(), seed, self.reconnect_every));
            }
        }
        Ok(Cluster { node, shared })
    }
}

/// How long a node that is the lowest address of one of its own seeds
/// waits for an admitted member to answer before it founds the cluster.
pub const FOUND_AFTER: Duration = Duration::from_secs(5);

/// What the seeds were found to resolve to.
struct SelfSeeds {
    /// How many distinct seeds there are.
    total: usize,
    /// What they resolved to.
    resolved: Mutex<Resolved>,
}

/// Each seed's addresses when it was last resolved, and those of them found
/// to be this node.
#[derive(Default)]
struct Resolved {
    seeds: BTreeMap<String, Vec<String>>,
    me: std::collections::BTreeSet<String>,
}

/// After [`FOUND_AFTER`], founds the cluster if no admitted member has
/// answered, this node's address is the lowest of all its seeds resolve
/// to, and every other of those addresses is a reachable member of its
/// view, none admitted (nodes that all list the same seeds, or all pods
/// behind one DNS seed, started at once or all restarted), so that they
/// form one cluster. A seed that does not answer blocks this: it may be
/// the cluster's survivor, cut off for now (Akka's first seed node, which
/// does not wait for it, can found a second cluster then).
async fn found_if_lowest(
    node: NodeContext,
    shared: std::sync::Weak<Shared>,
    self_seeds: Arc<SelfSeeds>,
    every: Duration,
) {
    tokio::time::sleep(FOUND_AFTER).await;
    while !node.is_shutting_down() {
        let Some(shared) = shared.upgrade() else { return };
        if shared.view.is_joined() || shared.is_downed() {
            return;
        }
        if let Some(others) = self_seeds.lowest_is_me() {
            // Only with every other seed a reachable member of this node's
            // view and none of them admitted: a seed not heard from may be
            // a member of the cluster that survived, cut off for now.
            let all_here = {
                let view = shared.view.lock();
                others.iter().all(|a| view.members.values().any(|(m, reachable)| m.addr == *a && *reachable))
            };
            let admitted_told = shared.convergence.lock().unwrap_or_else(|p| p.into_inner()).admitted_told();
            if all_here && !admitted_told {
                tracing::info!(
                    node = %node.id(),
                    "no admitted member answered within {FOUND_AFTER:?}, every seed is here, and this node has the lowest address: founding the cluster"
                );
                shared.admit();
                return;
            }
        }
        drop(shared);
        tokio::time::sleep(every).await;
    }
}

impl SelfSeeds {
    /// Seed `seed` resolved to `addrs`, of which `me` are this node.
    fn resolved(&self, seed: &str, addrs: &[String], me: impl IntoIterator<Item = String>) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved.seeds.insert(seed.to_owned(), addrs.to_vec());
        resolved.me.extend(me);
    }

    /// If the lowest address of all the seeds resolve to is this node's,
    /// and some seed resolved to another node too: the others.
    fn lowest_is_me(&self) -> Option<Vec<String>> {
        let resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let Resolved { seeds, me } = &*resolved;
        let all = || seeds.values().flatten();
        let others: Vec<String> = all().filter(|a| !me.contains(*a)).cloned().collect();
        (all().min().is_some_and(|lowest| me.contains(lowest)) && !others.is_empty()).then_some(others)
    }

    /// Whether every seed, when last resolved, led to this node alone.
    fn only_me(&self) -> bool {
        let resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let Resolved { seeds, me } = &*resolved;
        seeds.len() == self.total
            && seeds.values().all(|addrs| !addrs.is_empty() && addrs.iter().all(|a| me.contains(a)))
    }
}

/// Dials seed `seed` (each address it resolves to, in turn) until
/// connected, joins the cluster through it, and dials again whenever that
/// peer is no longer connected, until the node shuts down. A node whose
/// every seed resolves to itself alone (the first pod behind a DNS seed,
/// say) founds the cluster: it is admitted at once. Otherwise it is
/// admitted once an admitted member tells it so (see
/// [`convergence`](crate::convergence)), or by [`found_if_lowest`].
async fn keep_connected(
    node: NodeContext,
    inputs: mpsc::Sender<Input>,
    shared: std::sync::Weak<Shared>,
    self_seeds: Arc<SelfSeeds>,
    seed: String,
    every: Duration,
) {
    // The node last joined through: reconnected meanwhile (by id, through
    // gossip), it is not dialed again (a second connection would replace
    // that one, failing what is in flight on it).
    let mut joined: Option<String> = None;
    while !node.is_shutting_down() {
        if shared.upgrade().is_none_or(|s| s.is_downed()) {
            return;
        }
        if let Some(peer) = &joined
            && node.connected().iter().any(|p| p.node == *peer)
        {
            node.disconnected(peer).await;
            continue;
        }
        let addrs = node.resolve(&seed).await;
        let Some(listening) = node.node().map(|n| n.addr().to_owned()) else { return };
        let me = [listening.as_str(), node.advertised_addr()];
        // Addresses found to be this node: by their text, or by dialing
        // them (a hostname, another form of the address).
        self_seeds.resolved(&seed, &addrs, addrs.iter().filter(|a| me.contains(&a.as_str())).cloned());
        let mut joined_through = None;
        for addr in addrs.iter().filter(|a| !me.contains(&a.as_str())) {
            let Some(n) = node.node() else { return };
            let peer = match n.dial(addr).await {
                Ok(peer) => peer,
                Err(NodeError::DialedItself(_)) => {
                    self_seeds.resolved(&seed, &addrs, [addr.clone()]);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(node = %node.id(), %addr, error = %e, "seed not reachable yet");
                    continue;
                }
            };
            drop(n);
            joined_through = Some((peer, addr.clone()));
            break;
        }
        if self_seeds.only_me()
            && let Some(shared) = shared.upgrade()
            && !shared.view.is_joined()
        {
            tracing::info!(node = %node.id(), "every seed is this node: founding the cluster");
            shared.admit();
        }
        if let Some((peer, addr)) = joined_through {
            let seed = Ident { id: peer.node.clone(), addr, run: peer.run, generation: 0, roles: Vec::new() };
            let _ = inputs.send(Input::Announce(seed)).await;
            // Connected (through this connection, or another one that won
            // a crossed dial): wait for the peer to be gone.
            node.disconnected(&peer.node).await;
            joined = Some(peer.node);
        }
        if node.is_shutting_down() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// The cluster service of one node: membership, the view, the registry.
pub(crate) struct Shared {
    /// Itself, for the tasks it starts (they must not keep it alive).
    this: std::sync::Weak<Shared>,
    /// The node, once started.
    pub(crate) started: OnceLock<NodeContext>,
    pub(crate) inputs: mpsc::Sender<Input>,
    inputs_rx: Mutex<Option<mpsc::Receiver<Input>>>,
    pub(crate) detection: FailureDetection,
    /// The split-brain resolver, if any.
    pub(crate) sbr: Option<crate::SplitBrainResolver>,
    /// Set once the resolver downed this node.
    downed: std::sync::atomic::AtomicBool,
    /// Runs of other nodes a split-brain resolver downed (here, or
    /// elsewhere and heard through SWIM): out for good, under any
    /// generation.
    downed_runs: Mutex<DownedRuns>,
    /// What the members told of their views: which members count in the
    /// resolver's decisions, and whether this node was admitted.
    pub(crate) convergence: Mutex<Convergence>,
    /// This member's roles.
    roles: Vec<String>,
    pub(crate) view: SharedView,
    stats: Mutex<GossipStats>,
    /// SWIM packets for members not connected yet, with when they were
    /// made, sent once they are if not older than [`HELD_FOR`] (at most
    /// [`HELD_GOSSIP`] per member; older ones are dropped first).
    held: Mutex<HashMap<String, VecDeque<Held>>>,
    pub(crate) registry: Registry,
    /// True once the node has left: subscriptions end.
    stopped: watch::Sender<bool>,
    /// What runs before this node leaves (singletons hand over).
    before_leave: Mutex<Vec<LeaveHook>>,
    /// What the node's services still wait for before it is ready (see
    /// [`Cluster::readiness`]).
    ready_checks: Mutex<Vec<ReadyCheck>>,
}

/// A service's readiness: why the node is not ready yet, if it is not.
pub(crate) type ReadyCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Something to finish before the node leaves the cluster.
pub(crate) type LeaveHook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

impl Shared {
    /// The service's way to act on its node (once it has started).
    pub(crate) fn ctx(&self) -> Option<&NodeContext> {
        self.started.get()
    }

    /// This node's id ("" before the node started, which no caller sees:
    /// the cluster exists only once its node has started).
    pub(crate) fn id(&self) -> &str {
        self.started.get().map_or("", NodeContext::id)
    }

    /// This node's run.
    pub(crate) fn run(&self) -> u64 {
        self.started.get().map_or(0, NodeContext::run)
    }

    /// This node's current SWIM identity, as the view holds it.
    fn identity(&self) -> Option<Ident> {
        let started = self.started.get()?;
        let known = self.view.lock().members.get(started.id()).map(|(m, _)| m.clone());
        Some(known.unwrap_or_else(|| Ident {
            id: started.id().to_owned(),
            addr: started.advertised_addr().to_owned(),
            run: started.run(),
            generation: 0,
            roles: self.roles.clone(),
        }))
    }

    /// The run of `id` if it is an active member.
    pub(crate) fn run_of(&self, id: &str) -> Option<u64> {
        self.view.lock().members.get(id).map(|(m, _)| m.run)
    }

    /// Counts a SWIM packet sent (`out`) or received.
    fn count(&self, out: bool, bytes: usize) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if out {
            stats.packets_sent += 1;
            stats.bytes_sent += bytes as u64;
        } else {
            stats.packets_received += 1;
            stats.bytes_received += bytes as u64;
        }
    }

    /// Sends a SWIM packet to member `to`; if it is not connected, holds
    /// the packet (a few per member) and dials it.
    pub(crate) fn send_gossip(&self, to: &Ident, bytes: Vec<u8>) {
        let Some(node) = self.ctx() else { return };
        if self.is_downed_run(&to.id, to.run) {
            // SWIM announces itself to members it holds down, to re-form
            // after a partition: not to a run a resolver downed.
            return;
        }
        let peer = PeerRun { node: to.id.clone(), run: to.run };
        let len = bytes.len();
        if node.is_connected(&peer) {
            if node.send_datagram(&peer, GOSSIP, bytes) {
                self.count(true, len);
            } else {
                tracing::debug!(node = %node.id(), peer = %to.id, "connection busy; gossip packet dropped");
            }
            return;
        }
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let queue = held.entry(to.id.clone()).or_default();
            if queue.len() >= HELD_GOSSIP {
                queue.pop_front();
            }
            queue.push_back((tokio::time::Instant::now(), bytes));
        }
        node.connect(&to.id, &to.addr);
    }

    /// Membership saw `old` go (down, left, or replaced by a newer run):
    /// close its connection, forget its registry entries.
    pub(crate) fn member_gone(&self, old: &Ident) {
        self.registry.purge_run(&old.id, old.run);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&old.id);
        if let Some(node) = self.ctx() {
            node.peer_down(&PeerRun { node: old.id.clone(), run: old.run });
        }
    }

    /// Runs `hook` (and waits for it) when this node leaves, before the
    /// others are told.
    /// Adds a condition to the node's readiness.
    pub(crate) fn ready_check(&self, check: ReadyCheck) {
        self.ready_checks.lock().unwrap_or_else(|p| p.into_inner()).push(check);
    }

    pub(crate) fn before_leave(&self, hook: LeaveHook) {
        self.before_leave.lock().unwrap_or_else(|p| p.into_inner()).push(hook);
    }

    /// A resolver downed run `run` of `id` (this node's resolver, or
    /// another's heard through SWIM); true if it was not known yet.
    pub(crate) fn mark_downed(&self, id: &str, run: u64) -> bool {
        self.downed_runs.lock().unwrap_or_else(|p| p.into_inner()).insert(id, run)
    }

    /// Whether a resolver downed run `run` of `id`.
    pub(crate) fn is_downed_run(&self, id: &str, run: u64) -> bool {
        self.downed_runs.lock().unwrap_or_else(|p| p.into_inner()).contains(id, run)
    }

    /// Tells a downed run, at most once a second, that it was downed: it
    /// downs itself, which closes its connections. (The connection stays
    /// open meanwhile, so the notice is not overtaken by a close.)
    fn tell_downed(&self, node: &NodeContext, peer: &PeerRun) {
        if !self.downed_runs.lock().unwrap_or_else(|p| p.into_inner()).may_tell(&peer.node, peer.run) {
            return;
        }
        let notice = DownedNotice { id: peer.node.clone(), run: peer.run };
        match actor_remote::codec::encode(&notice) {
            Ok(payload) => {
                node.send_system(peer, DOWNED, payload);
            }
            Err(e) => tracing::debug!(error = %e, "downed notice not encoded"),
        }
        tracing::info!(node = %node.id(), peer = %peer.node, run = peer.run, "a downed run spoke: told it so");
    }

    /// Whether every member told this node's own view digest last, having
    /// heard every member tell it.
    pub(crate) fn views_settled(&self) -> bool {
        self.convergence.lock().unwrap_or_else(|p| p.into_inner()).settled(self.id())
    }

    /// Whether every member told this node's own view digest last.
    pub(crate) fn views_converged(&self) -> bool {
        self.convergence.lock().unwrap_or_else(|p| p.into_inner()).converged(self.id())
    }

    /// A member of the view told that the cluster admitted it (`admitted`):
    /// then it admitted this node too.
    pub(crate) fn admitted_through_member(&self, admitted: bool) {
        if admitted && !self.view.is_joined() && !self.is_downed() {
            tracing::info!(node = %self.id(), "admitted by a member of the cluster");
            self.admit();
        }
    }

    /// The cluster admitted this node: it is joined, and the members of
    /// its views count once every member has told one (a view before the
    /// admission is not the cluster's).
    pub(crate) fn admit(&self) {
        self.view.mark_joined();
        self.convergence.lock().unwrap_or_else(|p| p.into_inner()).admit(self.id());
    }

    /// Tells `peer` this node's view digest.
    pub(crate) fn tell_digest(&self, node: &NodeContext, peer: &PeerRun, told: ViewDigest) {
        match actor_remote::codec::encode(&told) {
            Ok(payload) => {
                node.send_system(peer, VIEW_DIGEST, payload);
            }
            Err(e) => tracing::debug!(error = %e, "view digest not encoded"),
        }
    }

    /// Whether the split-brain resolver downed this node.
    pub(crate) fn is_downed(&self) -> bool {
        self.downed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The split-brain resolver decided this node's side gives way: its
    /// cluster services stop (membership has ended, gossip and registry
    /// updates are ignored, nothing is dialed, the view keeps this node
    /// alone, names of others are dropped, `register` refuses) and every
    /// connection is closed, now and as peers connect.
    pub(crate) fn self_down(&self, why: &str) {
        tracing::error!(node = %self.id(), reason = %why, "split-brain resolver: this node downs itself");
        self.downed.store(true, std::sync::atomic::Ordering::SeqCst);
        for other in self.view.down_self(self.id(), why) {
            self.registry.purge_run(&other.id, other.run);
        }
        if let Some(node) = self.ctx() {
            for peer in node.connected() {
                node.close_peer(&peer);
            }
        }
    }

    /// Membership saw `new` come up: connect to it, and send it this node's
    /// registry entries if connected already.
    pub(crate) fn member_up(&self, new: &Ident) {
        self.registry.purge_other_runs(&new.id, new.run);
        let Some(node) = self.ctx() else { return };
        if self.is_downed() {
            return;
        }
        if new.id == node.id() {
            return;
        }
        let peer = PeerRun { node: new.id.clone(), run: new.run };
        if node.is_connected(&peer) {
            self.registry.send_all(self, node, &peer);
        } else {
            node.connect(&new.id, &new.addr);
        }
    }
}

impl NodeService for Shared {
    fn handles(&self, wire_name: &str) -> bool {
        matches!(wire_name, GOSSIP | LEAVING | REGISTRY | DOWNED | VIEW_DIGEST)
    }

    fn started(&self, node: NodeContext) {
        let me = Ident {
            id: node.id().to_owned(),
            addr: node.advertised_addr().to_owned(),
            run: node.run(),
            generation: 0,
            roles: self.roles.clone(),
        };
        let _ = self.started.set(node);
        self.view.apply(&me.id, View::of(&me).members);
        let alone = std::collections::BTreeMap::from([(me.id.clone(), me.run)]);
        self.convergence.lock().unwrap_or_else(|p| p.into_inner()).view(&me.id, alone);
        if let Some(inputs) = self.inputs_rx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The task holds the service weakly: it ends with the node.
            tokio::spawn(membership::run(self.this.clone(), me, self.detection, self.sbr.clone(), inputs));
        }
    }

    fn peer_connected(&self, peer: &PeerRun) {
        let Some(node) = self.ctx() else { return };
        if self.is_downed() {
            // A downed node takes no part in the cluster any more.
            node.close_peer(peer);
            return;
        }
        if self.is_downed_run(&peer.node, peer.run) {
            self.tell_downed(node, peer);
            return;
        }
        // The peer gets a copy of this node's registry entries first thing,
        // then this node's view digest, then the membership packets held
        // for it.
        self.registry.send_all(self, node, peer);
        let told = self.convergence.lock().unwrap_or_else(|p| p.into_inner()).answer(self.id(), self.view.is_joined());
        self.tell_digest(node, peer, ViewDigest { ask: true, ..told });
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer.node);
        let now = tokio::time::Instant::now();
        for (_, packet) in held.into_iter().flatten().filter(|(at, _)| now.duration_since(*at) <= HELD_FOR) {
            self.count(true, packet.len());
            node.send_system(peer, GOSSIP, packet);
        }
    }

    fn dial_failed(&self, id: &str) {
        // Not reachable: what was held for it is stale by the next try.
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn peer_disconnected(&self, _peer: &PeerRun) {
        // Membership decides when a member is gone, not a connection.
    }

    fn decides_liveness(&self) -> bool {
        true
    }

    fn system_message(&self, from: &PeerRun, wire_name: &str, payload: Vec<u8>) {
        if self.is_downed() {
            return;
        }
        let me = self.id();
        let peer = &from.node;
        if wire_name != DOWNED && self.is_downed_run(peer, from.run) {
            if let Some(node) = self.ctx() {
                self.tell_downed(node, from);
            }
            return;
        }
        match wire_name {
            GOSSIP => {
                if payload.len() > MAX_PACKET {
                    tracing::warn!(node = %me, %peer, len = payload.len(), "oversized gossip packet; ignored");
                    return;
                }
                // A peer speaks for itself only: the packet's sender must be
                // the node this connection authenticated.
                if !membership::sent_by(&payload, peer) {
                    tracing::warn!(node = %me, %peer, "gossip claiming another sender; ignored");
                    return;
                }
                self.count(false, payload.len());
                if self.inputs.try_send(Input::Data(payload)).is_err() {
                    tracing::debug!(node = %me, %peer, "membership busy; gossip packet dropped");
                }
            }
            LEAVING => match actor_remote::codec::decode::<Ident>(&payload) {
                Ok(who) if who.id == *peer && who.run == from.run => {
                    if self.inputs.try_send(Input::Leaving(who)).is_err() {
                        tracing::debug!(node = %me, %peer, "membership busy; leave notice dropped");
                    }
                }
                _ => tracing::warn!(node = %me, %peer, "malformed leave notice; ignored"),
            },
            REGISTRY => self.registry.update(self, from, &payload),
            VIEW_DIGEST => match actor_remote::codec::decode::<ViewDigest>(&payload) {
                Ok(told) => {
                    self.convergence.lock().unwrap_or_else(|p| p.into_inner()).told(me, peer, from.run, told);
                    // The peer asks (at most once a second) while it has not
                    // heard every member: answer, not asking back.
                    if told.ask
                        && let Some(node) = self.ctx()
                    {
                        let joined = self.view.is_joined();
                        let answer = self.convergence.lock().unwrap_or_else(|p| p.into_inner()).answer(me, joined);
                        self.tell_digest(node, from, answer);
                    }
                    // Admitted by this digest, or hearing every member tell
                    // this node's view: news to tell the members.
                    membership::tell_view(self, me, false);
                }
                Err(_) => tracing::warn!(node = %me, %peer, "malformed view digest; ignored"),
            },
            // Only with a resolver, and only from a member of this node's
            // view (a connected node outside the cluster is not heard).
            DOWNED if self.sbr.is_none() || self.run_of(peer) != Some(from.run) => {
                tracing::warn!(node = %me, %peer, "downed notice from a non-member, or without a resolver; ignored");
            }
            DOWNED => match actor_remote::codec::decode::<DownedNotice>(&payload) {
                Ok(notice) if notice.id == me && notice.run == self.run() => {
                    let shutting_down = self.ctx().is_none_or(NodeContext::is_shutting_down);
                    let why = format!("a split-brain resolver downed this run (told by {peer})");
                    if !shutting_down && self.inputs.try_send(Input::Downed(why)).is_err() {
                        tracing::warn!(node = %me, %peer, "membership busy; downed notice dropped");
                    }
                }
                _ => tracing::warn!(node = %me, %peer, "downed notice about another run, or malformed; ignored"),
            },
            _ => {}
        }
    }

    fn lookup(&self, name: &str) -> Option<actor_remote::Located> {
        self.registry.locate(self, name)
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Singletons on this node stop before the others hear of the
            // leave (and start theirs).
            let hooks: Vec<BoxFuture<'static, ()>> =
                self.before_leave.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|hook| hook()).collect();
            // All at once: each singleton's stop is bounded on its own.
            let hooks: Vec<_> = hooks.into_iter().map(tokio::spawn).collect();
            for hook in hooks {
                let _ = hook.await;
            }
            // Members hear it at once (not after the failure-detection
            // budget) and report `MemberLeft`. The notice goes to every peer
            // without waiting, then SWIM leaves (right after, so that no
            // reply can make it rejoin under a new generation first).
            if let (Some(node), Some(me)) = (self.ctx(), self.identity())
                && let Ok(leaving) = actor_remote::codec::encode(&me)
            {
                for peer in node.connected() {
                    node.send_datagram(&peer, LEAVING, leaving.clone());
                }
            }
            let (done, left) = oneshot::channel();
            if self.inputs.try_send(Input::Leave(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), left).await;
            }
            // Stored even with no subscriber yet: later subscriptions end at once.
            self.stopped.send_replace(true);
        })
    }
}

/// This node's membership in a cluster: the member view and its events,
/// cluster-wide names and process groups. Derefs to the [`Node`] it runs
/// on, so the node's own methods (`spawn_named`, `system`, `shutdown`, …)
/// are at hand. Cheap to clone.
///
/// ```
/// # use actor_cluster::Cluster;
/// # use actor_remote::{Node, transport::mem::MemoryNetwork};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = MemoryNetwork::new();
/// let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await?;
/// let b = Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await?;
/// let mut events = b.subscribe();
/// while b.members().len() < 2 {
///     events.recv().await;
/// }
/// # a.shutdown().await; b.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    node: Node,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

impl std::ops::Deref for Cluster {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Cluster {
    /// Starts building a cluster member on the node `node` will build.
    pub fn builder(node: NodeBuilder) -> ClusterBuilder {
        ClusterBuilder {
            node,
            seeds: Vec::new(),
            sbr: None,
            roles: Vec::new(),
            detection: FailureDetection::default(),
            reconnect_every: Duration::from_millis(500),
        }
    }

    /// The node this member runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The members of the cluster as this node sees them (itself included,
    /// suspected members too, down ones not), in id order.
    pub fn members(&self) -> Vec<Member> {
        self.shared.view.lock().members.values().map(|(m, _)| m.member()).collect()
    }

    /// Waits until the cluster has admitted this node: at once for a node
    /// started without seeds (or whose every seed is itself), else once a
    /// member that was admitted itself holds the same view as this node
    /// and tells it so (two nodes that merely meet do not admit each
    /// other), or, for nodes that list the same seeds, themselves among
    /// them, once [`FOUND_AFTER`] has passed without an admitted member
    /// answering and this node has the lowest address of the seeds, every
    /// other one a reachable member of its view. Until
    /// then [`register`](Self::register) and [`join`](Self::join) refuse
    /// with [`ClusterError::NotJoined`] (a name registered before the join
    /// would be a second, unseen copy), as they do again once a
    /// split-brain resolver downed this node. Fails with `NotJoined` if the
    /// node shuts down first. A node whose seeds are all unreachable waits
    /// until one answers.
    pub async fn joined(&self) -> Result<(), ClusterError> {
        let mut joined = self.shared.view.joined_rx();
        let mut stopped = self.shared.stopped.subscribe();
        tokio::select! {
            done = joined.wait_for(|j| *j) => done.map(|_| ()).map_err(|_| ClusterError::NotJoined),
            _ = stopped.wait_for(|s| *s) => Err(ClusterError::NotJoined),
        }
    }

    /// Whether this node's split-brain resolver downed it
    /// ([`ClusterEvent::SelfDowned`](crate::ClusterEvent::SelfDowned)).
    pub fn is_downed(&self) -> bool {
        self.shared.is_downed()
    }

    /// Why this node's split-brain resolver downed it, once it has (the
    /// reason of [`ClusterEvent::SelfDowned`](crate::ClusterEvent::SelfDowned)).
    pub fn downed_reason(&self) -> Option<String> {
        self.shared.view.lock().self_downed.clone()
    }

    /// Whether the cluster has admitted this node (see [`joined`](Self::joined)).
    pub fn is_joined(&self) -> bool {
        self.shared.view.is_joined()
    }

    /// Whether this node is ready to serve, or why not: it is admitted to
    /// the cluster ([`joined`](Self::joined)), not downed, and each
    /// service started on it has what it needs (sharding: every shard this
    /// node owns is taken). What a readiness probe answers.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_downed() {
            return Err(self.downed_reason().unwrap_or_else(|| "downed".to_owned()));
        }
        if !self.is_joined() {
            return Err("not admitted to the cluster yet".to_owned());
        }
        let checks = self.shared.ready_checks.lock().unwrap_or_else(|p| p.into_inner());
        match checks.iter().find_map(|check| check()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// The members with role `role`, in id order (see [`members`](Self::members)).
    pub fn members_with_role(&self, role: &str) -> Vec<Member> {
        self.members().into_iter().filter(|m| m.has_role(role)).collect()
    }

    /// Whether the members' views have converged on this node's: every
    /// member has told this node it holds the same members, and that it
    /// heard every member tell it so. A member counts fully in split-brain
    /// decisions once the views have converged on a view holding it; until
    /// then a member that has just joined is left out, or counted on the
    /// other side of a cut (see [`sbr`](crate::sbr)). Quick (two exchanges
    /// of a few bytes after each change of members), and false while a
    /// member is unreachable or does not answer.
    pub fn is_converged(&self) -> bool {
        self.shared.views_settled()
    }

    /// Whether `id` is a member that answers probes now: false once it is
    /// suspected ([`ClusterEvent::MemberUnreachable`](crate::ClusterEvent::MemberUnreachable)),
    /// down, or unknown. This node is always reachable.
    pub fn is_reachable(&self, id: &str) -> bool {
        self.shared.view.lock().members.get(id).is_some_and(|(_, reachable)| *reachable)
    }

    /// Cluster events: first a
    /// [`ClusterEvent::MemberUp`](crate::ClusterEvent::MemberUp) per member
    /// in the view now, then every change. Ends when the node shuts down.
    pub fn subscribe(&self) -> Subscription {
        self.shared.view.subscribe(self.shared.stopped.subscribe())
    }

    /// Traffic of the membership protocol on this node so far.
    pub fn gossip_stats(&self) -> GossipStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ref to the actor named `name`: an actor of this node's system
    /// registered under that name; else the actor registered cluster-wide
    /// under it ([`register`](Self::register)); else one that a connected
    /// peer spawned under it with [`Node::spawn_named`] (asked in id order).
    pub async fn lookup<A: Actor>(&self, name: &str) -> Result<ActorRef<A>, ClusterError> {
        if self.node.system().lookup::<A>(name).is_err()
            && let Some(ctx) = self.shared.ctx()
            && let Some(found) = self.shared.registry.lookup::<A>(&self.shared, ctx, name).await?
        {
            return Ok(found);
        }
        Ok(self.node.lookup::<A>(name).await?)
    }
}

/// Errors of [`Cluster`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The node failed (start, lookup, export).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A name or group name that is empty or longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes.
    #[error("invalid name {0:?}: must be 1 to 255 bytes")]
    BadName(String),
    /// The actor has stopped.
    #[error("the actor has stopped")]
    Stopped,
    /// Another member's actor holds the name.
    #[error("the name {name:?} is registered on node {node:?}")]
    NameTaken {
        /// The name.
        name: String,
        /// The node holding it.
        node: String,
    },
    /// A limit refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The cluster has not admitted this node yet (see [`Cluster::joined`]).
    #[error("this node has not joined the cluster yet")]
    NotJoined,
}
