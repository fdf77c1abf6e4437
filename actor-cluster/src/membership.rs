//! Cluster membership: SWIM (the `foca` crate) carried over the node's own
//! connections, and the member view and events built on it.
//!
//! Foca is sans-IO: this module feeds it the gossip that arrives on
//! connections (system tells named [`GOSSIP`]), its timers (tokio sleeps),
//! and sends what it asks to send through the connection to that member,
//! dialing one when there is none. After every step, the member view is
//! compared with the last one, and the differences become
//! [`ClusterEvent`]s.

use actor_remote::PeerRun;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Weak;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Identity, Member as FocaMember, OwnedNotification, State, Timer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::Shared;
use crate::sbr::{self, Decision, Resolver, Seen, SplitBrainResolver, Verdict};
use crate::view::{Liveness, View};

/// Wire name of a SWIM packet (the payload is foca's, see `PROTOCOL.md`).
pub(crate) const GOSSIP: &str = "footlight.Gossip";
/// Wire name of "I am leaving the cluster" (payload: the sender's identity).
pub(crate) const LEAVING: &str = "footlight.Leaving";
/// Wire name of "a split-brain resolver downed your run" (payload:
/// [`DownedNotice`]), sent to a downed run that speaks again.
pub(crate) const DOWNED: &str = "footlight.Downed";

/// The payload of [`DOWNED`]: the run that was downed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DownedNotice {
    /// Its node id.
    pub(crate) id: String,
    /// The run.
    pub(crate) run: u64,
}
/// Inputs queued for the membership task before gossip is dropped (as
/// SWIM tolerates: it was built for UDP).
pub(crate) const INPUT_QUEUE: usize = 4096;
/// The largest SWIM packet sent or accepted.
pub(crate) const MAX_PACKET: usize = 8 * 1024;
/// The longest node id or address a SWIM identity may carry.
const MAX_IDENT_FIELD: usize = 255;
/// How long a member that went down is remembered (and re-announced to,
/// so a partition heals): after that, only seeds bring it back.
const FORGET_DOWN_AFTER: Duration = Duration::from_secs(600);

/// A node as the membership layer knows it: its id, the address peers dial
/// to reach it, its run (a restarted node comes back with a new one) and its
/// roles.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Member {
    /// The node id.
    pub id: String,
    /// The address peers dial.
    pub addr: String,
    /// The run of the node ([`Node::run`](actor_remote::Node::run)).
    pub run: u64,
    /// Its roles, set at start ([`ClusterBuilder::roles`](crate::ClusterBuilder::roles)),
    /// sorted, without duplicates.
    pub roles: Vec<String>,
}

impl Member {
    /// Whether the member has role `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The most roles a member may carry.
pub const MAX_ROLES: usize = 16;
/// The most bytes of roles a member may carry in all (an identity travels
/// in every SWIM packet, two or three times).
pub(crate) const MAX_ROLE_BYTES: usize = 1024;

/// A change in the cluster, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A node joined (or came back after being down).
    MemberUp(Member),
    /// A node stopped answering probes and is suspected; it is still a
    /// member, and turns down unless it answers within the suspicion
    /// timeout.
    MemberUnreachable(Member),
    /// A suspected node answered again.
    MemberReachable(Member),
    /// A node was declared down (it stopped answering, or a newer run of it
    /// joined): its refs fail with `NodeDown`, its names and group
    /// memberships are gone.
    MemberDown(Member),
    /// A node left on purpose ([`Node::shutdown`](actor_remote::Node::shutdown)).
    /// What follows is as for [`MemberDown`](Self::MemberDown).
    ///
    /// A member reports `MemberLeft` when the leaving node's notice reaches
    /// it before SWIM declares that run down some other way; when the
    /// notice cannot reach it (the leaving node was not connected to it
    /// yet, say right after a restart, or a partition cuts them), it
    /// reports [`MemberDown`](Self::MemberDown) for the same run instead.
    /// Either way the run is gone exactly once.
    MemberLeft(Member),
    /// This node downed itself: its split-brain resolver found its side of
    /// a partition must give way (see [`sbr`](crate::sbr)). Its cluster
    /// services have stopped and its connections are closed; the
    /// application decides whether to exit or to start again as a new
    /// member (a new node, a new run). Only with a resolver configured.
    SelfDowned {
        /// The decision, as logged.
        reason: String,
    },
    /// A cluster-wide name this node registered lost to another node's
    /// registration of the same name (see [`Cluster::register`](crate::Cluster::register)).
    NameLost {
        /// The name.
        name: String,
        /// The node whose registration won.
        winner: String,
    },
}

/// Knobs of failure detection; see [`ClusterBuilder::failure_detection`](crate::ClusterBuilder::failure_detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureDetection {
    /// How often each node probes one other member (default 500 ms).
    pub probe_interval: Duration,
    /// How long a probe waits for its answer before others are asked to
    /// probe indirectly (default 250 ms; at most half the probe interval).
    pub probe_timeout: Duration,
    /// How long a suspected member has to refute before it is declared down
    /// (default 2.5 s).
    pub suspect_timeout: Duration,
    /// How often a node re-announces itself to members it saw go down, so a
    /// cluster split by a long partition re-forms once it heals, and to one
    /// random member, to catch up on updates it missed (default 2 s).
    pub rejoin_interval: Duration,
}

