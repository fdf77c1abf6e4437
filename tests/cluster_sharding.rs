//! Cluster sharding over the in-memory network on the paused clock:
//! activation on the shard's owner, reached from every node; hand-off on a
//! join and a leave with no message lost or reordered; take-over after a
//! partition decided by keep-majority; passivation. A table shared by every
//! node counts the live activations of each entity id, so that two at once
//! anywhere in the cluster fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use footlight::ClusterEvent;
use footlight::cluster::delivery::Delivered;
use footlight::cluster::{EntityError, EntityRef, Sharding, ShardingBuilder};
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use support::eventually;

const WAIT: Duration = Duration::from_secs(60);

/// What every entity, on every node, reports, by id.
#[derive(Default, Clone, Debug)]
struct Life {
    /// Activations running now, and the most ever at once.
    active: usize,
    most: usize,
    /// Each activation's node.
    nodes: Vec<String>,
    /// The numbers received, in order.
    received: Vec<u64>,
    /// `stopping` hooks run.
    stopped: usize,
    /// Reliable messages handled, in order: (key's producer, key's number,
    /// message).
    keyed: Vec<(String, u64, u64)>,
}

type Table = Arc<Mutex<HashMap<String, Life>>>;

struct Probe {
    id: String,
    node: String,
    table: Table,
}

impl Probe {
    fn life<R>(&self, f: impl FnOnce(&mut Life) -> R) -> R {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(table.entry(self.id.clone()).or_default())
    }
}

impl Actor for Probe {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let node = self.node.clone();
        self.life(|l| {
            l.active += 1;
            l.most = l.most.max(l.active);
            l.nodes.push(node);
        });
        Ok(())
    }

    async fn stopping(&mut self, _ctx: &mut Context<Self>) {
        self.life(|l| l.stopped += 1);
    }
}

/// Gone for good: stopped, or killed (no hook runs then, the state is
/// dropped).
impl Drop for Probe {
    fn drop(&mut self) {
        self.life(|l| l.active -= 1);
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = String, remote = "test.shard.Where")]
struct Where;

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.shard.Note")]
struct Note(u64);

impl Handler<Where> for Probe {
    async fn handle(&mut self, _: Where, _ctx: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl Handler<Note> for Probe {
    async fn handle(&mut self, Note(n): Note, _ctx: &mut Context<Self>) {
        self.life(|l| l.received.push(n));
    }
}

/// Takes a while, so that reliable messages queue up at the consumer and
/// its acknowledgements lag behind what was handled.
impl Handler<Delivered<u64>> for Probe {
    async fn handle(&mut self, d: Delivered<u64>, _ctx: &mut Context<Self>) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.life(|l| l.keyed.push((d.producer.to_string(), d.seq, d.msg)));
    }
}

/// Another message type, to check that one entity type carries one.
impl Handler<Delivered<String>> for Probe {
    async fn handle(&mut self, _: Delivered<String>, _ctx: &mut Context<Self>) {}
}

/// A note that takes a while to handle (the mailbox fills up).
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.shard.Slow")]
struct Slow(u64);

impl Handler<Slow> for Probe {
    async fn handle(&mut self, Slow(n): Slow, _ctx: &mut Context<Self>) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.life(|l| l.received.push(n));
    }
}

/// Stops the entity by itself (not through passivation).
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.shard.Quit")]
struct Quit;

impl Handler<Quit> for Probe {
    async fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl RemoteActor for Probe {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Where>().add::<Note>().add::<Slow>().add::<Quit>();
    }
}

/// `ids` as one cluster joined through the first, with keep-majority.
async fn cluster(net: &MemoryNetwork, ids: &[&str]) -> Vec<Cluster> {
    support::cluster_resolved(net, ids, WAIT).await
}

fn probes(node: &Cluster, table: &Table) -> ShardingBuilder<Probe> {
    let (me, table) = (node.id().to_owned(), table.clone());
    node.sharding("probe", move |id: &str| Probe { id: id.to_owned(), node: me.clone(), table: table.clone() })
        .shards(32)
}

