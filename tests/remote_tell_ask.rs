//! Two nodes over the in-memory transport: a ref from `lookup` reaches the
//! actor on the other node with `tell` and `ask`, keeps per-sender order, and
//! refuses what cannot cross.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{AskError, NodeError, SendError};

#[derive(Actor, Default)]
struct Counter {
    seen: Vec<u64>,
}

#[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
#[message(reply = u64, remote = "test.Add")]
struct Add(u64);

impl Handler<Add> for Counter {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        self.seen.push(n);
        self.seen.iter().sum()
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = Vec<u64>, remote = "test.Seen")]
struct Seen;

impl Handler<Seen> for Counter {
    async fn handle(&mut self, _: Seen, _ctx: &mut Context<Self>) -> Vec<u64> {
        self.seen.clone()
    }
}

/// A payload of any size.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Blob")]
struct Blob(Vec<u8>);

impl Handler<Blob> for Counter {
    async fn handle(&mut self, Blob(bytes): Blob, _ctx: &mut Context<Self>) {
        self.seen.push(bytes.len() as u64);
    }
}

/// Handled locally, but not listed for peers.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Reset")]
struct Reset;

impl Handler<Reset> for Counter {
    async fn handle(&mut self, _: Reset, _ctx: &mut Context<Self>) {
        self.seen.clear();
    }
}

/// No wire name: local only.
#[derive(Message, Debug, PartialEq)]
struct LocalOnly(u8);

impl Handler<LocalOnly> for Counter {
    async fn handle(&mut self, _: LocalOnly, _ctx: &mut Context<Self>) {}
}

impl RemoteActor for Counter {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Add>().add::<Seen>().add::<Blob>();
    }
}

/// Records what it is told, but only as fast as the test lets it: each
/// message waits for a permit. Its mailbox is small, so a burst from a peer
/// waits on the receiving node.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    seen: Vec<u64>,
}