impl Default for FailureDetection {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(250),
            suspect_timeout: Duration::from_millis(2500),
            rejoin_interval: Duration::from_secs(2),
        }
    }
}

impl FailureDetection {
    /// How long a node may hear from no member before it takes its own
    /// judgements of them as unreliable (it may be the one cut off): the
    /// suspicion timeout, and never less than two probe rounds.
    fn silence_limit(&self) -> Duration {
        self.suspect_timeout.max(self.probe_interval * 2 + self.probe_timeout)
    }

    fn foca_config(&self) -> foca::Config {
        let mut config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(15));
        config.probe_period = self.probe_interval.max(Duration::from_millis(1));
        // foca needs the timeout strictly inside the interval.
        config.probe_rtt = self.probe_timeout.min(config.probe_period / 2).max(Duration::from_micros(1));
        config.remove_down_after = Some(FORGET_DOWN_AFTER);
        config.suspect_to_down_after = self.suspect_timeout;
        config.max_packet_size = NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
        config.periodic_announce_to_down_members =
            Some(foca::PeriodicParams { frequency: self.rejoin_interval, num_members: NonZeroUsize::MIN });
        // Announcing to a random member now and then gets its full member
        // list back: a node that missed updates (its first packets to a new
        // member went over a connection closed as a crossed dial) catches up.
        config.periodic_announce =
            Some(foca::PeriodicParams { frequency: self.rejoin_interval, num_members: NonZeroUsize::MIN });
        config
    }
}

/// A node's SWIM identity: the member plus a generation, bumped when the
/// node finds it was declared down (say, on the other side of a long
/// partition) and rejoins under the same run. Its roles travel with it but
/// are not part of what makes two identities the same (a seed is announced
/// to before its roles are known).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Ident {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) run: u64,
    pub(crate) generation: u32,
    /// Absent from the identities of nodes that set none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) roles: Vec<String>,
}

impl PartialEq for Ident {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, &self.addr, self.run, self.generation) == (&other.id, &other.addr, other.run, other.generation)
    }
}

impl Eq for Ident {}

impl std::hash::Hash for Ident {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.id, &self.addr, self.run, self.generation).hash(state);
    }
}

impl Identity for Ident {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Ident { generation: self.generation.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> String {
        self.id.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Total, so every node keeps the same one of two identities.
        (self.run, self.generation, &self.addr) > (adversary.run, adversary.generation, &adversary.addr)
    }
}

impl Ident {
    /// Refuses identities with over-long fields.
    fn check(&self) -> Result<(), CodecError> {
        if self.id.is_empty()
            || self.id.len() > MAX_IDENT_FIELD
            || self.addr.len() > MAX_IDENT_FIELD
            || self.roles.len() > MAX_ROLES
            || self.roles.iter().any(|r| r.is_empty() || r.len() > MAX_IDENT_FIELD)
            || self.roles.iter().map(String::len).sum::<usize>() > MAX_ROLE_BYTES
        {
            return Err(CodecError("identity with an empty or over-long field, or too many roles".into()));
        }
        Ok(())
    }

    pub(crate) fn member(&self) -> Member {
        Member { id: self.id.clone(), addr: self.addr.clone(), run: self.run, roles: self.roles.clone() }
    }
}

/// Foca's packets in MessagePack (named fields), as the rest of the
/// protocol.
#[derive(Default)]
pub(crate) struct Codec;

/// A SWIM packet that does not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("gossip codec: {0}")]
pub(crate) struct CodecError(String);

fn put(buf: &mut impl bytes::BufMut, value: &impl Serialize) -> Result<(), CodecError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| CodecError(e.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError("packet full".into()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: serde::de::DeserializeOwned>(buf: &mut impl bytes::Buf) -> Result<T, CodecError> {
    let mut chunk = buf.chunk();
    let before = chunk.len();
    let value = rmp_serde::from_read(&mut chunk).map_err(|e| CodecError(e.to_string()))?;
    let used = before - chunk.len();
    buf.advance(used);
    Ok(value)
}

impl foca::Codec<Ident> for Codec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &foca::Header<Ident>, mut buf: impl bytes::BufMut) -> Result<(), CodecError> {
        put(&mut buf, header)
    }

    fn decode_header(&mut self, mut buf: impl bytes::Buf) -> Result<foca::Header<Ident>, CodecError> {
        let header: foca::Header<Ident> = take(&mut buf)?;
        header.src.check()?;
        header.dst.check()?;
        Ok(header)
    }

    fn encode_member(&mut self, member: &FocaMember<Ident>, mut buf: impl bytes::BufMut) -> Result<(), CodecError> {
        put(&mut buf, member)
    }

    fn decode_member(&mut self, mut buf: impl bytes::Buf) -> Result<FocaMember<Ident>, CodecError> {
        let member: FocaMember<Ident> = take(&mut buf)?;
        member.id().check()?;
        Ok(member)
    }
}

/// Whether the SWIM packet `payload` names `peer` as its sender.
pub(crate) fn sent_by(payload: &[u8], peer: &str) -> bool {
    let mut buf = payload;
    matches!(take::<foca::Header<Ident>>(&mut buf), Ok(header) if header.src.id == peer)
}

/// What the membership task acts on.
pub(crate) enum Input {
    /// A SWIM packet from a peer.
    Data(Vec<u8>),
    /// Join through this member (a seed that answered).
    Announce(Ident),
    /// A peer said it is leaving.
    Leaving(Ident),
    /// This node leaves: tell the others, then answer.
    Leave(oneshot::Sender<()>),
    /// The lease of a lease-majority decision was taken (or not).
    LeaseAnswer(LeaseAnswer),
    /// A member said a split-brain resolver downed this run: down itself.
    Downed(String),
}

/// What asking for the lease of a lease-majority decision gave.
pub(crate) struct LeaseAnswer {
    /// Whether this node took the lease.
    won: bool,
    /// The members to down if it did.
    unreachable: Vec<String>,
    /// Why not, if not.
    why: String,
}

/// Counters of the membership protocol's traffic on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipStats {
    /// SWIM packets handed to connections.
    pub packets_sent: u64,
    /// Their bytes (SWIM payload, without frame headers).
    pub bytes_sent: u64,
    /// SWIM packets received from peers.
    pub packets_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
}

