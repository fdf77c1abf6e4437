//! The cluster-wide registry: names and process groups.
//!
//! Each node owns its own entries (its local actors' names and group
//! memberships) and copies them to every member it is connected to: all of
//! them when a connection is established or the member comes up, then each
//! change as it happens. A node's entries vanish everywhere when it goes down
//! or leaves. Lookups are answered from the local copy.
//!
//! Two nodes may register one name at the same time (or on both sides of a
//! partition). The rule, the same on every node whatever the order updates
//! arrive in: the registration of the node with the smallest id wins. The
//! other node drops its registration when it learns of the winner and
//! reports [`ClusterEvent::NameLost`](crate::ClusterEvent::NameLost).

use actor_core::entropy::HashMap;
use std::sync::{Mutex, MutexGuard};

use actor_core::{Actor, ActorRef, Message, SendError};
use actor_remote::{Located, NodeContext, NodeError, PeerRun, RemoteActor};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError, Shared};
use crate::membership::ClusterEvent;

/// Wire name of registry updates (payload: [`Op`]).
pub(crate) const REGISTRY: &str = "footlight.Registry";
/// The longest name or group name.
pub const MAX_NAME_LEN: usize = 255;
/// Entries one node may hold in the registry (names and group memberships
/// together); past this, a peer's further entries are ignored and logged.
pub const MAX_ENTRIES_PER_NODE: usize = 100_000;
/// The longest type name an entry may carry.
pub(crate) const MAX_TYPE_NAME_LEN: usize = 512;
/// Bytes per registry frame (about) when a node sends all of its own:
/// well under the smallest frame limit a node accepts (64 KiB).
const SYNC_CHUNK_BYTES: usize = 32 * 1024;

/// One of a node's own registrations, as it travels (node and run are those
/// of the connection it arrives on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reg {
    name: String,
    /// The actor's handle on its node.
    id: u64,
    type_name: String,
}

impl Reg {
    /// A name of 1 to [`MAX_NAME_LEN`] bytes and a type name of at most
    /// [`MAX_TYPE_NAME_LEN`] bytes.
    fn is_valid(&self) -> bool {
        !self.name.is_empty() && self.name.len() <= MAX_NAME_LEN && self.type_name.len() <= MAX_TYPE_NAME_LEN
    }

    /// About what it takes encoded.
    fn size(&self) -> usize {
        self.name.len() + self.type_name.len() + 32
    }
}

/// Splits entries into frames of at most about [`SYNC_CHUNK_BYTES`].
fn chunks(regs: Vec<Reg>) -> Vec<Vec<Reg>> {
    let mut out: Vec<Vec<Reg>> = Vec::new();
    let mut size = 0;
    for reg in regs {
        if out.is_empty() || size + reg.size() > SYNC_CHUNK_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += reg.size();
        if let Some(last) = out.last_mut() {
            last.push(reg);
        }
    }
    out
}

/// A registry update from a node about its own entries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Forget every entry of the sender: a full copy follows.
    Reset,
    /// The sender's actors hold these names.
    Names(Vec<Reg>),
    /// The sender's actors joined these groups (`name` is the group).
    Groups(Vec<Reg>),
    /// The sender's actor `id` no longer holds `name`.
    Unname { name: String, id: u64 },
    /// The sender's actor `id` left `group`.
    Ungroup { group: String, id: u64 },
    /// The full copy that followed `Reset` is complete.
    Synced,
}

/// An entry as stored: whose it is, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    node: String,
    run: u64,
    reg: Reg,
}

impl Entry {
    fn key(&self) -> (&str, u64, u64) {
        (&self.node, self.run, self.reg.id)
    }
}

/// Identifies an entry: table (groups or names), name, node, run, handle.
type Key = (bool, String, String, u64, u64);

fn key_of(groups: bool, e: &Entry) -> Key {
    (groups, e.reg.name.clone(), e.node.clone(), e.run, e.reg.id)
}

