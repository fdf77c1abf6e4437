//! Node-level tests that look inside the parts.
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
    use links::MAX_LINKS_PER_PEER;
    let net = MemoryNetwork::new();
    let node = Node::builder("n").transport(net.transport()).listen("n").start().await.unwrap();
    let t1 = node.spawn_named("t1", Target).unwrap();
    let t2 = node.spawn_named("t2", Target).unwrap();
    let inner = &node.inner;
    let (h1, h2) = (inner.exports.handle_of(t1.id()), inner.exports.handle_of(t2.id()));
    conn::link(inner, "p", 1, 12345, 1);
    assert!(inner.links.of_run("p", 1).is_empty(), "no actor has that handle");
    for linker in 0..MAX_LINKS_PER_PEER as u64 {
        conn::link(inner, "p", 1, h1, linker);
    }
    conn::link(inner, "p", 1, h2, 1);
    assert_eq!(inner.links.of_run("p", 1).len(), MAX_LINKS_PER_PEER);
    assert!(!inner.links.of_run("p", 1).contains(&(h2, 1)), "refused past the limit");
    // Another run of the same peer has its own budget.
    conn::link(inner, "p", 2, h2, 1);
    assert!(inner.links.of_run("p", 2).contains(&(h2, 1)));
    // Unlinking makes room.
    inner.links.remove("p", 1, h1, 0);
    conn::link(inner, "p", 1, h2, 1);
    assert!(inner.links.of_run("p", 1).contains(&(h2, 1)));
    // So does the end of the linked actor.
    t1.stop();
    t1.wait_for_stop().await;
    conn::link(inner, "p", 1, h2, 2);
    assert_eq!(inner.links.of_run("p", 1), [(h2, 1), (h2, 2)].into_iter().collect());
    // A handle stays the same after the cache forgot it.
    inner.exports.forget_dead();
    inner.exports.clear_handles();
    assert_eq!(inner.exports.handle_of(t2.id()), h2);
    node.shutdown().await;
}

/// Waits (virtual time) until `watches` is `n`.
async fn watches_become(node: &Node, n: usize) {
    let reached = async {
        while node.inner.watches.load(std::sync::atomic::Ordering::Relaxed) != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reached).await.expect("watch count reached");
}

/// A node watches a peer's actor while it holds a ref to it, and tells
/// the peer to forget the watch once nothing uses the ref: the peer's
/// watch slot is freed, not held until the actor dies.
#[tokio::test(start_paused = true)]
async fn a_dropped_remote_ref_releases_the_peers_watch() {
    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    a.spawn_named("t", Target).unwrap();
    a.spawn_named("kept", Target).unwrap();
    b.dial("a").await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    let dropped: ActorRef<Target> = b.lookup("t").await.unwrap();
    let kept: ActorRef<Target> = b.lookup("kept").await.unwrap();
    watches_become(&a, 2).await;
    drop(dropped);
    // The next sweep on b sends Unwatch for the ref nobody holds.
    watches_become(&a, 1).await;
    tokio::time::sleep(3 * conn::SWEEP_EVERY).await;
    assert_eq!(a.inner.watches.load(std::sync::atomic::Ordering::Relaxed), 1, "the held ref keeps its watch");
    assert!(kept.is_alive());
    b.shutdown().await;
    // The connection's end frees the rest.
    watches_become(&a, 0).await;
    a.shutdown().await;
}

/// Counts the bumps it gets; answers a nap after that long (virtual time).
#[derive(Default)]
struct Probe(Arc<std::sync::atomic::AtomicUsize>);
impl Actor for Probe {}