type Swim = Foca<Ident, Codec, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// A SWIM member state as the view reads it.
fn liveness(state: State) -> Liveness {
    match state {
        State::Alive => Liveness::Alive,
        State::Suspect => Liveness::Suspect,
        State::Down => Liveness::Down,
    }
}

/// Replaces the SWIM instance with a fresh one under a new generation of
/// this node's identity. The members the old one held alive or suspected
/// are carried over as alive (a suspicion raised while this node heard from
/// no one says nothing about them); what the old one judged down, and the
/// updates it still meant to spread, are dropped. The fresh instance
/// announces itself to the members it carries, so they learn its new
/// generation, and then probes them as usual.
fn start_over(
    swim: &mut Swim,
    runtime: &mut AccumulatingRuntime<Ident>,
    timers: &mut (mpsc::UnboundedSender<Timer<Ident>>, mpsc::UnboundedReceiver<Timer<Ident>>),
    me: &Ident,
    config: &FailureDetection,
    rng: &mut rand::rngs::StdRng,
) {
    use rand::SeedableRng;
    let carried: Vec<FocaMember<Ident>> = swim
        .iter_members()
        .filter(|m| m.id().id != me.id)
        .map(|m| FocaMember::new(m.id().clone(), m.incarnation(), State::Alive))
        .collect();
    if carried.is_empty() && swim.iter_membership_state().next().is_none() {
        // Alone (say, starting up): nothing was judged, nothing to drop.
        return;
    }
    tracing::info!(
        node = %me.id,
        silent_for = ?config.silence_limit(),
        carried = carried.len(),
        "heard from no member for the suspicion timeout: starting membership over rather than judge them"
    );
    let renewed = swim.identity().renew().unwrap_or_else(|| swim.identity().clone());
    *swim = Foca::new(renewed, config.foca_config(), rand::rngs::StdRng::from_rng(rng), Codec);
    *runtime = AccumulatingRuntime::new();
    // Timers of the old instance go to a channel nobody reads.
    *timers = mpsc::unbounded_channel::<Timer<Ident>>();
    let idents: Vec<Ident> = carried.iter().map(|m| m.id().clone()).collect();
    if let Err(e) = swim.apply_many(carried.into_iter(), false, &mut *runtime) {
        tracing::debug!(error = %e, "carried members not applied");
    }
    for ident in idents {
        let _ = swim.announce(ident, &mut *runtime);
    }
}

/// Whether this node is cut off: it heard from no member for the
/// silence limit, and yet its SWIM instance judged a member down; or a
/// packet ends such a silence.
struct Isolation {
    last_heard: tokio::time::Instant,
    /// The members SWIM held down when a packet last arrived.
    down_when_heard: actor_core::entropy::HashSet<Ident>,
}

impl Isolation {
    fn new(now: tokio::time::Instant) -> Self {
        Isolation { last_heard: now, down_when_heard: Default::default() }
    }

    /// A SWIM packet arrived.
    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
    }

    /// Whether nothing was heard for at least `after` (this node may be the
    /// one cut off).
    fn silent_for(&self, now: tokio::time::Instant, after: std::time::Duration) -> bool {
        now.duration_since(self.last_heard) >= after
    }

    /// Whether a packet arriving now ends a silence of at least `after`.
    fn back_from_silence(&self, now: tokio::time::Instant, after: std::time::Duration) -> bool {
        now.duration_since(self.last_heard) >= after
    }

    /// Whether SWIM, now holding `down` down, just judged a member down while
    /// the node heard from none for `after`: a verdict this node cannot
    /// tell from its own isolation. While packets arrive, `down` is
    /// remembered instead.
    fn judged_while_cut_off(
        &mut self,
        now: tokio::time::Instant,
        after: std::time::Duration,
        down: actor_core::entropy::HashSet<Ident>,
    ) -> bool {
        if now.duration_since(self.last_heard) < after {
            self.down_when_heard = down;
            return false;
        }
        let judged = down.difference(&self.down_when_heard).next().is_some();
        // Judged (and dropped) once: the next verdict needs a new silence.
        self.down_when_heard = down;
        judged
    }
}