#[derive(Default)]
struct Tables {
    names: HashMap<String, Vec<Entry>>,
    groups: HashMap<String, Vec<Entry>>,
    /// Every entry's key, so adding one is O(1) however long its list is.
    keys: actor_core::entropy::HashSet<Key>,
    per_node: HashMap<String, usize>,
    /// The peer runs whose full copy has arrived (`Synced` after `Reset`).
    synced: actor_core::entropy::HashSet<(String, u64)>,
}

impl Tables {
    /// Adds `entry`; false if its node holds too many entries already.
    fn add(&mut self, groups: bool, entry: Entry) -> bool {
        let key = key_of(groups, &entry);
        if self.keys.contains(&key) {
            return true;
        }
        let count = self.per_node.entry(entry.node.clone()).or_default();
        if *count >= MAX_ENTRIES_PER_NODE {
            return false;
        }
        *count += 1;
        self.keys.insert(key);
        let table = if groups { &mut self.groups } else { &mut self.names };
        table.entry(entry.reg.name.clone()).or_default().push(entry);
        true
    }

    fn contains(&self, groups: bool, entry: &Entry) -> bool {
        self.keys.contains(&key_of(groups, entry))
    }

    /// Removes the entries of `node`'s actor `id` under `name`.
    fn remove(&mut self, groups: bool, name: &str, node: &str, id: u64) {
        self.remove_where(Some((groups, name)), |e| e.node == node && e.reg.id == id);
    }

    /// Removes every entry of `node` for which `pick(run)` holds.
    fn purge(&mut self, node: &str, pick: impl Fn(u64) -> bool) {
        self.synced.retain(|(n, r)| !(n == node && pick(*r)));
        self.remove_where(None, |e| e.node == node && pick(e.run));
    }

    /// Removes the entries `pick` selects, in one list or in all.
    fn remove_where(&mut self, only: Option<(bool, &str)>, pick: impl Fn(&Entry) -> bool) {
        let mut removed: Vec<Key> = Vec::new();
        for (groups, table) in [(false, &mut self.names), (true, &mut self.groups)] {
            if only.is_some_and(|(g, _)| g != groups) {
                continue;
            }
            table.retain(|name, list| {
                if only.is_some_and(|(_, n)| n != name) {
                    return true;
                }
                list.retain(|e| {
                    let gone = pick(e);
                    if gone {
                        removed.push(key_of(groups, e));
                    }
                    !gone
                });
                !list.is_empty()
            });
        }
        for key in removed {
            if let Some(n) = self.per_node.get_mut(&key.2) {
                *n = n.saturating_sub(1);
            }
            self.keys.remove(&key);
        }
    }
}

/// A node's copy of the cluster registry.
#[derive(Default)]
pub(crate) struct Registry {
    tables: Mutex<Tables>,
}