#[derive(serde::Serialize, serde::Deserialize)]
struct Nap(u64);
impl actor_core::Message for Nap {
    type Reply = u64;
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(crate::codec::wire("test.Nap"))
    }
}
impl actor_core::Handler<Nap> for Probe {
    async fn handle(&mut self, Nap(ms): Nap, _ctx: &mut actor_core::Context<Self>) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Bump;
impl actor_core::Message for Bump {
    type Reply = ();
    fn wire() -> Option<actor_core::Wire<Self>> {
        Some(crate::codec::wire("test.Bump"))
    }
}
impl actor_core::Handler<Bump> for Probe {
    async fn handle(&mut self, _: Bump, _ctx: &mut actor_core::Context<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
impl RemoteActor for Probe {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Nap>().add::<Bump>();
    }
}

/// Crossed dials whatever the timing: `b` dials `a` while `a` (the lower
/// id, whose connection wins) is still dialing `b`, and `a`'s dial takes a
/// second to arrive. An ask from `b` must not go out on the connection
/// that `a`'s dial then replaces (it would fail with `NodeDown`, both nodes
/// up), however long the crossed dial takes; and once `a` says no dial of
/// its own is under way, `b` does not wait for the time it gives a peer that
/// says nothing.
#[tokio::test(start_paused = true)]
async fn an_ask_waits_for_a_slow_crossed_dial_instead_of_failing() {
    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    a.spawn_named("slow", Probe::default()).unwrap();
    // a's dial: its handshake takes a second each way.
    net.delay("a", Duration::from_secs(1));
    net.delay("b", Duration::from_secs(1));
    dial::ensure(&a.inner, "b", "b");
    tokio::time::sleep(Duration::from_millis(1)).await;
    net.heal_all();
    // b's dial completes at once, while a's is still under way.
    b.dial("a").await.unwrap();
    let slow: ActorRef<Probe> = b.lookup("slow").await.unwrap();
    // Long past any fixed settling time, and the answer is still being
    // worked on when a's connection arrives at b.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answer = slow.ask(Nap(1000)).await;
    assert!(matches!(answer, Ok(1000)), "{answer:?}");
    assert_eq!(a.peers(), ["b"]);
    assert_eq!(b.peers(), ["a"]);

    // A fresh pair where the lower id is not dialing: it says so, and the
    // ask goes out without waiting for any timeout of the peer's.
    let c = Node::builder("c").transport(net.transport()).listen("c").start().await.unwrap();
    c.dial("a").await.unwrap();
    let slow: ActorRef<Probe> = c.lookup("slow").await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(matches!(slow.ask(Nap(1)).await, Ok(1)));
    assert!(started.elapsed() < peers::SETTLE_UNHEARD, "asked once settled: {:?}", started.elapsed());
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A dial to the address of a peer's earlier run (gone: nothing answers
/// there, as over QUIC) must not hold up the connection the peer's new run
/// dials: the node with the lower id calls its dial off when that
/// connection comes up, says the connection stays, and a request goes out
/// at once instead of after the stale dial's timeout (seen over QUIC on
/// loopback: an ask timed out right after a node rejoined, because a member
/// had begun dialing the address of the node's previous run).
#[tokio::test(start_paused = true)]
async fn a_dial_to_a_gone_address_does_not_hold_up_the_peers_new_connection() {
    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    a.spawn_named("slow", Probe::default()).unwrap();
    // b's previous run listened at "b-1"; this one listens at "b-2".
    net.silence("b-1");
    let b = Node::builder("b").transport(net.transport()).listen("b-2").start().await.unwrap();
    dial::ensure(&a.inner, "b", "b-1");
    assert!(a.inner.dialing.may_reach("b"));
    let started = tokio::time::Instant::now();
    b.dial("a").await.unwrap();
    let slow: ActorRef<Probe> = b.lookup("slow").await.unwrap();
    let answer = slow.ask(Nap(1)).await;
    assert!(matches!(answer, Ok(1)), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "waited for the stale dial: {:?}", started.elapsed());
    assert!(!a.inner.dialing.may_reach("b"), "the stale dial was called off");
    assert_eq!(a.peers(), ["b"]);
    a.shutdown().await;
    b.shutdown().await;
}

/// Nodes `a` and `b` on `net`, `a` with a `Probe` named "p", and `b`'s ref
/// to it over a settled connection.
async fn probed_pair(net: &MemoryNetwork) -> (Node, Node, ActorRef<Probe>, ActorRef<Probe>) {
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    let probe = a.spawn_named("p", Probe::default()).unwrap();
    b.dial("a").await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    let remote: ActorRef<Probe> = b.lookup("p").await.unwrap();
    (a, b, probe, remote)
}

/// An ask that reaches a peer after its actor stopped was not delivered:
/// it comes back as `Closed` with the message, as for a local actor, so
/// that whoever asked may send it elsewhere (a singleton's proxy resends
/// to the instance that takes over).
#[tokio::test(start_paused = true)]
async fn an_ask_reaching_a_stopped_actor_gives_the_message_back() {
    let net = MemoryNetwork::new();
    let (a, b, probe, remote) = probed_pair(&net).await;
    assert!(matches!(remote.ask(Nap(1)).await, Ok(1)));
    // b hears of the stop only after its ask has reached a.
    net.delay("b", Duration::from_millis(500));
    probe.stop();
    probe.wait_for_stop().await;
    let answer = remote.ask(Nap(7)).await;
    assert!(matches!(answer, Err(actor_core::AskError::Closed(Nap(7)))), "{answer:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Asks still queued when their connection is lost never left the node:
/// they come back as `NotSent` with the message (those on the wire when it
/// was lost end as `NodeDown`: they may have been handled). Every ask
/// resolves.
#[tokio::test(start_paused = true)]
async fn asks_still_queued_when_the_connection_is_lost_give_the_message_back() {
    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    // One frame at a time leaves b's queue for the transport.
    let b = Node::builder("b")
        .transport(net.transport())
        .listen("b")
        .max_outbound_bytes(1)
        .idle_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    a.spawn_named("p", Probe::default()).unwrap();
    b.dial("a").await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    let remote: ActorRef<Probe> = b.lookup("p").await.unwrap();
    net.partition("a", "b");
    let asks: Vec<_> = (0..200u64)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move { (i, remote.ask(Nap(i)).timeout(Duration::from_secs(60)).await) })
        })
        .collect();
    let (mut not_sent, mut node_down) = (0, 0);
    for ask in asks {
        let (i, answer) = tokio::time::timeout(Duration::from_secs(30), ask).await.expect("resolved").unwrap();
        match answer {
            Err(actor_core::AskError::NotSent(Nap(n), _)) => {
                assert_eq!(n, i, "its own message back");
                not_sent += 1;
            }
            Err(actor_core::AskError::NodeDown) => node_down += 1,
            other => panic!("ask {i}: {other:?}"),
        }
    }
    assert!(not_sent > 0, "queued asks came back ({node_down} were on the wire)");
    a.shutdown().await;
    b.shutdown().await;
}

/// An ask the peer never read before it shut down was not handled: its
/// `Close` names the last ask it read, and the asker gets the message back
/// (`NotSent`) rather than `NodeDown` (which says it may have been handled).
#[tokio::test(start_paused = true)]
async fn an_ask_the_peer_closed_without_reading_gives_the_message_back() {
    let net = MemoryNetwork::new();
    let (a, b, _probe, remote) = probed_pair(&net).await;
    assert!(matches!(remote.ask(Nap(1)).await, Ok(1)));
    // What b sends now reaches a only after a has shut down.
    net.delay("a", Duration::from_secs(1));
    let asking = tokio::spawn(async move { remote.ask(Nap(7)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.shutdown().await;
    let answer = tokio::time::timeout(Duration::from_secs(10), asking).await.expect("resolved").unwrap();
    assert!(matches!(answer, Err(actor_core::AskError::NotSent(Nap(7), _))), "{answer:?}");
    b.shutdown().await;
}

/// What a node queued for a peer before it began to shut down still goes
/// out: its connections close behind it (a cluster member's leave notice is
/// sent just this way, right before the shutdown).
#[tokio::test(start_paused = true)]
async fn a_tell_queued_before_shutdown_reaches_the_peer() {
    let net = MemoryNetwork::new();
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    b.spawn_named("tally", Probe(got.clone())).unwrap();
    for round in 1..=20 {
        let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
        a.dial("b").await.unwrap();
        a.wait_for_peer("b").await.unwrap();
        let tally: ActorRef<Probe> = a.lookup("tally").await.unwrap();
        tally.tell(Bump).await.unwrap();
        a.shutdown().await;
        let arrived = async {
            while got.load(std::sync::atomic::Ordering::SeqCst) < round {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), arrived).await.is_ok(),
            "round {round}: the tell was lost"
        );
    }
    b.shutdown().await;
}

/// A peer's counters: bytes both ways, the heartbeat's round trip once an
/// idle second has passed (the in-memory network delays each way), and
/// one more connection opened after a reset.
#[tokio::test(start_paused = true)]
async fn peer_stats_count_bytes_the_heartbeat_round_trip_and_reconnects() {
    let net = MemoryNetwork::new();
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    b.spawn_named("tally", Probe(got.clone())).unwrap();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    net.delay("b", Duration::from_millis(7));
    a.dial("b").await.unwrap();
    a.wait_for_peer("b").await.unwrap();
    let tally: ActorRef<Probe> = a.lookup("tally").await.unwrap();
    for _ in 0..10 {
        tally.tell(Bump).await.unwrap();
    }
    // Idle for a while: heartbeats go out and come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = a.peer_stats();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!((s.id.as_str(), s.run), ("b", b.run()));
    assert!(s.bytes_sent > 0 && s.bytes_received > 0, "{s:?}");
    // The hello, ten tells, the lookup and heartbeats out; the hello, the
    // lookup's reply and heartbeats' answers in.
    assert!(s.frames_sent >= 12 && s.frames_received >= 3, "{s:?}");
    let rtt = s.rtt.expect("a heartbeat was answered");
    assert!(rtt >= Duration::from_millis(7), "the delay is part of the round trip: {rtt:?}");
    assert_eq!(s.connections_opened, 1);
    assert_eq!((s.queued_bytes, s.queued_other), (0, 0));
    // The connection breaks; a dial opens another.
    net.reset("a", "b");
    let reconnected = async {
        loop {
            if a.peer_stats().first().is_some_and(|s| s.connections_opened == 2) {
                return;
            }
            let _ = a.dial("b").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reconnected).await.expect("reconnected");
    a.shutdown().await;
    b.shutdown().await;
}

/// A round trip longer than the heartbeat interval is still measured: the
/// oldest unanswered `Ping` is timed, not the latest.
#[tokio::test(start_paused = true)]
async fn a_round_trip_longer_than_the_heartbeat_is_measured() {
    let net = MemoryNetwork::new();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    a.dial("b").await.unwrap();
    a.wait_for_peer("b").await.unwrap();
    // 800 ms each way: 1.6 s, over the 1 s heartbeat (and under the 5 s
    // idle timeout).
    net.delay("a", Duration::from_millis(800));
    net.delay("b", Duration::from_millis(800));
    let measured = async {
        loop {
            if let Some(rtt) = a.peer_stats().first().and_then(|s| s.rtt)
                && rtt >= Duration::from_millis(1600)
            {
                return rtt;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let rtt = tokio::time::timeout(Duration::from_secs(20), measured).await.expect("measured");
    assert!(rtt < Duration::from_millis(2600), "{rtt:?}");
    a.shutdown().await;
    b.shutdown().await;
}