/// Members SWIM holds down that the view has as members (and that did not
/// leave) are held, unreachable, until the resolver decides.
fn hold_downs<'a>(
    shared: &Shared,
    held: &mut BTreeMap<String, Ident>,
    states: impl Iterator<Item = (&'a Ident, Liveness)>,
) {
    let view = shared.view.lock();
    for (ident, liveness) in states {
        let member = view.members.get(&ident.id).is_some_and(|(m, _)| m.run == ident.run);
        let leaving = view.leaving.get(&ident.id) == Some(&ident.run);
        if liveness == Liveness::Down && member && !leaving {
            held.entry(ident.id.clone()).or_insert_with(|| ident.clone());
        }
    }
}

/// The most runs a node remembers as having left (see `run`); then it
/// forgets them all (a forgotten one would only be taken as downed).
const MAX_LEFT_RUNS: usize = 4096;

/// What one resolver step knows of this node's situation.
struct Step<'a> {
    /// This node's current identity.
    current: &'a Ident,
    /// Whether this node heard from no member for the silence limit.
    cut_off: bool,
    /// Members heard from straight lately
    /// ([`NodeContext::hears`](actor_remote::NodeContext::hears)).
    heard_from: &'a BTreeSet<String>,
    now: tokio::time::Instant,
}

/// What the split-brain resolver makes of one step.
enum SbrOutcome {
    Continue,
    /// This side survives: down these members.
    DownUnreachable(Vec<Ident>),
    /// This side gives way.
    DownSelf(String),
    /// Lease-majority: ask for the lease after `delay`.
    AskLease {
        delay: std::time::Duration,
        unreachable: Vec<String>,
        side: Vec<String>,
    },
}

/// One step of the split-brain resolver: members SWIM holds down (held by
/// [`hold_downs`] earlier in the step) stay in the view as unreachable
/// until a decision; the set of
/// unreachable members (all others while this node hears no one) feeds
/// the resolver, whose verdict is acted on.
fn sbr_step(
    resolver: &mut Resolver,
    shared: &Shared,
    step: Step<'_>,
    held: &mut BTreeMap<String, Ident>,
    states: &mut Vec<(Ident, Liveness)>,
    answer: Option<LeaseAnswer>,
) -> SbrOutcome {
    let Step { current, cut_off, heard_from, now } = step;
    // A member that left is not held (its leave may have reached SWIM
    // before the notice reached the view).
    {
        let view = shared.view.lock();
        held.retain(|id, h| view.leaving.get(id) != Some(&h.run));
    }
    for (ident, liveness) in states.iter_mut() {
        if *liveness == Liveness::Down && held.get(&ident.id).is_some_and(|h| h.run == ident.run) {
            *liveness = Liveness::Suspect;
        }
    }
    // Held members SWIM no longer lists (a fresh instance after this node's
    // silence keeps only live ones) stay unreachable until the decision.
    let missing: Vec<(Ident, Liveness)> = held
        .values()
        .filter(|h| !states.iter().any(|(i, _)| i.id == h.id))
        .map(|h| (h.clone(), Liveness::Suspect))
        .collect();
    states.extend(missing);
    let proposed = View::next(current, states.iter().map(|(i, l)| (i, *l)));
    // Held until decided, or until the member answers again or a newer run
    // of it is in view.
    held.retain(|id, h| proposed.get(id).is_some_and(|(m, reachable)| m.run == h.run && !reachable));
    let others = proposed.keys().filter(|id| **id != current.id);
    // Unreachable from here: SWIM's verdict (its own probes, or gossip of
    // another member's), unless this node heard from the member straight
    // lately (`NodeContext::hears`). Gossip alone does not get a member downed
    // that this node hears: a member that was itself cut off or slow
    // suspects healthy ones, and its stale verdicts spread after the heal
    // faster than their refutation (the simulation found healthy nodes
    // downed that way after a short isolation of another).
    let unreachable: BTreeSet<String> = if cut_off {
        others.cloned().collect()
    } else {
        others
            .filter(|id| proposed.get(*id).is_some_and(|(_, reachable)| !reachable) && !heard_from.contains(*id))
            .cloned()
            .collect()
    };
    resolver.observe(now, unreachable.clone());
    if let Some(answer) = answer {
        resolver.decided(now);
        tracing::warn!(node = %current.id, won = answer.won, unreachable = ?answer.unreachable, "lease-majority: the lease answered");
        if !answer.won {
            return SbrOutcome::DownSelf(answer.why);
        }
        // Down those still unreachable (a member that answered again
        // meanwhile is judged afresh).
        let down: Vec<Ident> = answer
            .unreachable
            .iter()
            .filter(|id| unreachable.contains(*id))
            .filter_map(|id| proposed.get(id).map(|(m, _)| m.clone()))
            .collect();
        for m in &down {
            held.remove(&m.id);
        }
        return SbrOutcome::DownUnreachable(down);
    }
    match resolver.verdict(now) {
        Verdict::Wait => SbrOutcome::Continue,
        Verdict::DownAll => SbrOutcome::DownSelf(format!(
            "down-all: members kept becoming unreachable and reachable again ({} unreachable now)",
            unreachable.len()
        )),
        Verdict::Decide => {
            let convergence = shared.convergence.lock().unwrap_or_else(|p| p.into_inner());
            let seen: Vec<Seen> = proposed
                .iter()
                .map(|(id, (m, _))| Seen {
                    id: id.clone(),
                    addr: m.addr.clone(),
                    run: m.run,
                    reachable: !unreachable.contains(id),
                    counts: convergence.standing(id, m.run),
                })
                .collect();
            drop(convergence);
            let decision = sbr::decide(resolver.strategy(), &seen);
            tracing::warn!(
                node = %current.id,
                strategy = ?resolver.strategy(),
                members = ?seen.iter().map(|s| (&s.id, s.reachable, s.counts)).collect::<Vec<_>>(),
                ?decision,
                "split-brain resolver decided"
            );
            match decision {
                Decision::DownUnreachable(ids) => {
                    resolver.decided(now);
                    for id in &ids {
                        held.remove(id);
                    }
                    SbrOutcome::DownUnreachable(
                        ids.iter().filter_map(|id| proposed.get(id).map(|(m, _)| m.clone())).collect(),
                    )
                }
                Decision::DownSelf { why } => SbrOutcome::DownSelf(why),
                Decision::AskLease { delay, unreachable } => {
                    resolver.asking();
                    let side = seen.iter().filter(|s| s.reachable).map(|s| s.id.clone()).collect();
                    SbrOutcome::AskLease { delay, unreachable, side }
                }
            }
        }
    }
}