fn snapshot(table: &Table) -> HashMap<String, Life> {
    table.lock().unwrap().clone()
}

/// Every shard hosted by exactly one of `regions`.
async fn settled(regions: &[&Sharding<Probe>], shards: u32) {
    eventually(WAIT, || async {
        let mut all: Vec<u32> = regions.iter().flat_map(|r| r.local_shards()).collect();
        all.sort_unstable();
        all == (0..shards).collect::<Vec<_>>()
    })
    .await;
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("e{i}")).collect()
}

fn assert_at_most_one(table: &Table) {
    for (id, life) in snapshot(table) {
        assert!(life.most <= 1, "{id} was active {} times at once: {:?}", life.most, life.nodes);
    }
}

#[tokio::test(start_paused = true)]
async fn an_entity_runs_once_on_its_shards_owner_and_answers_every_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    // Each node hosts some shards.
    for r in &regions {
        assert!(!r.local_shards().is_empty(), "every node hosts shards");
    }
    for id in ids(60) {
        let mut answers = Vec::new();
        for r in &regions {
            answers.push(r.entity_ref(id.as_str()).ask(Where).await.unwrap());
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{id} answered from {answers:?}");
        let host = regions.iter().position(|r| r.local_shards().contains(&r.shard_of(&id))).unwrap();
        assert_eq!(answers[0], nodes[host].id(), "{id} runs where its shard is hosted");
    }
    let lives = snapshot(&table);
    assert_eq!(lives.len(), 60);
    for (id, life) in &lives {
        assert_eq!(life.nodes.len(), 1, "{id} activated once: {:?}", life.nodes);
    }
    let activations: usize = regions.iter().map(|r| r.activations()).sum();
    assert_eq!(activations, 60);
    assert_eq!(regions.iter().map(|r| r.local_entities()).sum::<usize>(), 60);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Sends `0..count` to each id from `region`, in turns, yielding between.
async fn stream(region: &Sharding<Probe>, ids: &[String], from: u64, count: u64) {
    let refs: Vec<EntityRef<Probe>> = ids.iter().map(|id| region.entity_ref(id.as_str())).collect();
    for n in from..from + count {
        for r in &refs {
            r.send(Note(n)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn shards_move_on_a_join_and_a_leave_without_losing_or_reordering_a_message() {
    let net = MemoryNetwork::new();
    let mut nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let mut regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let entities = ids(40);
    // n3 sends all the way through; n4 joins, then n1 leaves.
    let sender = regions[2].clone();
    let ids2 = entities.clone();
    let sending = tokio::spawn(async move { stream(&sender, &ids2, 0, 300).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n4 = support::start_resolved(&net, "n4", &["n1"]).await;
    let r4 = probes(&n4, &table).start().unwrap();
    eventually(WAIT, || async { !r4.local_shards().is_empty() }).await;
    nodes.push(n4);
    regions.push(r4);
    settled(&[&regions[0], &regions[1], &regions[2], &regions[3]], 32).await;
    let leaving = nodes[0].clone();
    leaving.shutdown().await;
    settled(&[&regions[1], &regions[2], &regions[3]], 32).await;
    sending.await.unwrap();
    // Everything sent arrives: nothing crashed, every move was a hand-off.
    eventually(WAIT, || async { snapshot(&table).values().all(|l| l.received.len() == 300) }).await;
    let lives = snapshot(&table);
    let moved = lives.values().filter(|l| l.nodes.len() > 1).count();
    assert!(moved > 0, "some entities moved");
    for (id, life) in &lives {
        assert_eq!(life.received, (0..300).collect::<Vec<u64>>(), "{id}: lost or out of order");
        assert_eq!(life.most, 1, "{id} active twice at once: {:?}", life.nodes);
        // A moved entity's `stopping` hook ran on the node it left.
        assert_eq!(life.stopped, life.nodes.len() - 1, "{id}: {life:?}");
    }
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_partition_moves_shards_to_the_majority_without_two_activations() {
    let net = MemoryNetwork::new();
    let ids5 = ["n1", "n2", "n3", "n4", "n5"];
    let nodes = cluster(&net, &ids5).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let entities = ids(50);
    for id in &entities {
        regions[4].entity_ref(id.as_str()).ask(Where).await.unwrap();
    }
    let mut minority = nodes[0].subscribe();
    for a in ["n1", "n2"] {
        for b in ["n3", "n4", "n5"] {
            net.partition(a, b);
        }
    }
    let downed = async {
        loop {
            if let Some(ClusterEvent::SelfDowned { .. }) = minority.recv().await {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, downed).await.expect("n1 downed itself");
    // The minority's entities are gone at once.
    eventually(WAIT, || async { regions[0].local_entities() + regions[1].local_entities() == 0 }).await;
    settled(&[&regions[2], &regions[3], &regions[4]], 32).await;
    for id in &entities {
        let at = regions[4].entity_ref(id.as_str()).ask(Where).await.unwrap();
        assert!(["n3", "n4", "n5"].contains(&at.as_str()), "{id} on {at}");
    }
    assert_at_most_one(&table);
    // The downed side refuses: its sharding has stopped.
    eventually(WAIT, || async { matches!(regions[0].entity_ref("e1").tell(Note(0)), Err(EntityError::Stopped(_))) })
        .await;
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn passivation_stops_idle_entities_and_the_next_message_brings_them_back() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> =
        nodes.iter().map(|n| probes(n, &table).passivate_after(Duration::from_secs(10)).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let alice = regions[1].entity_ref("alice");
    alice.tell(Note(1)).unwrap();
    eventually(WAIT, || async { snapshot(&table).get("alice").is_some_and(|l| l.received == [1]) }).await;
    // Busy entities stay.
    let busy = regions[0].entity_ref("bob");
    for n in 0..30 {
        busy.tell(Note(n)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let lives = snapshot(&table);
    assert_eq!(lives["alice"].active, 0, "idle alice was passivated");
    assert_eq!(lives["alice"].stopped, 1, "with her stopping hook");
    assert_eq!(lives["bob"].active, 1, "busy bob stays");
    alice.tell(Note(2)).unwrap();
    eventually(WAIT, || async { snapshot(&table)["alice"].received == [1, 2] }).await;
    assert_eq!(snapshot(&table)["alice"].nodes.len(), 2, "activated again");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn passivation_on_request_loses_nothing_sent_meanwhile() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let host = regions.iter().find(|r| r.local_shards().contains(&r.shard_of("carol"))).unwrap().clone();
    let sender = regions.iter().find(|r| !r.local_shards().contains(&r.shard_of("carol"))).unwrap();
    let carol = sender.entity_ref("carol");
    carol.ask(Where).await.unwrap();
    for n in 0..200 {
        carol.send(Note(n)).await.unwrap();
        if n % 50 == 25 {
            host.passivate("carol");
        }
        // Time for the passivation to be under way as more arrive.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eventually(WAIT, || async { snapshot(&table).get("carol").is_some_and(|l| l.received.len() == 200) }).await;
    let life = snapshot(&table)["carol"].clone();
    assert_eq!(life.received, (0..200).collect::<Vec<u64>>());
    assert!(life.nodes.len() >= 2, "passivated and activated again: {life:?}");
    assert_eq!(life.most, 1);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_refuses_and_hands_the_message_back() {
    let net = MemoryNetwork::new();
    let node = cluster(&net, &["n1"]).await.remove(0);
    let table = Table::default();
    let region = probes(&node, &table).buffer(3).start().unwrap();
    let dave = region.entity_ref("dave");
    // The region has not run yet (one thread, no await): the buffer fills.
    for n in 0..3 {
        dave.tell(Note(n)).unwrap();
    }
    match dave.tell(Note(3)) {
        Err(EntityError::Full(Note(3))) => {}
        other => panic!("expected Full(Note(3)), got {other:?}"),
    }
    // What was accepted is delivered.
    eventually(WAIT, || async { snapshot(&table).get("dave").is_some_and(|l| l.received == [0, 1, 2]) }).await;
    dave.tell(Note(3)).unwrap();
    eventually(WAIT, || async { snapshot(&table)["dave"].received == [0, 1, 2, 3] }).await;
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_type_name_shard_count_or_entity_id_is_refused() {
    let net = MemoryNetwork::new();
    let node = cluster(&net, &["n1"]).await.remove(0);
    let table = Table::default();
    assert!(probes(&node, &table).shards(0).start().is_err());
    assert!(probes(&node, &table).shards(1_000_000).start().is_err());
    let long = "x".repeat(300);
    let t = table.clone();
    let me = node.id().to_owned();
    assert!(
        node.sharding(&long, move |id: &str| Probe { id: id.into(), node: me.clone(), table: t.clone() })
            .start()
            .is_err()
    );
    // An over-long entity id is refused with the message handed back.
    let region = probes(&node, &table).start().unwrap();
    let huge = region.entity_ref("x".repeat(footlight::cluster::sharding::MAX_ENTITY_ID_LEN + 1));
    assert!(matches!(huge.tell(Note(1)), Err(EntityError::IdTooLong(Note(1)))));
    assert!(matches!(huge.send(Note(2)).await, Err(EntityError::IdTooLong(Note(2)))));
    assert!(huge.ask(Where).await.is_err());
    assert!(table.lock().unwrap().is_empty(), "nothing was activated");
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_entity_moves_without_losing_what_was_queued_for_it() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    // An entity hosted on n1, sent to from n3.
    let id = (0..)
        .map(|i| format!("busy{i}"))
        .find(|id| regions[0].local_shards().contains(&regions[0].shard_of(id)))
        .unwrap();
    let busy = regions[2].entity_ref(id.as_str());
    busy.ask(Where).await.unwrap();
    // Far more than its mailbox holds: most wait on the way, in n1's
    // connection or in n3's region, while n1 leaves.
    for n in 0..3000 {
        busy.send(Slow(n)).await.unwrap();
    }
    nodes[0].shutdown().await;
    for n in 3000..3100 {
        busy.send(Slow(n)).await.unwrap();
    }
    eventually(WAIT, || async { snapshot(&table)[&id].received.len() == 3100 }).await;
    let life = snapshot(&table)[&id].clone();
    assert_eq!(life.received, (0..3100).collect::<Vec<u64>>(), "lost or out of order");
    assert_eq!(life.nodes.len(), 2, "moved once: {:?}", life.nodes);
    assert_eq!(life.most, 1);
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_entity_that_stops_by_itself_is_activated_afresh_and_never_twice() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let erin = regions[1].entity_ref("erin");
    erin.tell(Note(0)).unwrap();
    erin.tell(Quit).unwrap();
    // Keep sending from both nodes while the region notices and a new
    // activation takes over.
    let local = regions[0].entity_ref("erin");
    for n in 1..=300 {
        erin.tell(Note(n)).unwrap();
        local.tell(Note(1000 + n)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(WAIT, || async { snapshot(&table)["erin"].received.contains(&300) }).await;
    let life = snapshot(&table)["erin"].clone();
    assert_eq!(life.nodes.len(), 2, "activated afresh once: {life:?}");
    assert_eq!(life.most, 1, "never two at once");
    assert_eq!(life.active, 1);
    // Each sender's notes arrive in order (some were lost while the first
    // activation was gone: at most once).
    let mine: Vec<u64> = life.received.iter().copied().filter(|n| *n < 1000).collect();
    assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    assert_eq!(regions.iter().map(|r| r.local_entities()).sum::<usize>(), 1);
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Tells from one node take the fast path (straight to the entity) while
/// nothing waits for it, and the region's path otherwise; on two worker
/// threads, with passivations closing the path now and then, what one
/// sender sent still arrives in order and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_stay_in_order_between_the_fast_path_and_the_region_on_two_threads() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let ids = ids(4);
    const N: u64 = 20_000;
    let mut senders = Vec::new();
    for id in ids.clone() {
        let region = regions[0].clone();
        senders.push(tokio::spawn(async move {
            for n in 0..N {
                // A fresh ref now and then: refs of one id share the path.
                let entity = region.entity_ref(id.as_str());
                if n % 1000 == 999 {
                    entity.ask(Where).await.unwrap();
                }
                entity.send(Note(n)).await.unwrap();
            }
        }));
    }
    let passivating = {
        let (regions, ids) = (regions.clone(), ids.clone());
        tokio::spawn(async move {
            for round in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                for r in &regions {
                    r.passivate(&ids[round % ids.len()]);
                }
            }
        })
    };
    for s in senders {
        s.await.unwrap();
    }
    passivating.await.unwrap();
    eventually(WAIT, || async { ids.iter().all(|id| snapshot(&table)[id].received.len() == N as usize) }).await;
    let lives = snapshot(&table);
    assert!(lives.values().any(|l| l.nodes.len() > 1), "passivations happened while sending");
    for (id, life) in lives {
        assert_eq!(life.received, (0..N).collect::<Vec<u64>>(), "{id}: lost or out of order");
        assert_eq!(life.most, 1, "{id} active twice at once");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn remembered_entities_come_back_on_their_new_owner_without_a_message() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> =
        nodes.iter().map(|n| probes(n, &table).remember_entities().start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let entities = ids(30);
    for id in &entities {
        regions[2].entity_ref(id.as_str()).ask(Where).await.unwrap();
    }
    let on_n1: Vec<String> =
        snapshot(&table).iter().filter(|(_, l)| l.nodes == ["n1"]).map(|(id, _)| id.clone()).collect();
    assert!(!on_n1.is_empty());
    // A passivated one is not remembered.
    let forgotten = on_n1[0].clone();
    regions[0].passivate(&forgotten);
    eventually(WAIT, || async { snapshot(&table)[&forgotten].active == 0 }).await;
    nodes[0].shutdown().await;
    // Without a message, n1's entities run again on n2 or n3.
    eventually(WAIT, || async {
        let t = snapshot(&table);
        on_n1.iter().filter(|id| **id != forgotten).all(|id| t[id].active == 1 && t[id].nodes.len() == 2)
    })
    .await;
    assert_eq!(snapshot(&table)[&forgotten].active, 0, "the passivated entity stays stopped");
    assert_at_most_one(&table);
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}

/// Starts sharding of probes on `node` with a reliable consumer of `u64`s.
fn reliable_probes(node: &Cluster, table: &Table) -> Sharding<Probe> {
    let region = probes(node, table).start().unwrap();
    region.reliable_consumer::<u64>(64).unwrap();
    region
}

/// Checks each entity's reliable messages: with every repeated key left
/// out, exactly `0..count` in order; a repeated key always with the same
/// message. Returns how many deliveries repeated a key.
fn check_keyed(table: &Table, ids: &[String], count: u64) -> usize {
    let lives = snapshot(table);
    let mut repeated = 0;
    for id in ids {
        let life = &lives[id];
        let mut seen: HashMap<(String, u64), u64> = HashMap::new();
        let mut firsts = Vec::new();
        for (producer, seq, msg) in &life.keyed {
            match seen.get(&(producer.clone(), *seq)) {
                Some(first) => {
                    assert_eq!(first, msg, "{id}: key ({producer}, {seq}) came with two messages");
                    repeated += 1;
                }
                None => {
                    seen.insert((producer.clone(), *seq), *msg);
                    firsts.push(*msg);
                }
            }
        }
        assert_eq!(firsts, (0..count).collect::<Vec<u64>>(), "{id}: lost or out of order");
        assert_eq!(life.most, 1, "{id} active twice at once: {:?}", life.nodes);
    }
    repeated
}

/// Sends `0..count` reliably to each id, in turns, letting `pause` pass
/// between rounds (so that moves land mid-stream; none: only the windows
/// hold the producer back).
fn send_reliably(
    producer: &footlight::cluster::delivery::EntityProducer<Probe, u64>,
    ids: &[String],
    count: u64,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let (producer, ids) = (producer.clone(), ids.to_vec());
    tokio::spawn(async move {
        for n in 0..count {
            for id in &ids {
                producer.send(id, n).await.unwrap();
            }
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test(start_paused = true)]
async fn reliable_messages_to_entities_survive_a_join_and_a_leave_once_each_and_in_order() {
    let net = MemoryNetwork::new();
    let mut nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let mut regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| reliable_probes(n, &table)).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let entities = ids(40);
    let producer = regions[2].reliable_producer::<u64>("p").window(64).start().unwrap();
    let sending = send_reliably(&producer, &entities, 200, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // n4 joins (shards move to it), then n1 leaves (its shards move away).
    let n4 = support::start_resolved(&net, "n4", &["n1"]).await;
    let r4 = reliable_probes(&n4, &table);
    eventually(WAIT, || async { !r4.local_shards().is_empty() }).await;
    nodes.push(n4);
    regions.push(r4);
    settled(&[&regions[0], &regions[1], &regions[2], &regions[3]], 32).await;
    nodes[0].clone().shutdown().await;
    settled(&[&regions[1], &regions[2], &regions[3]], 32).await;
    sending.await.unwrap();
    tokio::time::timeout(WAIT, producer.flush()).await.expect("everything acknowledged");
    let moved = snapshot(&table).values().filter(|l| l.nodes.len() > 1).count();
    assert!(moved > 0, "some entities moved");
    // Every move was a hand-off: each message handled exactly once.
    assert_eq!(check_keyed(&table, &entities, 200), 0, "a message was handled twice");
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reliable_messages_to_entities_on_a_lost_node_come_again_with_their_keys() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2", "n3"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| reliable_probes(n, &table)).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let entities = ids(30);
    assert!(entities.iter().any(|id| regions[1].local_shards().contains(&regions[1].shard_of(id))));
    let producer = regions[0].reliable_producer::<u64>("p").window(64).start().unwrap();
    let sending = send_reliably(&producer, &entities, 400, Duration::ZERO);
    eventually(WAIT, || async { snapshot(&table).values().map(|l| l.keyed.len()).sum::<usize>() > 1000 }).await;
    // n2 is cut off mid-stream; keep-majority downs it, and its shards
    // move to n1 and n3 after the removal margin.
    let mut events = nodes[0].subscribe();
    net.isolate("n2");
    let down = async {
        loop {
            if let Some(ClusterEvent::MemberDown(m)) = events.recv().await
                && m.id == "n2"
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, down).await.expect("n2 declared down");
    settled(&[&regions[0], &regions[2]], 32).await;
    sending.await.unwrap();
    tokio::time::timeout(WAIT * 2, producer.flush()).await.expect("everything acknowledged");
    let on_n2: usize = snapshot(&table).values().filter(|l| l.nodes.len() > 1).count();
    assert!(on_n2 > 0, "some entities moved off the lost node");
    let repeated = check_keyed(&table, &entities, 400);
    // What n2 handled but could not acknowledge came again (the path this
    // test is for), at most a window per shard.
    assert!(repeated > 0 && repeated <= 32 * 64, "{repeated} repeated");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_is_ready_once_it_has_taken_its_shards() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1"]).await;
    assert_eq!(nodes[0].readiness(), Ok(()), "admitted, nothing started");
    let table = Table::default();
    let region = probes(&nodes[0], &table).start().unwrap();
    // The region has not run yet: its shards are not taken.
    let why = nodes[0].readiness().unwrap_err();
    assert!(why.contains("sharding of probe"), "{why}");
    settled(&[&region], 32).await;
    eventually(WAIT, || async { nodes[0].readiness().is_ok() }).await;
    nodes[0].shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reliable_delivery_into_an_entity_type_carries_one_message_type() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1"]).await;
    let table = Table::default();
    let region = reliable_probes(&nodes[0], &table);
    // A second consumer (its shards' names are taken) and a producer of
    // another type are refused, not left to lose messages.
    assert!(matches!(region.reliable_consumer::<u64>(8), Err(footlight::ClusterError::Refused(_))));
    assert!(matches!(region.reliable_producer::<String>("p").start(), Err(footlight::ClusterError::Refused(_))));
    assert!(region.reliable_producer::<u64>("p").start().is_ok());
    nodes[0].shutdown().await;
}

/// Entity asks on their way while the entity's node hands its shards over
/// and shuts down: each is answered once, by the old activation (it read
/// the ask in time) or by the new one (the old node answered that the
/// entity had stopped, or closed the connection without reading the ask,
/// and the message came back to be sent again), never failed.
#[tokio::test(start_paused = true)]
async fn asks_on_their_way_while_the_entitys_node_leaves_are_answered() {
    for delay in [1, 10, 100, 300] {
        // What n1 receives takes `delay` to arrive: the asks land while it
        // hands over.
        let net = MemoryNetwork::new();
        let nodes = cluster(&net, &["n1", "n2"]).await;
        let table = Table::default();
        let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
        settled(&regions.iter().collect::<Vec<_>>(), 32).await;
        let on_n1: Vec<String> =
            ids(40).into_iter().filter(|id| regions[0].local_shards().contains(&regions[0].shard_of(id))).collect();
        assert!(!on_n1.is_empty());
        for id in &on_n1 {
            assert_eq!(regions[1].entity_ref(id.as_str()).ask(Where).await.unwrap(), "n1");
        }
        net.delay("n1", Duration::from_millis(delay));
        let asks: Vec<_> = on_n1
            .iter()
            .map(|id| {
                let entity = regions[1].entity_ref(id.as_str());
                tokio::spawn(async move { entity.ask_timeout(Where, Duration::from_secs(30)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        nodes[0].shutdown().await;
        for (id, ask) in on_n1.iter().zip(asks) {
            let answer = ask.await.unwrap();
            assert!(matches!(answer.as_deref(), Ok("n1" | "n2")), "delay {delay} ms, {id}: {answer:?}");
        }
        assert_at_most_one(&table);
        nodes[1].shutdown().await;
    }
}

/// An entity ask that reaches the entity's node after the entity stopped by
/// itself, before the asking node heard of the stop, comes back with its
/// message and is sent again: a fresh activation answers it.
#[tokio::test(start_paused = true)]
async fn an_ask_reaching_an_entity_that_stopped_is_answered_by_a_fresh_activation() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["n1", "n2"]).await;
    let table = Table::default();
    let regions: Vec<Sharding<Probe>> = nodes.iter().map(|n| probes(n, &table).start().unwrap()).collect();
    settled(&regions.iter().collect::<Vec<_>>(), 32).await;
    let id = ids(40).into_iter().find(|id| regions[0].local_shards().contains(&regions[0].shard_of(id))).unwrap();
    let entity = regions[1].entity_ref(id.as_str());
    assert_eq!(entity.ask(Where).await.unwrap(), "n1");
    // n2 hears of the stop late: its region still points at the activation
    // (a delay under membership's probe timeout: nobody is suspected).
    net.delay("n2", Duration::from_millis(100));
    entity.tell(Quit).unwrap();
    eventually(WAIT, || async { snapshot(&table)[&id].active == 0 }).await;
    let answer = entity.ask_timeout(Where, Duration::from_secs(30)).await;
    assert_eq!(answer.as_deref().ok(), Some("n1"), "{answer:?}");
    let life = snapshot(&table)[&id].clone();
    assert_eq!(life.nodes, ["n1", "n1"], "activated afresh once");
    for node in &nodes {
        node.shutdown().await;
    }
}
