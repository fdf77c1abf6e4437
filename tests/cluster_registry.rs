//! The cluster-wide registry and process groups over the in-memory
//! transport, on tokio's paused clock: names resolve on every member and
//! vanish with their actor or node; a name registered on both sides of a
//! partition resolves to the smaller node id once it heals, and the loser is
//! told; groups follow joins, leaves, actor stops and node loss; refs to a
//! node's old run never reach its new one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/raw_peer.rs"]
mod raw_peer;
mod support;

use std::time::Duration;

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{AskError, ClusterEvent, NodeError, SendError};
use support::{cluster, eventually, start};

/// How long (virtual time) a condition may take to hold.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Actor)]
struct Counter {
    node: String,
    hits: u64,
}

#[derive(Message, Serialize, Deserialize, Clone)]
#[message(remote = "test.Hit")]
struct Hit;

#[derive(Message, Serialize, Deserialize)]
#[message(reply = (String, u64), remote = "test.Who")]
struct Who;

impl Handler<Hit> for Counter {
    async fn handle(&mut self, _: Hit, _ctx: &mut Context<Self>) {
        self.hits += 1;
    }
}

impl Handler<Who> for Counter {
    async fn handle(&mut self, _: Who, _ctx: &mut Context<Self>) -> (String, u64) {
        (self.node.clone(), self.hits)
    }
}

impl RemoteActor for Counter {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Hit>().add::<Who>();
    }
}

fn counter(node: &Cluster) -> ActorRef<Counter> {
    node.system().spawn(Counter { node: node.id().to_owned(), hits: 0 })
}