/// Feeds this node's view to its [`Convergence`](crate::convergence) if
/// its members changed, counts this node admitted once a member told it
/// was, and tells the members its digest when that is due.
pub(crate) fn tell_view(shared: &Shared, me: &str, members_changed: bool) {
    let members: Option<BTreeMap<String, u64>> =
        members_changed.then(|| shared.view.lock().members.iter().map(|(id, (m, _))| (id.clone(), m.run)).collect());
    let (changed, admitted) = {
        let mut convergence = shared.convergence.lock().unwrap_or_else(|p| p.into_inner());
        let changed = members.is_some_and(|members| convergence.view(me, members));
        (changed, convergence.admitted_member(me))
    };
    shared.admitted_through_member(admitted);
    let joined = shared.view.is_joined();
    let now = tokio::time::Instant::now();
    let told = shared.convergence.lock().unwrap_or_else(|p| p.into_inner()).due_tell(me, changed, joined, now);
    if let (Some((told, peers)), Some(node)) = (told, shared.ctx()) {
        for peer in &peers {
            shared.tell_digest(node, peer, told);
        }
    }
}

/// Asks for the lease of a lease-majority decision after `delay`, and
/// hands the answer to the membership task: this side won if this node
/// took the lease or a member of its `side` holds it (every node of a side
/// asks; one of them takes it, its owner name being its node id). The
/// taker holds the lease for [`SplitBrainResolver::lease_hold`], then
/// releases it.
fn ask_lease(
    settings: &SplitBrainResolver,
    shared: &Shared,
    me: &str,
    delay: std::time::Duration,
    unreachable: Vec<String>,
    side: Vec<String>,
) {
    let inputs = shared.inputs.clone();
    let hold = settings.lease_hold(shared.detection.suspect_timeout);
    let me = me.to_owned();
    let lease = settings.lease.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let ask = async {
            let Some(lease) = &lease else {
                return (false, false, "lease-majority without a lease: downing this side".to_owned());
            };
            match lease.acquire().await {
                Ok(true) => (true, true, String::new()),
                Ok(false) => match lease.holder().await {
                    Ok(Some(holder)) if side.contains(&holder) => (false, true, String::new()),
                    Ok(holder) => (
                        false,
                        false,
                        format!(
                            "lease-majority: the lease {:?} is held by {holder:?}, on the other side",
                            lease.name()
                        ),
                    ),
                    Err(e) => {
                        (false, false, format!("lease-majority: the lease {:?} could not be read: {e}", lease.name()))
                    }
                },
                Err(e) => {
                    (false, false, format!("lease-majority: the lease {:?} could not be taken: {e}", lease.name()))
                }
            }
        };
        let (took, won, why) = match tokio::time::timeout(crate::sbr::LEASE_ANSWER, ask).await {
            Ok(answer) => answer,
            Err(_) => (
                false,
                false,
                format!("lease-majority: the lease service did not answer within {:?}", crate::sbr::LEASE_ANSWER),
            ),
        };
        tracing::warn!(node = %me, won, ?delay, "lease-majority: asked for the lease");
        // The lease is held (and then released) whatever becomes of the answer.
        let _ = inputs.send(Input::LeaseAnswer(LeaseAnswer { won, unreachable, why })).await;
        if let (true, Some(lease)) = (took, lease) {
            tokio::time::sleep(hold).await;
            if let Err(e) = lease.release().await {
                tracing::warn!(node = %me, error = %e, "lease-majority: the lease was not released; it expires by itself");
            }
        }
    });
}