/// One entry of the cluster-wide registry as this node knows it (see
/// [`Cluster::registry_entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryEntry {
    /// The name, or the group's name.
    pub name: String,
    /// A group membership (else a name).
    pub group: bool,
    /// The node of the actor holding it.
    pub node: String,
    /// That node's run.
    pub run: u64,
    /// The actor's type, as its node gave it.
    pub type_name: String,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry this node knows, names then groups, each in order.
    pub(crate) fn entries(&self) -> Vec<RegistryEntry> {
        let tables = self.lock();
        let mut out = Vec::new();
        for (group, table) in [(false, &tables.names), (true, &tables.groups)] {
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            for key in keys {
                for e in &table[key] {
                    out.push(RegistryEntry {
                        name: key.clone(),
                        group,
                        node: e.node.clone(),
                        run: e.run,
                        type_name: e.reg.type_name.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether the full copy of `node`'s entries from its current run (the
    /// one in the view) has arrived: only then does "no entry of that node"
    /// mean it holds none.
    pub(crate) fn synced_with(&self, shared: &Shared, node: &str) -> bool {
        let Some(run) = shared.run_of(node) else { return false };
        self.lock().synced.contains(&(node.to_owned(), run))
    }

    /// The nodes (by id) whose live registrations of `name` this node
    /// knows of, itself excepted.
    pub(crate) fn other_holders(&self, shared: &Shared, name: &str) -> Vec<String> {
        let me = shared.id();
        self.lock()
            .names
            .get(name)
            .into_iter()
            .flatten()
            .filter(|e| e.node != me && Self::is_live(shared, e))
            .map(|e| e.node.clone())
            .collect()
    }
}

/// Whether `a` wins the name over `b`: the smaller node id (then run, then
/// handle, so that the rule is total).
fn wins(a: &Entry, b: &Entry) -> bool {
    a.key() < b.key()
}

fn check_name(name: &str) -> Result<(), ClusterError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ClusterError::BadName(name.to_owned()));
    }
    Ok(())
}

impl Registry {
    /// Whether `entry` belongs to this node or to a member in the view.
    fn is_live(shared: &Shared, entry: &Entry) -> bool {
        if entry.node == shared.id() {
            return entry.run == shared.run();
        }
        shared.run_of(&entry.node) == Some(entry.run)
    }

    /// The winning live entry of `name`.
    fn name_winner(&self, shared: &Shared, name: &str) -> Option<Entry> {
        let tables = self.lock();
        let list = tables.names.get(name)?;
        list.iter()
            .filter(|e| Self::is_live(shared, e))
            .fold(None, |best: Option<&Entry>, e| match best {
                Some(b) if wins(b, e) => Some(b),
                _ => Some(e),
            })
            .cloned()
    }

    /// Sends a registry update to every connected peer. Called with the
    /// registry locked (`_tables`), so that updates reach each peer in the
    /// order they were made, and after the full copy of a new connection.
    fn publish(node: &NodeContext, _tables: &Tables, op: &Op) {
        let Ok(payload) = actor_remote::codec::encode(op) else { return };
        for peer in node.connected() {
            node.send_system(&peer, REGISTRY, payload.clone());
        }
    }

    /// Sends all of this node's own entries to `peer`, after a reset.
    pub(crate) fn send_all(&self, shared: &Shared, node: &NodeContext, peer: &PeerRun) {
        let tables = self.lock();
        let (me, run) = (shared.id(), shared.run());
        let mine = |table: &HashMap<String, Vec<Entry>>| -> Vec<Reg> {
            table.values().flatten().filter(|e| e.node == me && e.run == run).map(|e| e.reg.clone()).collect()
        };
        let (names, groups) = (mine(&tables.names), mine(&tables.groups));
        let mut ops = vec![Op::Reset];
        ops.extend(chunks(names).into_iter().map(Op::Names));
        ops.extend(chunks(groups).into_iter().map(Op::Groups));
        ops.push(Op::Synced);
        for op in ops {
            if let Ok(payload) = actor_remote::codec::encode(&op) {
                node.send_system(peer, REGISTRY, payload);
            }
        }
        drop(tables);
    }

    /// A registry update from `from`.
    pub(crate) fn update(&self, shared: &Shared, from: &PeerRun, payload: &[u8]) {
        let (me, peer, run) = (shared.id(), from.node.as_str(), from.run);
        let op: Op = match actor_remote::codec::decode(payload) {
            Ok(op) => op,
            Err(e) => {
                tracing::warn!(node = %me, %peer, error = %e, "registry update does not decode; ignored");
                return;
            }
        };
        let entry = |reg: Reg| Entry { node: peer.to_owned(), run, reg };
        let mut lost = Vec::new();
        let mut tables = self.lock();
        match op {
            Op::Reset => tables.purge(peer, |_| true),
            Op::Names(regs) | Op::Groups(regs) if !regs.iter().all(Reg::is_valid) => {
                tracing::warn!(node = %me, %peer, "registry update with an empty or over-long name; ignored");
            }
            Op::Names(regs) => {
                for reg in regs {
                    let theirs = entry(reg);
                    // Does a registration of ours lose to it?
                    if let Some(list) = tables.names.get(&theirs.reg.name) {
                        for mine in list.iter().filter(|e| e.node == me && wins(&theirs, e)) {
                            lost.push(mine.clone());
                        }
                    }
                    if !tables.add(false, theirs) {
                        tracing::warn!(node = %me, %peer, "peer holds too many registry entries; ignored");
                        break;
                    }
                }
            }
            Op::Groups(regs) => {
                for reg in regs {
                    if !tables.add(true, entry(reg)) {
                        tracing::warn!(node = %me, %peer, "peer holds too many registry entries; ignored");
                        break;
                    }
                }
            }
            Op::Unname { name, id } => tables.remove(false, &name, peer, id),
            Op::Ungroup { group, id } => tables.remove(true, &group, peer, id),
            Op::Synced => {
                tables.synced.insert((peer.to_owned(), run));
            }
        }
        if let Some(node) = shared.ctx() {
            for mine in &lost {
                tables.remove(false, &mine.reg.name, me, mine.reg.id);
                Self::publish(node, &tables, &Op::Unname { name: mine.reg.name.clone(), id: mine.reg.id });
            }
        }
        drop(tables);
        for mine in lost {
            tracing::warn!(node = %me, name = %mine.reg.name, winner = %peer, "name lost to another node's registration");
            shared.view.emit(ClusterEvent::NameLost { name: mine.reg.name, winner: peer.to_owned() });
        }
    }

    /// Forgets the entries of run `run` of `node` (it went down or left).
    pub(crate) fn purge_run(&self, node: &str, run: u64) {
        self.lock().purge(node, |r| r == run);
    }

    /// Forgets the entries of `node` from runs other than `run` (a newer run
    /// of it came up).
    pub(crate) fn purge_other_runs(&self, node: &str, run: u64) {
        self.lock().purge(node, |r| r != run);
    }

    /// Registers a local actor's handle in `table`, and forgets it (here and
    /// on every peer) when the actor stops.
    fn add_local<A: RemoteActor>(
        cluster: &Cluster,
        groups: bool,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<(), ClusterError> {
        check_name(name)?;
        if !actor.is_remote() && !actor.is_alive() {
            return Err(ClusterError::Stopped);
        }
        let shared = &cluster.shared;
        if !shared.view.is_joined() {
            return Err(ClusterError::NotJoined);
        }
        let node = shared.ctx().ok_or(ClusterError::Node(NodeError::Stopped))?;
        let handle = node.export(actor)?;
        let reg = Reg { name: name.to_owned(), id: handle, type_name: std::any::type_name::<A>().to_owned() };
        let entry = Entry { node: shared.id().to_owned(), run: shared.run(), reg: reg.clone() };
        {
            let mut tables = shared.registry.lock();
            if tables.contains(groups, &entry) {
                // Already there (say, a restarted actor joining again).
                return Ok(());
            }
            if !groups {
                let taken = tables
                    .names
                    .get(name)
                    .into_iter()
                    .flatten()
                    .find(|e| e.key() != entry.key() && Self::is_live(shared, e))
                    .map(|e| e.node.clone());
                if let Some(holder) = taken {
                    return Err(ClusterError::NameTaken { name: name.to_owned(), node: holder });
                }
            }
            if !tables.add(groups, entry) {
                return Err(ClusterError::Refused("too many registry entries on this node".into()));
            }
            Self::publish(node, &tables, &if groups { Op::Groups(vec![reg]) } else { Op::Names(vec![reg]) });
        }
        let (shared, name, actor) = (std::sync::Arc::downgrade(shared), name.to_owned(), actor.clone());
        tokio::spawn(async move {
            actor.wait_for_stop().await;
            if let Some(shared) = shared.upgrade() {
                shared.registry.remove_local(&shared, groups, &name, handle);
            }
        });
        Ok(())
    }

    fn remove_local(&self, shared: &Shared, groups: bool, name: &str, id: u64) {
        let me = shared.id();
        let mut tables = self.lock();
        let table = if groups { &tables.groups } else { &tables.names };
        let present = table.get(name).is_some_and(|l| l.iter().any(|e| e.node == me && e.reg.id == id));
        if present {
            tables.remove(groups, name, me, id);
            let name = name.to_owned();
            if let Some(node) = shared.ctx() {
                let op = if groups { Op::Ungroup { group: name, id } } else { Op::Unname { name, id } };
                Self::publish(node, &tables, &op);
            }
        }
    }

    /// A ref to the actor behind `entry`, if it is an `A` and reachable.
    /// If its node is a member not connected right now, waits briefly for
    /// the connection when `wait` (else gives none).
    async fn entry_ref<A: Actor>(
        shared: &Shared,
        node: &NodeContext,
        entry: &Entry,
        wait: bool,
    ) -> Option<ActorRef<A>> {
        if entry.reg.type_name != std::any::type_name::<A>() {
            return None;
        }
        if entry.node == shared.id() {
            return node.exported::<A>(entry.reg.id);
        }
        let peer = PeerRun { node: entry.node.clone(), run: entry.run };
        let connected = node.is_connected(&peer) || (wait && node.await_connected(&peer).await);
        if !connected {
            return None;
        }
        node.remote_ref::<A>(&peer, entry.reg.id, &entry.reg.name)
    }

    /// Where the actor registered cluster-wide as `name` is, if anywhere
    /// live (a peer's `footlight.Lookup`).
    pub(crate) fn locate(&self, shared: &Shared, name: &str) -> Option<Located> {
        let winner = self.name_winner(shared, name)?;
        let addr = if winner.node == shared.id() {
            shared.ctx()?.advertised_addr().to_owned()
        } else {
            shared.view.lock().members.get(&winner.node)?.0.addr.clone()
        };
        Some(Located {
            node: winner.node,
            run: winner.run,
            addr,
            handle: winner.reg.id,
            type_name: winner.reg.type_name,
        })
    }

    /// The actor registered cluster-wide as `name`, if any.
    pub(crate) async fn lookup<A: Actor>(
        &self,
        shared: &Shared,
        node: &NodeContext,
        name: &str,
    ) -> Result<Option<ActorRef<A>>, ClusterError> {
        let Some(winner) = self.name_winner(shared, name) else { return Ok(None) };
        if winner.reg.type_name != std::any::type_name::<A>() {
            return Err(NodeError::WrongType {
                name: name.to_owned(),
                expected: std::any::type_name::<A>(),
                actual: winner.reg.type_name,
            }
            .into());
        }
        Ok(Self::entry_ref::<A>(shared, node, &winner, true).await)
    }
}

impl Cluster {
    /// Registers the local actor `actor` under `name` across the cluster:
    /// [`lookup`](Self::lookup) on any member finds it, until it stops,
    /// [`unregister`](Self::unregister) is called, or this node leaves or
    /// goes down.
    ///
    /// Fails with [`ClusterError::NameTaken`] if a live actor of any member
    /// already holds the name as far as this node knows. Two nodes that
    /// register one name at the same time both succeed at first; once they
    /// hear of each other, the registration of the node with the smaller id
    /// wins everywhere, and the other node reports
    /// [`ClusterEvent::NameLost`] to its subscribers.
    pub fn register<A: RemoteActor>(&self, name: &str, actor: &ActorRef<A>) -> Result<(), ClusterError> {
        Registry::add_local(self, false, name, actor)
    }

    /// Every cluster-wide name and group membership this node knows, of
    /// every member (names first, then groups, each by name): what
    /// [`lookup`](Self::lookup) and [`group`](Self::group) choose from. Two
    /// entries for one name mean a conflict not resolved yet.
    pub fn registry_entries(&self) -> Vec<RegistryEntry> {
        self.shared.registry.entries()
    }

    /// Removes this node's registration of `name`, if it has one.
    pub fn unregister(&self, name: &str) {
        let me = self.shared.id();
        let ids: Vec<u64> = self
            .shared
            .registry
            .lock()
            .names
            .get(name)
            .into_iter()
            .flatten()
            .filter(|e| e.node == me)
            .map(|e| e.reg.id)
            .collect();
        for id in ids {
            self.shared.registry.remove_local(&self.shared, false, name, id);
        }
    }

    /// Adds the local actor `actor` to process group `group` (as Erlang's
    /// `pg`): every member sees it in [`group`](Self::group) until it
    /// stops, [`leave`](Self::leave)s, or this node goes down. An actor may
    /// be in many groups; a group may hold actors of several types.
    pub fn join<A: RemoteActor>(&self, group: &str, actor: &ActorRef<A>) -> Result<(), ClusterError> {
        Registry::add_local(self, true, group, actor)
    }

    /// Takes the local actor `actor` out of `group`.
    pub fn leave<A: Actor>(&self, group: &str, actor: &ActorRef<A>) {
        let Some(id) = self.shared.ctx().and_then(|ctx| ctx.handle_of(actor)) else { return };
        self.shared.registry.remove_local(&self.shared, true, group, id);
    }

    /// The actors of type `A` in `group` on every live member (this node
    /// included) that this node is connected to, in a stable order (by
    /// node id, then join order per node).
    pub async fn group<A: Actor>(&self, group: &str) -> Vec<ActorRef<A>> {
        self.group_refs(group, None).await
    }

    /// As [`group`](Self::group), but waiting (up to `wait` for each) for
    /// the connection to a member that is not connected right now.
    pub(crate) async fn group_waiting<A: Actor>(&self, group: &str, wait: std::time::Duration) -> Vec<ActorRef<A>> {
        self.group_refs(group, Some(wait)).await
    }

    async fn group_refs<A: Actor>(&self, group: &str, wait: Option<std::time::Duration>) -> Vec<ActorRef<A>> {
        let mut entries: Vec<_> = {
            let tables = self.shared.registry.lock();
            let groups = tables.groups.get(group).into_iter().flatten();
            groups.filter(|e| Registry::is_live(&self.shared, e)).cloned().collect()
        };
        entries.sort_by(|a, b| a.node.cmp(&b.node));
        let mut refs = Vec::with_capacity(entries.len());
        let Some(ctx) = self.shared.ctx() else { return refs };
        for entry in &entries {
            let found = match wait {
                None => Registry::entry_ref::<A>(&self.shared, ctx, entry, false).await,
                Some(wait) => {
                    let found = Registry::entry_ref::<A>(&self.shared, ctx, entry, true);
                    tokio::time::timeout(wait, found).await.ok().flatten()
                }
            };
            refs.extend(found);
        }
        refs
    }

    /// Tells `msg` to every actor of type `A` in `group` (see
    /// [`group`](Self::group)); returns how many it reached. A member whose
    /// mailbox is full makes this wait; one that is gone is skipped.
    pub async fn broadcast<A, M>(&self, group: &str, msg: M) -> usize
    where
        A: actor_core::Handler<M>,
        M: Message + Clone,
    {
        let mut reached = 0;
        for actor in self.group::<A>(group).await {
            match actor.tell(msg.clone()).await {
                Ok(()) => reached += 1,
                Err(SendError::Closed(_) | SendError::NodeDown(_)) => {}
                Err(e) => tracing::debug!(error = %e, "group broadcast: one member not reached"),
            }
        }
        reached
    }
}