impl Actor for Gated {
    fn default_mailbox() -> Mailbox {
        Mailbox::bounded(16)
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Push")]
struct Push(u64);

impl Handler<Push> for Gated {
    async fn handle(&mut self, Push(n): Push, _ctx: &mut Context<Self>) {
        self.gate.acquire().await.unwrap().forget();
        self.seen.push(n);
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = Vec<u64>, remote = "test.Pushed")]
struct Pushed;

impl Handler<Pushed> for Gated {
    async fn handle(&mut self, _: Pushed, _ctx: &mut Context<Self>) -> Vec<u64> {
        std::mem::take(&mut self.seen)
    }
}

impl RemoteActor for Gated {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Push>().add::<Pushed>();
    }
}

async fn pair() -> (MemoryNetwork, Cluster, Cluster) {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    let b =
        Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    a.wait_for_peer("b").await.unwrap();
    (net, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_ask_cross_nodes_in_order() {
    let (_net, a, b) = pair().await;
    let local = a.spawn_named("counter", Counter::default()).unwrap();
    let remote: ActorRef<Counter> = b.lookup("counter").await.unwrap();
    assert!(remote.is_remote());
    for i in 0..1000 {
        remote.tell(Add(i)).await.unwrap();
    }
    assert_eq!(remote.ask(Add(0)).await.unwrap(), (0..1000).sum::<u64>());
    let seen = remote.ask(Seen).await.unwrap();
    let expected: Vec<u64> = (0..1000).chain([0]).collect();
    assert_eq!(seen, expected, "FIFO from one sender across nodes");
    assert_eq!(local.ask(Seen).await.unwrap().len(), 1001, "it is the same actor");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_cross_is_refused_not_dropped() {
    let (_net, a, b) = pair().await;
    a.spawn_named("counter", Counter::default()).unwrap();
    let remote: ActorRef<Counter> = b.lookup("counter").await.unwrap();

    // No wire name: refused locally, message handed back.
    assert!(matches!(remote.tell(LocalOnly(1)).await, Err(SendError::NotRemote(LocalOnly(1)))));
    // A wire name the exposed actor does not list: refused by the peer.
    match remote.ask(Reset).await {
        Err(AskError::Rejected(why)) => assert!(why.contains("does not accept"), "{why}"),
        other => panic!("expected Rejected, got {:?}", other.map_err(|e| e.to_string())),
    }
    // The connection survives both.
    assert_eq!(remote.ask(Add(5)).await.unwrap(), 5);

    assert!(matches!(b.node().lookup::<Counter>("nobody").await, Err(NodeError::NotFound(_))));
    #[derive(Actor)]
    struct Other;
    assert!(matches!(b.node().lookup::<Other>("counter").await, Err(NodeError::WrongType { .. })));
    a.shutdown().await;
    b.shutdown().await;
}

/// Both nodes dial each other at once; whichever connection loses the
/// tie-break, refs taken meanwhile keep working (they move to the winner).
/// Repeated, since the interleaving differs from run to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossed_dials_leave_one_connection_both_ways() {
    for _ in 0..20 {
        let net = MemoryNetwork::new();
        let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a"))
            .seeds(["b"])
            .start()
            .await
            .unwrap();
        let b = Cluster::builder(Node::builder("b").transport(net.transport()).listen("b"))
            .seeds(["a"])
            .start()
            .await
            .unwrap();
        a.wait_for_peer("b").await.unwrap();
        b.wait_for_peer("a").await.unwrap();
        a.spawn_named("counter", Counter::default()).unwrap();
        let remote: ActorRef<Counter> = b.lookup("counter").await.unwrap();
        for i in 1..=100 {
            remote.tell(Add(i)).await.unwrap();
        }
        // Tells sent through a connection that lost the tie-break may be lost
        // (at-most-once); the ref itself must keep working.
        let sum = remote.ask(Add(0)).await.unwrap();
        assert!(sum <= 5050, "{sum}");
        assert!(remote.is_alive());
        assert_eq!(a.peers(), ["b"]);
        assert_eq!(b.peers(), ["a"]);
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn exposing_a_message_without_wire_name_fails() {
    #[derive(Actor)]
    struct Bad;
    impl Handler<LocalOnly> for Bad {
        async fn handle(&mut self, _: LocalOnly, _ctx: &mut Context<Self>) {}
    }
    impl RemoteActor for Bad {
        fn remote_messages(m: &mut RemoteMessages<Self>) {
            m.add::<LocalOnly>();
        }
    }
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    match a.spawn_named("bad", Bad) {
        Err(NodeError::NotRemote { messages, .. }) => assert!(messages[0].ends_with("LocalOnly")),
        other => panic!("expected NotRemote, got {other:?}"),
    }
    let _ = Duration::ZERO;
    a.shutdown().await;
}

/// Tells to an actor that cannot keep up wait on the receiving node (in its
/// mailbox, then in the connection's backlog, then in the transport); replies
/// on the same connection are not held behind them, and once the actor gets
/// going every tell arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_actor_gets_every_message_once_in_order() {
    let (_net, a, b) = pair().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    a.spawn_named("gated", Gated { gate: gate.clone(), seen: Vec::new() }).unwrap();
    b.spawn_named("counter", Counter::default()).unwrap();
    let gated: ActorRef<Gated> = b.lookup("gated").await.unwrap();
    let counter: ActorRef<Counter> = a.lookup("counter").await.unwrap();

    // More than the mailbox (16) holds, fewer than the backlog (1024).
    const FIRST: u64 = 500;
    for i in 0..FIRST {
        gated.tell(Push(i)).await.unwrap();
    }
    // The reply travels b -> a behind those tells, and still comes through.
    let reply = counter.ask(Add(5)).timeout(Duration::from_secs(10)).await;
    assert_eq!(reply.unwrap(), 5, "a reply is not held behind a busy actor");

    // Far more than the backlog holds: reading pauses, the rest waits.
    const N: u64 = 5_000;
    for i in FIRST..N {
        gated.tell(Push(i)).await.unwrap();
    }
    gate.add_permits(N as usize);
    let seen = gated.ask(Pushed).timeout(Duration::from_secs(60)).await.unwrap();
    assert_eq!(seen.len() as u64, N, "every tell arrived once");
    assert!(seen.iter().copied().eq(0..N), "in order");
    a.shutdown().await;
    b.shutdown().await;
}

/// A tell over the receiving node's frame limit is refused to the sender,
/// with the message handed back; the connection and what follows are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_over_the_peers_frame_limit_is_refused_to_the_sender() {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a").max_frame(64 * 1024))
        .start()
        .await
        .unwrap();
    let b =
        Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    a.spawn_named("counter", Counter::default()).unwrap();
    let remote: ActorRef<Counter> = b.lookup("counter").await.unwrap();
    remote.tell(Blob(vec![1; 1000])).await.unwrap();
    match remote.tell(Blob(vec![2; 100 * 1024])).await {
        Err(SendError::Rejected(Blob(bytes), why)) => {
            assert_eq!(bytes.len(), 100 * 1024, "the message comes back");
            assert!(why.contains("limit"), "{why}");
        }
        other => panic!("expected a refusal, got {:?}", other.map_err(|e| e.to_string())),
    }
    assert!(matches!(remote.try_tell(Blob(vec![2; 100 * 1024])), Err(footlight::TrySendError::Rejected(..))));
    remote.tell(Blob(vec![3; 2000])).await.unwrap();
    assert_eq!(remote.ask(Seen).await.unwrap(), [1000, 2000], "the connection carried on");
    a.shutdown().await;
    b.shutdown().await;
}

/// Senders faster than the connection fill the outbound buffer; they wait,
/// and every message still arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbound_buffer_pushes_back_without_losing_messages() {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    let b = Cluster::builder(Node::builder("b").transport(net.transport()).listen("b").max_outbound_bytes(2048))
        .seeds(["a"])
        .start()
        .await
        .unwrap();
    b.wait_for_peer("a").await.unwrap();
    a.spawn_named("counter", Counter::default()).unwrap();
    let remote: ActorRef<Counter> = b.lookup("counter").await.unwrap();
    const N: u64 = 20_000;
    for i in 0..N {
        remote.tell(Add(i)).await.unwrap();
    }
    let seen = remote.ask(Seen).timeout(Duration::from_secs(60)).await.unwrap();
    assert_eq!(seen.len() as u64, N, "every tell arrived once");
    assert!(seen.iter().copied().eq(0..N), "in order");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_share_one_ref_and_huge_timeouts_do_not_panic() {
    let (_net, a, b) = pair().await;
    a.spawn_named("counter", Counter::default()).unwrap();
    let first: ActorRef<Counter> = b.lookup("counter").await.unwrap();
    let second: ActorRef<Counter> = b.lookup("counter").await.unwrap();
    assert_eq!(first, second, "the same remote actor, the same ref");
    assert_eq!(first.ask(Add(2)).timeout(Duration::MAX).await.unwrap(), 2);
    assert_eq!(b.peers(), ["a"], "the connection survived");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_local_actors_first_and_checks_their_type() {
    let (_net, a, b) = pair().await;
    let local = a.spawn_named("counter", Counter::default()).unwrap();
    let found: ActorRef<Counter> = a.lookup("counter").await.unwrap();
    assert!(!found.is_remote());
    assert_eq!(found, local);
    #[derive(Actor)]
    struct Other;
    assert!(matches!(a.node().lookup::<Other>("counter").await, Err(NodeError::WrongType { .. })));
    a.shutdown().await;
    b.shutdown().await;
}

/// A plain node (no cluster) shut down before its accepting task ever ran
/// stops and frees its address. It waited for ever when the stop signal was
/// sent before the task subscribed to it.
#[tokio::test(flavor = "current_thread")]
async fn a_node_shut_down_at_once_stops() {
    let net = MemoryNetwork::new();
    let node = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await.expect("shutdown completes");
    let again = Node::builder("a2").transport(net.transport()).listen("a").start().await;
    assert!(again.is_ok(), "the address is free again");
}
