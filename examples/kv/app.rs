//! The kv service: a partitioned, replicated key-value store. Every node runs
//! a `Shard`, registered cluster-wide as `kv@<node>`. A key lives on the
//! [`REPLICAS`] members that score highest for it under rendezvous hashing
//! over the current member list, so any node can compute where a key is.
//! When the member list changes, each shard re-checks its keys: it copies
//! them to their new owners and drops those it no longer owns; a node that
//! leaves hands its keys over first. With two replicas, one node lost at a
//! time loses nothing. Shared by the example binary and the in-process test.
//!
//! Partitions: the nodes run a keep-majority split-brain resolver. A write
//! is acknowledged only when every owner stored it and this node sees no
//! member unreachable; while one is (a crash or a partition being decided)
//! and once this node downed itself (it was on the minority side), writes
//! are refused with the reason. Every value carries a version (wall-clock
//! milliseconds, then the writing node), and a copy only ever replaces an
//! older one: a downed node that starts again as a new member (`resume`)
//! hands its keys back to their owners after the heal, so a write it
//! acknowledged just before the partition was detected is not lost, and
//! never overwrites a later one ("later" by the writing nodes' clocks:
//! nodes whose clocks disagree by more than the time between two writes
//! of one key may order those two wrongly).
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use footlight::ClusterEvent;
use footlight::prelude::*;

/// Copies of each key.
pub const REPLICAS: usize = 2;
/// Keys per hand-over message.
const HANDOFF_CHUNK: usize = 256;

/// One node's part of the store.
#[derive(Actor)]
pub struct Shard {
    node: Cluster,
    data: Data,
}

/// A value's version: when it was written (wall-clock milliseconds), then
/// by which node (to order two writes of one millisecond). Later wins.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Milliseconds since the Unix epoch at the writing node.
    pub millis: u64,
    /// The node that took the write.
    pub node: String,
}

/// A shard's keys, with their values and versions.
pub type Data = BTreeMap<String, (String, Version)>;

/// One key with its value and version, as handed over.
pub type Entry = (String, (String, Version));

/// Stores `value` under `key` unless a later version is there already.
fn store(data: &mut Data, key: String, value: String, version: Version) {
    match data.get(&key) {
        Some((_, held)) if *held > version => {}
        _ => {
            data.insert(key, (value, version));
        }
    }
}

/// Stores a value.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = (), remote = "kv.Put")]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Its version.
    pub version: Version,
}

/// Reads a value.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Option<String>, remote = "kv.Get")]
pub struct Get(pub String);

/// Keys handed over by another shard (ownership moved).
#[derive(Message, Serialize, Deserialize)]
#[message(reply = (), remote = "kv.Handoff")]
pub struct Handoff(pub Vec<Entry>);

/// Everything the shard holds (local).
#[derive(Message)]
#[message(reply = Data)]
pub struct Dump;

/// How many keys the shard holds.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = usize, remote = "kv.Count")]
pub struct Count;

/// Re-check ownership against the member list (local).
#[derive(Message)]
pub struct Rebalance {
    /// Hand everything over: this node is leaving.
    pub leaving: bool,
}

impl Handler<Put> for Shard {
    async fn handle(&mut self, put: Put, _ctx: &mut Context<Self>) {
        store(&mut self.data, put.key, put.value, put.version);
    }
}

impl Handler<Get> for Shard {
    async fn handle(&mut self, Get(key): Get, _ctx: &mut Context<Self>) -> Option<String> {
        self.data.get(&key).map(|(value, _)| value.clone())
    }
}

impl Handler<Handoff> for Shard {
    async fn handle(&mut self, Handoff(pairs): Handoff, _ctx: &mut Context<Self>) {
        for (key, (value, version)) in pairs {
            store(&mut self.data, key, value, version);
        }
    }
}

impl Handler<Dump> for Shard {
    async fn handle(&mut self, _: Dump, _ctx: &mut Context<Self>) -> Data {
        self.data.clone()
    }
}

impl Handler<Count> for Shard {
    async fn handle(&mut self, _: Count, _ctx: &mut Context<Self>) -> usize {
        self.data.len()
    }
}

impl Handler<Rebalance> for Shard {
    async fn handle(&mut self, rebalance: Rebalance, _ctx: &mut Context<Self>) {
        let me = self.node.id().to_owned();
        let mut members = member_ids(&self.node);
        if rebalance.leaving {
            members.retain(|m| *m != me);
        }
        // Keys to copy, per new owner; keys this shard no longer owns.
        let mut moves: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        let mut not_mine = Vec::new();
        for (key, value) in &self.data {
            let owners = owners(&members, key, REPLICAS);
            for owner in owners.iter().filter(|o| **o != me) {
                moves.entry(owner.clone()).or_default().push((key.clone(), value.clone()));
            }
            if !owners.contains(&me) {
                not_mine.push(key.clone());
            }
        }
        let mut failed = BTreeSet::new();
        for (owner, pairs) in moves {
            let shard = self.node.lookup::<Shard>(&name_of(&owner)).await.ok();
            // In frames well under the peer's frame limit.
            for chunk in pairs.chunks(HANDOFF_CHUNK) {
                let sent = match &shard {
                    // A tell, not an ask: two shards handing keys to each
                    // other at once must not wait on each other.
                    Some(shard) => shard.tell(Handoff(chunk.to_vec())).await.is_ok(),
                    None => false,
                };
                if !sent {
                    // Keep what could not be handed over; the next round retries.
                    failed.extend(chunk.iter().map(|(k, _)| k.clone()));
                }
            }
        }
        for key in not_mine.into_iter().filter(|k| !failed.contains(k)) {
            self.data.remove(&key);
        }
    }
}