#[tokio::test(start_paused = true)]
async fn a_registered_name_resolves_on_every_member() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    let actor = counter(&nodes[1]);
    nodes[1].register("counter", &actor).unwrap();
    for node in &nodes {
        eventually(WAIT, || async { node.lookup::<Counter>("counter").await.is_ok() }).await;
        let found: ActorRef<Counter> = node.lookup("counter").await.unwrap();
        found.tell(Hit).await.unwrap();
        assert_eq!(found.ask(Who).await.unwrap().0, "b");
    }
    assert_eq!(actor.ask(Who).await.unwrap().1, 3);
    // The wrong type is an error, not a ref.
    #[derive(Actor)]
    struct Other;
    assert!(matches!(nodes[0].lookup::<Other>("counter").await, Err(ClusterError::Node(NodeError::WrongType { .. }))));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_name_held_elsewhere_is_refused_and_bad_names_are_errors() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"], WAIT).await;
    nodes[0].register("one", &counter(&nodes[0])).unwrap();
    eventually(WAIT, || async { nodes[1].lookup::<Counter>("one").await.is_ok() }).await;
    match nodes[1].register("one", &counter(&nodes[1])) {
        Err(ClusterError::NameTaken { name, node }) => assert_eq!((name.as_str(), node.as_str()), ("one", "a")),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert!(matches!(nodes[0].register("", &counter(&nodes[0])), Err(ClusterError::BadName(_))));
    let long = "x".repeat(footlight::cluster::MAX_NAME_LEN + 1);
    assert!(matches!(nodes[0].register(&long, &counter(&nodes[0])), Err(ClusterError::BadName(_))));
    // Only local actors: a ref to b's actor cannot be registered on a.
    let remote: ActorRef<Counter> = nodes[1].lookup("one").await.unwrap();
    assert!(matches!(nodes[1].register("two", &remote), Err(ClusterError::Node(NodeError::NotLocal))));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn names_vanish_with_their_actor_with_unregister_and_with_their_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    // The actor stops.
    let first = counter(&nodes[1]);
    nodes[1].register("first", &first).unwrap();
    eventually(WAIT, || async { nodes[0].lookup::<Counter>("first").await.is_ok() }).await;
    first.stop();
    eventually(WAIT, || async {
        matches!(nodes[0].lookup::<Counter>("first").await, Err(ClusterError::Node(NodeError::NotFound(_))))
    })
    .await;
    // Unregistered.
    nodes[1].register("second", &counter(&nodes[1])).unwrap();
    eventually(WAIT, || async { nodes[0].lookup::<Counter>("second").await.is_ok() }).await;
    nodes[1].unregister("second");
    eventually(WAIT, || async {
        matches!(nodes[0].lookup::<Counter>("second").await, Err(ClusterError::Node(NodeError::NotFound(_))))
    })
    .await;
    // The node goes silent: once it is down, its names are gone.
    nodes[2].register("third", &counter(&nodes[2])).unwrap();
    eventually(WAIT, || async { nodes[0].lookup::<Counter>("third").await.is_ok() }).await;
    let mut events = nodes[0].subscribe();
    net.isolate("c");
    let wait = async {
        loop {
            if let Some(ClusterEvent::MemberDown(m)) = events.recv().await
                && m.id == "c"
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap();
    assert!(matches!(nodes[0].lookup::<Counter>("third").await, Err(ClusterError::Node(NodeError::NotFound(_)))));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_name_registered_on_both_sides_of_a_partition_goes_to_the_smaller_node_id() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    // c sits on b's side; a is alone.
    net.partition("a", "b");
    net.partition("a", "c");
    let mut at_b = nodes[1].subscribe();
    nodes[0].register("leader", &counter(&nodes[0])).unwrap();
    nodes[1].register("leader", &counter(&nodes[1])).unwrap();
    // While split, each side sees its own.
    assert_eq!(nodes[0].lookup::<Counter>("leader").await.unwrap().ask(Who).await.unwrap().0, "a");
    eventually(WAIT, || async {
        match nodes[2].lookup::<Counter>("leader").await {
            Ok(found) => found.ask(Who).await.map(|w| w.0 == "b").unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    net.heal_all();
    // The loser is told...
    let wait = async {
        loop {
            match at_b.recv().await {
                Some(ClusterEvent::NameLost { name, winner }) => return (name, winner),
                Some(_) => {}
                None => panic!("node gone"),
            }
        }
    };
    let (name, winner) = tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap();
    assert_eq!((name.as_str(), winner.as_str()), ("leader", "a"));
    // ...and every member resolves the name to a's actor.
    for node in &nodes {
        eventually(WAIT, || async {
            match node.lookup::<Counter>("leader").await {
                Ok(found) => found.ask(Who).await.map(|w| w.0 == "a").unwrap_or(false),
                Err(_) => false,
            }
        })
        .await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn groups_follow_joins_leaves_stops_and_node_loss() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    let members: Vec<ActorRef<Counter>> = nodes.iter().map(counter).collect();
    for (node, actor) in nodes.iter().zip(&members) {
        node.join("workers", actor).unwrap();
    }
    for node in &nodes {
        eventually(WAIT, || async { node.group::<Counter>("workers").await.len() == 3 }).await;
    }
    // A broadcast from any node reaches every member once.
    assert_eq!(nodes[1].broadcast::<Counter, _>("workers", Hit).await, 3);
    // (Asked from the same node: FIFO per sender and receiver means each
    // ask arrives after the broadcast's tell.)
    for found in nodes[1].group::<Counter>("workers").await {
        assert_eq!(found.ask(Who).await.unwrap().1, 1);
    }
    // The order is the same everywhere: by node id.
    let mut order = Vec::new();
    for found in nodes[2].group::<Counter>("workers").await {
        order.push(found.ask(Who).await.unwrap().0);
    }
    assert_eq!(order, ["a", "b", "c"]);
    // Leave, and an actor stopping, take members out everywhere.
    nodes[0].leave("workers", &members[0]);
    members[1].stop();
    for node in &nodes {
        eventually(WAIT, || async { node.group::<Counter>("workers").await.len() == 1 }).await;
    }
    // Node loss too.
    nodes[0].join("workers", &counter(&nodes[0])).unwrap();
    eventually(WAIT, || async { nodes[0].group::<Counter>("workers").await.len() == 2 }).await;
    net.isolate("c");
    eventually(WAIT, || async { nodes[0].group::<Counter>("workers").await.len() == 1 }).await;
    assert_eq!(nodes[0].broadcast::<Counter, _>("workers", Hit).await, 1);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn refs_to_a_restarted_node_never_reach_its_new_run() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"], WAIT).await;
    nodes[1].register("svc", &counter(&nodes[1])).unwrap();
    eventually(WAIT, || async { nodes[0].lookup::<Counter>("svc").await.is_ok() }).await;
    let old: ActorRef<Counter> = nodes[0].lookup("svc").await.unwrap();
    old.tell(Hit).await.unwrap();
    nodes[1].shutdown().await;
    // b comes back (same id and address, new run) with a new "svc".
    let b2 = start(&net, "b", &["a"]).await;
    let fresh = counter(&b2);
    within(b2.joined()).await.unwrap();
    b2.register("svc", &fresh).unwrap();
    eventually(WAIT, || async {
        match nodes[0].lookup::<Counter>("svc").await {
            Ok(found) => found.ask(Who).await.is_ok_and(|w| w.1 == 0) && found.id() != old.id(),
            Err(_) => false,
        }
    })
    .await;
    assert!(matches!(old.tell(Hit).await, Err(SendError::NodeDown(_))));
    // The old run is known down: the request never leaves, and comes back.
    assert!(matches!(old.ask(Who).await, Err(AskError::NotSent(Who, footlight::NotSent::NodeDown))));
    assert_eq!(fresh.ask(Who).await.unwrap().1, 0, "a message for the old run reached the new one");
    nodes[0].shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn names_and_groups_are_consistent_again_after_a_long_partition_heals() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c", "d", "e"], WAIT).await;
    nodes[0].register("x", &counter(&nodes[0])).unwrap();
    nodes[1].join("g", &counter(&nodes[1])).unwrap();
    nodes[4].join("g", &counter(&nodes[4])).unwrap();
    for node in &nodes {
        eventually(WAIT, || async {
            node.lookup::<Counter>("x").await.is_ok() && node.group::<Counter>("g").await.len() == 2
        })
        .await;
    }
    // {a, b} | {c, d, e}, longer than the failure-detection budget.
    for x in ["a", "b"] {
        for y in ["c", "d", "e"] {
            net.partition(x, y);
        }
    }
    for node in &nodes[2..] {
        eventually(WAIT, || async { node.members().len() == 3 }).await;
        // The other side's name and group member are gone here...
        assert!(matches!(node.lookup::<Counter>("x").await, Err(ClusterError::Node(NodeError::NotFound(_)))));
        assert_eq!(node.group::<Counter>("g").await.len(), 1);
    }
    for node in &nodes[..2] {
        eventually(WAIT, || async { node.members().len() == 2 }).await;
        assert!(node.lookup::<Counter>("x").await.is_ok());
        assert_eq!(node.group::<Counter>("g").await.len(), 1);
    }
    net.heal_all();
    // ...and back everywhere once the cluster re-forms.
    for node in &nodes {
        eventually(WAIT, || async {
            node.members().len() == 5
                && node.lookup::<Counter>("x").await.is_ok()
                && node.group::<Counter>("g").await.len() == 2
        })
        .await;
        assert_eq!(node.lookup::<Counter>("x").await.unwrap().ask(Who).await.unwrap().0, "a");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// A node that crashes and comes back (new run) before the cluster declared
/// its old run down: its new names survive the old run being dropped.
#[tokio::test(start_paused = true)]
async fn a_node_back_from_a_crash_keeps_its_new_names_everywhere() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    nodes[2].register("svc", &counter(&nodes[2])).unwrap();
    for node in &nodes[..2] {
        eventually(WAIT, || async { node.lookup::<Counter>("svc").await.is_ok() }).await;
    }
    let old_run = nodes[2].run();
    // The old c goes silent; a new run of c starts elsewhere at once.
    net.isolate("c");
    let c2 = Cluster::builder(Node::builder("c").transport(net.transport()).listen("c-again"))
        .seeds(["a"])
        .start()
        .await
        .unwrap();
    // Registered as soon as it is admitted: the name reaches a and b with
    // c2's first connections, maybe before they see the new run replace
    // the old one.
    within(c2.joined()).await.unwrap();
    c2.register("svc", &counter(&c2)).unwrap();
    for node in &nodes[..2] {
        eventually(WAIT, || async {
            node.members().iter().any(|m| m.id == "c" && m.run == c2.run())
                && !node.members().iter().any(|m| m.run == old_run)
        })
        .await;
        eventually(WAIT, || async {
            match node.lookup::<Counter>("svc").await {
                Ok(found) => found.ask(Who).await.is_ok_and(|w| w.0 == "c"),
                Err(_) => false,
            }
        })
        .await;
    }
    // And it stays: nothing purges it later.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for node in &nodes[..2] {
        assert!(node.lookup::<Counter>("svc").await.is_ok(), "{} lost the new run's name", node.id());
    }
    c2.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// A client that speaks only the protocol (no registry stream) finds a
/// cluster-wide name through `footlight.Lookup` on any member: the answer
/// names the holder (its id, run and address) and the actor's handle there,
/// the same address a member's own lookup gives. Before, a Lookup found
/// only actors spawned under a name on the answering node.
#[tokio::test(start_paused = true)]
async fn a_protocol_lookup_on_any_member_finds_cluster_wide_names() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    nodes[0].register("lobby", &counter(&nodes[0])).unwrap();
    eventually(WAIT, || async { nodes[2].lookup::<Counter>("lobby").await.is_ok() }).await;
    let seen_by_c = nodes[2].lookup::<Counter>("lobby").await.unwrap().remote_addr().unwrap();
    let mut client = raw_peer::RawPeer::connect(&net, "b", "client").await;
    let found = client.lookup_reply("lobby").await;
    assert_eq!(found.node.as_deref(), Some("a"));
    assert_eq!(found.run, Some(nodes[0].run()));
    assert_eq!(found.addr.as_deref(), Some("a"));
    assert_eq!(found.id, seen_by_c.id);
    assert!(found.type_name.ends_with("Counter"));
    // The holder itself answers for it too.
    let mut at_a = raw_peer::RawPeer::connect(&net, "a", "client2").await;
    assert_eq!(at_a.lookup("lobby").await, seen_by_c.id);
    for node in nodes {
        node.shutdown().await;
    }
}

/// A plain node (no cluster) connected to one member only finds an actor
/// registered cluster-wide on another member: the answer names the holder
/// and its address, and the lookup dials it.
#[tokio::test(start_paused = true)]
async fn a_plain_node_follows_a_lookup_answer_to_the_holder() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"], WAIT).await;
    nodes[0].register("lobby", &counter(&nodes[0])).unwrap();
    eventually(WAIT, || async { nodes[1].lookup::<Counter>("lobby").await.is_ok() }).await;
    let client = Node::builder("client").transport(net.transport()).listen("client").start().await.unwrap();
    client.dial("b").await.unwrap();
    client.wait_for_peer("b").await.unwrap();
    let lobby: ActorRef<Counter> = client.lookup("lobby").await.unwrap();
    assert_eq!(lobby.remote_addr().unwrap().node, "a");
    assert_eq!(lobby.ask(Who).await.unwrap().0, "a");
    client.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// A node that joins (and joins again after leaving) asks each member's
/// registered actor as soon as the member is up and its name is known:
/// no ask may fail with NodeDown while every node is up (crossed dials
/// settling must not surface as a node loss).
#[tokio::test(start_paused = true)]
async fn a_joining_node_never_sees_node_down_while_every_node_is_up() {
    joins_never_see_node_down(20).await;
}

/// The same on the real clock with two workers, where connection tasks
/// race as they do between hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_never_sees_node_down_on_the_real_clock() {
    joins_never_see_node_down(8).await;
}

async fn joins_never_see_node_down(rounds: usize) {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    for node in &nodes {
        let name = format!("svc-{}", node.id());
        node.register(&name, &counter(node)).unwrap();
    }
    let mut failures = Vec::new();
    for round in 0..rounds {
        let joiner = start(&net, "d", &["a", "b", "c"]).await;
        for id in ["a", "b", "c"] {
            let name = format!("svc-{id}");
            let found = tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(found) = joiner.lookup::<Counter>(&name).await {
                        return found;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("name known in time");
            match found.ask(Who).await {
                Ok((node, _)) => assert_eq!(node, id),
                Err(e) => failures.push(format!("round {round}, {id}: {e:?}")),
            }
        }
        joiner.shutdown().await;
    }
    assert!(failures.is_empty(), "{failures:?}");
    for node in nodes {
        node.shutdown().await;
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("in time")
}

/// The join barrier: a node whose seed it cannot reach is not admitted, and
/// refuses to register (a name registered then would be a second, unseen
/// copy once it joins); once the seed answers, it is admitted and may.
#[tokio::test(start_paused = true)]
async fn a_node_registers_only_once_the_cluster_has_admitted_it() {
    let net = MemoryNetwork::new();
    let a = start(&net, "a", &[]).await;
    assert!(a.is_joined(), "a node without seeds founds the cluster");
    net.partition("a", "b");
    let b = start(&net, "b", &["a"]).await;
    let early = counter(&b);
    assert!(matches!(b.register("svc", &early), Err(ClusterError::NotJoined)));
    assert!(matches!(b.join("workers", &early), Err(ClusterError::NotJoined)));
    assert!(!b.is_joined());
    net.heal("a", "b");
    within(b.joined()).await.unwrap();
    b.register("svc", &early).unwrap();
    eventually(WAIT, || async { a.lookup::<Counter>("svc").await.is_ok() }).await;
    b.shutdown().await;
    a.shutdown().await;
}

/// A node whose every seed is itself (the first pod behind a DNS seed)
/// founds the cluster: admitted without waiting for anyone.
#[tokio::test(start_paused = true)]
async fn a_node_whose_only_seed_is_itself_founds_the_cluster() {
    let net = MemoryNetwork::new();
    let a = start(&net, "a", &["a"]).await;
    within(a.joined()).await.unwrap();
    a.register("svc", &counter(&a)).unwrap();
    let b = start(&net, "b", &["a", "b"]).await;
    within(b.joined()).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

/// Two nodes that merely meet do not admit each other: one that lists only
/// the other as its seed, and back, waits for a member that was admitted.
#[tokio::test(start_paused = true)]
async fn nodes_that_only_list_each_other_are_not_admitted() {
    let net = MemoryNetwork::new();
    let a = start(&net, "a", &["b"]).await;
    let b = start(&net, "b", &["a"]).await;
    eventually(WAIT, || async { a.members().len() == 2 && b.members().len() == 2 }).await;
    // Asserting that nothing happens: a span well past the founding wait.
    tokio::time::sleep(footlight::cluster::FOUND_AFTER * 3).await;
    assert!(!a.is_joined() && !b.is_joined());
    assert!(matches!(a.register("svc", &counter(&a)), Err(ClusterError::NotJoined)));
    a.shutdown().await;
    b.shutdown().await;
}

/// Nodes that all list the same seeds, themselves among them (a shared seed
/// list, one DNS name for every pod), started together, form one cluster:
/// the one with the lowest address founds it after `FOUND_AFTER`, the
/// others are admitted through it.
#[tokio::test(start_paused = true)]
async fn nodes_listing_the_same_seeds_form_one_cluster() {
    let net = MemoryNetwork::new();
    let seeds = ["a", "b", "c"];
    let (a, b, c) = tokio::join!(start(&net, "c", &seeds), start(&net, "b", &seeds), start(&net, "a", &seeds));
    let started = tokio::time::Instant::now();
    for node in [&a, &b, &c] {
        within(node.joined()).await.unwrap();
    }
    assert!(started.elapsed() >= footlight::cluster::FOUND_AFTER, "founded before the wait: {:?}", started.elapsed());
    for node in [&a, &b, &c] {
        eventually(WAIT, || async { node.members().len() == 3 && node.is_converged() }).await;
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// Nodes (re)started while the cluster's only member is cut off from them
/// do not found a second cluster between them, even with the lowest
/// address among their seeds: that member may be the cluster's survivor.
/// Once the cut heals, they are admitted to its cluster.
#[tokio::test(start_paused = true)]
async fn nodes_started_while_the_survivor_is_cut_off_wait_for_it() {
    let net = MemoryNetwork::new();
    let z = start(&net, "z", &[]).await;
    z.register("svc", &counter(&z)).unwrap();
    for other in ["a", "b"] {
        net.partition("z", other);
    }
    let seeds = ["a", "b", "z"];
    let a = start(&net, "a", &seeds).await;
    let b = start(&net, "b", &seeds).await;
    eventually(WAIT, || async { a.members().len() == 2 && b.members().len() == 2 }).await;
    // Asserting that nothing happens: a span well past the founding wait.
    tokio::time::sleep(footlight::cluster::FOUND_AFTER * 3).await;
    assert!(!a.is_joined() && !b.is_joined(), "a and b founded a second cluster");
    for other in ["a", "b"] {
        net.heal("z", other);
    }
    within(a.joined()).await.unwrap();
    within(b.joined()).await.unwrap();
    eventually(WAIT, || async { a.lookup::<Counter>("svc").await.is_ok() && z.members().len() == 3 }).await;
    for node in [a, b, z] {
        node.shutdown().await;
    }
}
