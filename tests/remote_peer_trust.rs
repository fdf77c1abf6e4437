//! What an authenticated peer may do to a node, frame by frame: a hand-driven
//! peer (the protocol's own `Session`, no node behind it) sends frames a
//! well-behaved node would not, and the node refuses them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/raw_peer.rs"]
mod raw_peer;

use std::time::{Duration, Instant};

use footlight::prelude::*;
use footlight::remote::proto::Event;
use footlight::remote::proto::frame::{Exit, Link};
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::remote::{NodeContext, NodeService};
use raw_peer::RawPeer;

/// An actor that does not trap exits: a link exit stops it.
#[derive(Actor)]
struct Victim;

impl RemoteActor for Victim {
    fn remote_messages(_: &mut RemoteMessages<Self>) {}
}

/// Keeps the node's context; does nothing else.
#[derive(Default)]
struct Grab(std::sync::OnceLock<NodeContext>);

impl NodeService for Grab {
    fn handles(&self, _: &str) -> bool {
        false
    }
    fn started(&self, node: NodeContext) {
        let _ = self.0.set(node);
    }
    fn peer_connected(&self, _: &footlight::remote::PeerRun) {}
    fn peer_disconnected(&self, _: &footlight::remote::PeerRun) {}
    fn dial_failed(&self, _: &str) {}
    fn system_message(&self, _: &footlight::remote::PeerRun, _: &str, _: Vec<u8>) {}
    fn leave(&self) -> footlight::remote::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A node exposing a non-trapping `victim`, and a hand-driven peer that
/// looked it up (its handle).
async fn victim_and_peer() -> (MemoryNetwork, Node, ActorRef<Victim>, RawPeer, u64) {
    let net = MemoryNetwork::new();
    let node = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let victim = node.spawn_named("victim", Victim).unwrap();
    let mut peer = RawPeer::connect(&net, "a", "raw").await;
    let handle = peer.lookup("victim").await;
    (net, node, victim, peer, handle)
}

/// An `Exit` for a pair that was never linked does not stop the actor: a
/// peer that knows a handle cannot kill its actor. It used to (`Exit` was
/// delivered for any pair).
#[tokio::test]
async fn an_exit_for_a_pair_never_linked_is_ignored() {
    let (_net, node, victim, mut peer, handle) = victim_and_peer().await;
    peer.session.send_exit(Instant::now(), Exit { target: handle, linker: 424_242, reason: "boom".into() }).unwrap();
    // Handled in order: once this lookup is answered, the Exit was too.
    assert_eq!(peer.lookup("victim").await, handle);
    assert!(victim.is_alive(), "an Exit without a Link stopped the actor");
    node.shutdown().await;
}

/// The same `Exit` after a `Link` from the same peer does reach the actor
/// (the link works), and it then stops, as a linked, non-trapping actor does.
#[tokio::test]
async fn an_exit_for_a_pair_the_peer_linked_is_delivered() {
    let (_net, node, victim, mut peer, handle) = victim_and_peer().await;
    peer.session.send_link(Instant::now(), Link { target: handle, linker: 5 }).unwrap();
    peer.session.send_exit(Instant::now(), Exit { target: handle, linker: 5, reason: "boom".into() }).unwrap();
    peer.flush().await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), victim.wait_for_stop()).await;
    assert!(stopped.is_ok(), "a linked exit must reach the actor");
    node.shutdown().await;
}

/// After `Unlink`, the pair's `Exit` is ignored.
#[tokio::test]
async fn an_exit_after_unlink_is_ignored() {
    let (_net, node, victim, mut peer, handle) = victim_and_peer().await;
    let now = Instant::now();
    peer.session.send_link(now, Link { target: handle, linker: 5 }).unwrap();
    peer.session.send_unlink(now, Link { target: handle, linker: 5 }).unwrap();
    peer.session.send_exit(now, Exit { target: handle, linker: 5, reason: "boom".into() }).unwrap();
    assert_eq!(peer.lookup("victim").await, handle);
    assert!(victim.is_alive());
    node.shutdown().await;
}