/// Runs SWIM for the cluster service `shared` until it is dropped or has
/// left (or, with a split-brain resolver, has downed itself).
pub(crate) async fn run(
    shared: Weak<Shared>,
    me: Ident,
    config: FailureDetection,
    sbr: Option<SplitBrainResolver>,
    mut inputs: mpsc::Receiver<Input>,
) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(actor_core::entropy::next_u64());
    let mut swim: Swim = Foca::new(me.clone(), config.foca_config(), rand::rngs::StdRng::from_rng(&mut rng), Codec);
    let mut runtime = AccumulatingRuntime::new();
    let mut timers = mpsc::unbounded_channel::<Timer<Ident>>();
    let mut isolation = Isolation::new(tokio::time::Instant::now());
    let mut resolver = sbr.map(|settings| Resolver::new(settings, tokio::time::Instant::now()));
    let mut held: BTreeMap<String, Ident> = BTreeMap::new();
    // Runs that said they leave: their final down is not a resolver's.
    let mut leavers: BTreeSet<(String, u64)> = BTreeSet::new();
    loop {
        let mut left = None;
        let mut lease_answer = None;
        let check_at = resolver.as_ref().and_then(Resolver::next_check);
        let tell_at = shared
            .upgrade()
            .and_then(|shared| shared.convergence.lock().unwrap_or_else(|p| p.into_inner()).next_tell(&me.id));
        tokio::select! {
            // The resolver's next decision time: the step below decides.
            () = async {
                match check_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            // The view digest's next tell: the step below tells it.
            () = async {
                match tell_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            input = inputs.recv() => match input {
                Some(Input::Data(bytes)) => {
                    let now = tokio::time::Instant::now();
                    if isolation.back_from_silence(now, config.silence_limit()) {
                        // Heard again after the silence limit: every member
                        // this node suspected meanwhile would be judged down
                        // before its refutation could arrive. Start over
                        // first, then read this packet.
                        start_over(&mut swim, &mut runtime, &mut timers, &me, &config, &mut rng);
                    }
                    isolation.heard(now);
                    if let Err(e) = swim.handle_data(&bytes, &mut runtime) {
                        tracing::debug!(error = %e, "gossip packet ignored");
                    }
                }
                Some(Input::Announce(seed)) => {
                    if let Err(e) = swim.announce(seed, &mut runtime) {
                        tracing::debug!(error = %e, "announce failed");
                    }
                }
                Some(Input::Leaving(who)) => {
                    isolation.heard(tokio::time::Instant::now());
                    if leavers.len() >= MAX_LEFT_RUNS {
                        leavers.clear();
                    }
                    leavers.insert((who.id.clone(), who.run));
                    if let Some(shared) = shared.upgrade() {
                        let mut view = shared.view.lock();
                        // Only members are remembered as leaving.
                        if view.members.get(&who.id).is_some_and(|(m, _)| m.run == who.run) {
                            view.leaving.insert(who.id.clone(), who.run);
                        }
                    }
                    // Down is final for that identity: no need to wait for
                    // the suspicion timeout.
                    let down = FocaMember::new(who, foca::Incarnation::MAX, State::Down);
                    if let Err(e) = swim.apply_many(std::iter::once(down), true, &mut runtime) {
                        tracing::debug!(error = %e, "leave not applied");
                    }
                }
                Some(Input::LeaseAnswer(answer)) => lease_answer = Some(answer),
                Some(Input::Downed(why)) => {
                    if let Some(shared) = shared.upgrade() {
                        shared.self_down(&why);
                    }
                    return;
                }
                Some(Input::Leave(done)) => {
                    if let Err(e) = swim.leave_cluster(&mut runtime) {
                        tracing::debug!(error = %e, "leave gossip failed");
                    }
                    left = Some(done);
                }
                None => return,
            },
            Some(timer) = timers.1.recv() => {
                if let Err(e) = swim.handle_timer(timer, &mut runtime) {
                    tracing::debug!(error = %e, "membership timer failed");
                }
            }
        }
        // SWIM judged a member down while this node heard from no member for
        // the silence limit: this node cannot tell whether they are down or
        // it is cut off, and that verdict, gossiped after the heal, would
        // down healthy members. Before anything is sent, it starts over (see
        // `start_over`): the verdict and what was still to spread are
        // dropped, the members it held alive or suspected are kept.
        // With a resolver, the down verdicts are held first: starting over
        // drops them from SWIM, not from the resolver's view.
        if resolver.is_some()
            && let Some(shared) = shared.upgrade()
        {
            // A final down heard through SWIM (incarnation MAX: another
            // resolver's decision, or a leave, which this node heard of
            // first as a notice) is remembered by run, whatever generation
            // the run comes back under.
            for m in swim.iter_membership_state() {
                let who = m.id();
                if m.state() == State::Down
                    && m.incarnation() == foca::Incarnation::MAX
                    && who.id != me.id
                    && !leavers.contains(&(who.id.clone(), who.run))
                    && shared.mark_downed(&who.id, who.run)
                {
                    tracing::info!(node = %me.id, member = %who.id, run = who.run, "a resolver downed this member's run: out for good");
                }
            }
            hold_downs(&shared, &mut held, swim.iter_membership_state().map(|m| (m.id(), liveness(m.state()))));
            held.retain(|_, h| !shared.is_downed_run(&h.id, h.run));
        }
        let down = swim.iter_membership_state().filter(|m| m.state() == State::Down).map(|m| m.id().clone()).collect();
        if left.is_none() && isolation.judged_while_cut_off(tokio::time::Instant::now(), config.silence_limit(), down) {
            start_over(&mut swim, &mut runtime, &mut timers, &me, &config, &mut rng);
        }
        let Some(shared) = shared.upgrade() else { return };
        while let Some((to, bytes)) = runtime.to_send() {
            shared.send_gossip(&to, bytes.to_vec());
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            let timer_tx = timers.0.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = timer_tx.send(timer);
            });
        }
        while let Some(notification) = runtime.to_notify() {
            match notification {
                OwnedNotification::Defunct if left.is_none() => {
                    tracing::warn!(node = %me.id, "declared down by the cluster");
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(node = %me.id, generation = id.generation, "rejoined the cluster after being declared down");
                }
                OwnedNotification::Idle => tracing::debug!(node = %me.id, "no other member in view"),
                _ => {}
            }
        }
        // Our own identity changes when we rejoin; keep it in the view.
        let current = swim.identity().clone();
        // A run a resolver downed is out for good: not a member under any
        // generation.
        let collect = |swim: &Swim| -> Vec<(Ident, Liveness)> {
            swim.iter_membership_state()
                .filter(|m| !shared.is_downed_run(&m.id().id, m.id().run))
                .map(|m| (m.id().clone(), liveness(m.state())))
                .collect()
        };
        let mut states = collect(&swim);
        if let Some(resolver) = resolver.as_mut() {
            let now = tokio::time::Instant::now();
            let cut_off = left.is_none() && isolation.silent_for(now, config.silence_limit());
            // Members this node heard from straight (over their
            // connection, which carries a heartbeat every interval) within
            // one and a half intervals are reachable from here, whatever
            // SWIM's gossip says. Asked only of those SWIM does not hold
            // alive.
            let heard_from: BTreeSet<String> = match shared.ctx() {
                Some(ctx) => states
                    .iter()
                    .filter(|(i, l)| *l != Liveness::Alive && ctx.hears(&PeerRun { node: i.id.clone(), run: i.run }))
                    .map(|(i, _)| i.id.clone())
                    .collect(),
                None => BTreeSet::new(),
            };
            let step = Step { current: &current, cut_off, heard_from: &heard_from, now };
            match sbr_step(resolver, &shared, step, &mut held, &mut states, lease_answer.take()) {
                SbrOutcome::Continue => {}
                SbrOutcome::AskLease { delay, unreachable, side } => {
                    ask_lease(resolver.settings(), &shared, &me.id, delay, unreachable, side);
                }
                SbrOutcome::DownUnreachable(down) => {
                    // SWIM agrees at once (as for a leave): down is final
                    // for those identities, and for their runs here.
                    for who in &down {
                        shared.mark_downed(&who.id, who.run);
                    }
                    let down = down.into_iter().map(|who| FocaMember::new(who, foca::Incarnation::MAX, State::Down));
                    if let Err(e) = swim.apply_many(down, true, &mut runtime) {
                        tracing::debug!(error = %e, "resolver's downs not applied");
                    }
                    while let Some((to, bytes)) = runtime.to_send() {
                        shared.send_gossip(&to, bytes.to_vec());
                    }
                    states = collect(&swim);
                }
                SbrOutcome::DownSelf(why) => {
                    shared.self_down(&why);
                    return;
                }
            }
        }
        let changes = shared.view.apply(&me.id, View::next(&current, states.iter().map(|(i, l)| (i, *l))));
        tell_view(&shared, &me.id, !changes.up.is_empty() || !changes.gone.is_empty());
        for old in changes.gone {
            shared.member_gone(&old);
        }
        for new in changes.up {
            shared.member_up(&new);
            if new.id != me.id {
                // Ask the newcomer for its view too: updates this node missed
                // (sent over a connection a crossed dial closed) come back at once.
                let _ = shared.inputs.try_send(Input::Announce(new));
            }
        }
        if let Some(done) = left {
            let _ = done.send(());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use foca::Codec as _;
    use proptest::prelude::*;

    use super::*;

    fn ident(id: &str) -> Ident {
        Ident { id: id.into(), addr: format!("{id}:1"), run: 7, generation: 1, roles: Vec::new() }
    }

    #[test]
    fn packets_round_trip_and_name_their_sender() {
        let header = foca::Header {
            src: ident("a"),
            src_incarnation: 3,
            dst: ident("b"),
            message: foca::Message::PingReq { target: ident("c"), probe_number: 9 },
        };
        let mut buf = bytes::BytesMut::new();
        Codec.encode_header(&header, &mut buf).unwrap();
        let member = FocaMember::new(ident("c"), 2, State::Suspect);
        Codec.encode_member(&member, &mut buf).unwrap();
        let mut read = &buf[..];
        assert_eq!(Codec.decode_header(&mut read).unwrap(), header);
        assert_eq!(Codec.decode_member(&mut read).unwrap(), member);
        assert!(read.is_empty());
        assert!(sent_by(&buf, "a"));
        assert!(!sent_by(&buf, "b"));
        // Named fields, as PROTOCOL.md says.
        let named = rmp_serde::to_vec_named(&ident("a")).unwrap();
        assert!(named.windows(10).any(|w| w == b"generation"));
    }

    /// An identity from a node that set no roles has no `roles` key, and
    /// one without the key reads as no roles; roles do not make two
    /// identities different.
    #[test]
    fn roles_are_optional_on_the_wire_and_not_part_of_identity() {
        #[derive(Serialize)]
        struct Bare<'a> {
            id: &'a str,
            addr: &'a str,
            run: u64,
            generation: u32,
        }
        let bare = rmp_serde::to_vec_named(&Bare { id: "a", addr: "a:1", run: 7, generation: 1 }).unwrap();
        assert_eq!(rmp_serde::to_vec_named(&ident("a")).unwrap(), bare);
        let read: Ident = rmp_serde::from_slice(&bare).unwrap();
        assert!(read.roles.is_empty());
        let with_roles = Ident { roles: vec!["worker".into()], ..ident("a") };
        assert_eq!(with_roles, ident("a"));
        let round: Ident = rmp_serde::from_slice(&rmp_serde::to_vec_named(&with_roles).unwrap()).unwrap();
        assert_eq!(round.roles, ["worker"]);
        assert!(Ident { roles: vec![String::new()], ..ident("a") }.check().is_err());
    }

    #[test]
    fn a_full_packet_is_an_error_not_a_panic() {
        let member = FocaMember::new(ident("c"), 2, State::Alive);
        let mut small = bytes::BufMut::limit(bytes::BytesMut::new(), 8);
        assert!(Codec.encode_member(&member, &mut small).is_err());
    }

    #[test]
    fn identities_of_a_later_run_or_generation_win() {
        let a = ident("a");
        let renewed = a.renew().unwrap();
        assert!(renewed.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&renewed));
        let restarted = Ident { run: 8, generation: 0, ..a.clone() };
        assert!(restarted.win_addr_conflict(&renewed));
    }

    /// The member view a SWIM instance reaches from `updates`, applied
    /// one at a time in the given order.
    fn view_after(updates: &[FocaMember<Ident>]) -> std::collections::BTreeMap<String, (Ident, bool)> {
        let me = ident("me");
        let mut swim: Swim = Foca::new(
            me.clone(),
            FailureDetection::default().foca_config(),
            <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
            Codec,
        );
        let mut runtime = AccumulatingRuntime::new();
        for update in updates {
            let _ = swim.apply_many(std::iter::once(update.clone()), false, &mut runtime);
        }
        let states = swim.iter_membership_state().map(|m| (m.id(), liveness(m.state())));
        View::next(&me, states)
    }

    /// The silence after which a node doubts its own judgements is never
    /// shorter than two probe rounds, whatever the suspicion timeout: with
    /// a slow probe, ordinary quiet between packets is not isolation.
    #[test]
    fn the_silence_limit_covers_two_probe_rounds() {
        let default = FailureDetection::default();
        assert_eq!(default.silence_limit(), default.suspect_timeout);
        let slow = FailureDetection {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            suspect_timeout: Duration::from_secs(3),
            ..default
        };
        assert_eq!(slow.silence_limit(), Duration::from_secs(11));
    }

    proptest! {
        /// The same set of member updates, applied in any order, gives the
        /// same view: every node that heard the same gossip agrees, whatever
        /// order it arrived in (several runs and generations of one node
        /// included).
        #[test]
        fn the_same_updates_in_any_order_give_the_same_view(
            updates in proptest::collection::vec((0u8..4, 1u64..3, 0u32..2, 0u16..3, 0u8..3), 0..16),
            seed in any::<u64>(),
        ) {
            let updates: Vec<FocaMember<Ident>> = updates
                .into_iter()
                .map(|(id, run, generation, incarnation, state)| {
                    let who = Ident { id: format!("n{id}"), addr: format!("n{id}:1"), run, generation, roles: Vec::new() };
                    let state = [State::Alive, State::Suspect, State::Down][usize::from(state)];
                    FocaMember::new(who, incarnation, state)
                })
                .collect();
            let mut shuffled = updates.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(view_after(&updates), view_after(&shuffled));
        }

        #[test]
        fn arbitrary_gossip_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = sent_by(&bytes, "a");
            let mut swim: Swim = Foca::new(
                ident("me"),
                FailureDetection::default().foca_config(),
                <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
                Codec,
            );
            let mut runtime = AccumulatingRuntime::new();
            let _ = swim.handle_data(&bytes, &mut runtime);
        }
    }
}