impl RemoteActor for Shard {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Put>().add::<Get>().add::<Handoff>().add::<Count>();
    }
}

/// The cluster-wide name of `node`'s shard.
pub fn name_of(node: &str) -> String {
    format!("kv@{node}")
}

fn member_ids(node: &Cluster) -> Vec<String> {
    node.members().into_iter().map(|m| m.id).collect()
}

/// 64-bit FNV-1a: the same on every node and every build (unlike std's
/// hasher, which promises neither).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Rendezvous hashing: the `n` members that score highest for `key`, best
/// first.
pub fn owners(members: &[String], key: &str, n: usize) -> Vec<String> {
    let mut scored: Vec<(u64, &String)> = members.iter().map(|m| (fnv1a(&[m, key]), m)).collect();
    scored.sort_by(|a, b| b.cmp(a));
    scored.into_iter().take(n).map(|(_, m)| m.clone()).collect()
}

/// Starts this node's shard, registers it, and re-checks ownership on every
/// membership change (and every 2 s, to retry hand-overs that failed).
pub fn serve(node: &Cluster) -> Result<ActorRef<Shard>, ClusterError> {
    resume(node, Data::new())
}

/// Starts this node's shard holding `data` (what a shard of this node held
/// before it downed itself), which it hands to the keys' owners.
pub fn resume(node: &Cluster, data: Data) -> Result<ActorRef<Shard>, ClusterError> {
    let shard = node.system().spawn(Shard { node: node.clone(), data });
    node.register(&name_of(node.id()), &shard)?;
    let mut events = node.subscribe();
    let weak = shard.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ClusterEvent::MemberUp(_) | ClusterEvent::MemberDown(_) | ClusterEvent::MemberLeft(_)) => {}
                    Some(_) => continue,
                    None => return,
                },
                _ = tick.tick() => {}
            }
            let Some(shard) = weak.upgrade() else { return };
            if shard.tell(Rebalance { leaving: false }).await.is_err() {
                return;
            }
        }
    });
    Ok(shard)
}

/// Hands this node's keys to their other owners, then leaves the cluster.
pub async fn leave(node: &Cluster, shard: &ActorRef<Shard>) {
    let _ = shard.tell(Rebalance { leaving: true }).await;
    // Wait for the hand-over (the next message is handled after it).
    let _ = shard.ask(Count).await;
    node.shutdown().await;
}

/// Why this node refuses writes now, if it does: it downed itself, or it
/// sees members unreachable (a crash or a partition not decided yet).
pub fn refusal(node: &Cluster) -> Option<String> {
    if let Some(reason) = node.downed_reason() {
        return Some(format!(
            "refused: this node is on the losing side of a partition and downed itself ({reason}); restart it to rejoin"
        ));
    }
    let unreachable: Vec<String> =
        node.members().into_iter().filter(|m| !node.is_reachable(&m.id)).map(|m| m.id).collect();
    (!unreachable.is_empty())
        .then(|| format!("refused: {} unreachable; writes wait until the cluster has decided", unreachable.join(", ")))
}

/// Writes `key` on its owners; returns how many copies were written. The
/// write is acknowledged (`Ok`) only when every owner stored it and this
/// node sees the whole cluster (see [`refusal`]).
pub async fn put(node: &Cluster, key: &str, value: &str) -> Result<usize, Box<dyn std::error::Error>> {
    if let Some(refused) = refusal(node) {
        return Err(refused.into());
    }
    // The runtime's wall clock: the system's, or a simulation's.
    let millis = footlight::entropy::system_time().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let version = Version { millis: u64::try_from(millis).unwrap_or(u64::MAX), node: node.id().to_owned() };
    let owners = owners(&member_ids(node), key, REPLICAS);
    let mut written = 0;
    for owner in &owners {
        let Ok(shard) = node.lookup::<Shard>(&name_of(owner)).await else { continue };
        let put = Put { key: key.to_owned(), value: value.to_owned(), version: version.clone() };
        if shard.ask(put).await.is_ok() {
            written += 1;
        }
    }
    if written < owners.len() {
        return Err(format!("{written} of {} copies of {key:?} written; not acknowledged", owners.len()).into());
    }
    if let Some(refused) = refusal(node) {
        return Err(format!("{written} copies written, but {refused}").into());
    }
    Ok(written)
}

/// Reads `key` from the first owner that has it, reachable owners first:
/// an owner the failure detector already suspects is asked last, so a read
/// goes to the live copy without waiting for that owner to be declared down.
pub async fn get(node: &Cluster, key: &str) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let mut candidates = owners(&member_ids(node), key, REPLICAS);
    // Stable: among reachable owners (and among the others) the order stays.
    candidates.sort_by_key(|owner| !node.is_reachable(owner));
    for owner in candidates {
        let Ok(shard) = node.lookup::<Shard>(&name_of(&owner)).await else { continue };
        if let Ok(Some(value)) = shard.ask(Get(key.to_owned())).await {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Keys held by each member's shard, in member order.
pub async fn counts(node: &Cluster) -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    for member in member_ids(node) {
        let count = match node.lookup::<Shard>(&name_of(&member)).await {
            Ok(shard) => shard.ask(Count).await.ok(),
            Err(_) => None,
        };
        out.push((member, count));
    }
    out
}