/// A second connection from the same node id and run replaces the first,
/// which is closed as a duplicate (`Duplicate`, not `Normal`: the node is
/// not shutting down).
#[tokio::test]
async fn a_second_connection_of_the_same_run_closes_the_first_as_a_duplicate() {
    use footlight::remote::proto::CloseCode;
    use footlight::remote::proto::session::CloseCause;
    let net = MemoryNetwork::new();
    let node = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    node.spawn_named("victim", Victim).unwrap();
    let mut first = RawPeer::connect(&net, "a", "raw").await;
    let mut second = RawPeer::connect(&net, "a", "raw").await;
    let closed = first.until(|e| matches!(e, Event::Closed(_))).await;
    assert!(
        matches!(closed, Event::Closed(CloseCause::Peer { code: CloseCode::Duplicate, .. })),
        "closed with {closed:?}"
    );
    // The second one serves.
    second.lookup("victim").await;
    node.shutdown().await;
}

/// A peer may hold at most 10 000 watches on one connection: the next is
/// answered at once with "watch refused"; `Unwatch` frees a slot, after
/// which the same watch is taken (and fires when its actor stops).
#[tokio::test]
async fn watches_per_connection_are_bounded_and_unwatch_frees_a_slot() {
    use footlight::remote::proto::frame::{ActorAddr, Watch};
    const LIMIT: usize = 10_000;
    let net = MemoryNetwork::new();
    // A service only to get the node's context, which exports actors.
    let ctx = std::sync::Arc::new(Grab::default());
    let node = Node::builder("a").transport(net.transport()).listen("a").service(ctx.clone()).start().await.unwrap();
    let ctx = ctx.0.get().unwrap();
    let mut actors = Vec::new();
    // The lookup below takes one slot (a lookup watches what it finds);
    // these take the rest, and one more.
    for _ in 0..LIMIT {
        let actor = node.system().spawn(Victim);
        let handle = ctx.export(&actor).unwrap();
        actors.push((actor, handle));
    }
    node.spawn_named("victim", Victim).unwrap();
    let mut peer = RawPeer::connect(&net, "a", "raw").await;
    peer.lookup("victim").await;
    let addr = |id: u64| ActorAddr { node: "a".into(), run: node.run(), id };
    let watcher = ActorAddr { node: "raw".into(), run: 7, id: 0 };
    let watch = |id: u64| Watch { target: addr(id), watcher: watcher.clone() };
    let now = Instant::now();
    for (_, handle) in &actors {
        peer.session.send_watch(now, watch(*handle)).unwrap();
    }
    peer.lookup("victim").await;
    let refused = |events: &[Event]| {
        events.iter().filter(|e| matches!(e, Event::Terminated(t) if t.reason == "watch refused")).count()
    };
    let terminated = |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Terminated(_))).count();
    assert_eq!(refused(&peer.events), 1, "one past the limit is refused");
    assert_eq!(terminated(&peer.events), 1, "the others are held, not answered");
    let (last, last_handle) = actors.last().cloned().unwrap();
    assert!(matches!(peer.events.iter().find(|e| matches!(e, Event::Terminated(_))),
        Some(Event::Terminated(t)) if t.actor.id == last_handle));
    // Free one slot; the refused watch is taken now.
    peer.session.send_unwatch(now, watch(actors[0].1)).unwrap();
    peer.session.send_watch(now, watch(last_handle)).unwrap();
    peer.lookup("victim").await;
    assert_eq!(refused(&peer.events), 1, "no second refusal after Unwatch");
    last.stop();
    let fired =
        peer.until(|e| matches!(e, Event::Terminated(t) if t.actor.id == last_handle && t.reason == "normal")).await;
    assert!(matches!(fired, Event::Terminated(_)));
    node.shutdown().await;
}
