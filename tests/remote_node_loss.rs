//! Node loss over the in-memory transport (virtual clock): a partition longer
//! than the detection budget fails pending asks with `NodeDown` within the
//! budget, not at their timeout, and fires watches of the lost node's actors;
//! an orderly shutdown is seen at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{AskError, SendError};

use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Actor)]
struct Slow;

/// Never answers in time: the ask stays pending on the asker's side.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Hang")]
struct Hang;

impl Handler<Hang> for Slow {
    async fn handle(&mut self, _: Hang, _ctx: &mut Context<Self>) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u8, remote = "test.Ping")]
struct Ping;

impl Handler<Ping> for Slow {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) -> u8 {
        1
    }
}

impl RemoteActor for Slow {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Hang>().add::<Ping>();
    }
}

struct Watcher(mpsc::UnboundedSender<Terminated>);
impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        let _ = self.0.send(t);
    }
}

#[derive(Message)]
struct WatchIt(ActorRef<Slow>);
impl Handler<WatchIt> for Watcher {
    async fn handle(&mut self, WatchIt(r): WatchIt, ctx: &mut Context<Self>) {
        ctx.watch(&r);
    }
}

const BUDGET: Duration = Duration::from_secs(5);

/// Two plain nodes (remoting only: node loss is the connection's idle
/// timeout, the budget here; a cluster's membership would decide sooner).
async fn pair(net: &MemoryNetwork) -> (Node, Node, ActorRef<Slow>) {
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    b.dial("a").await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    a.spawn_named("slow", Slow).unwrap();
    let remote: ActorRef<Slow> = b.lookup("slow").await.unwrap();
    assert_eq!(remote.ask(Ping).await.unwrap(), 1);
    (a, b, remote)
}

#[tokio::test(start_paused = true)]
async fn partition_fails_pending_asks_and_fires_watches_within_the_budget() {
    let net = MemoryNetwork::new();
    let (a, b, remote) = pair(&net).await;
    let (seen, mut notices) = mpsc::unbounded_channel();
    let watcher = b.system().spawn(Watcher(seen));
    watcher.ask(WatchIt(remote.clone())).await.unwrap();

    let pending = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.ask(Hang).timeout(Duration::from_secs(60)).await })
    };
    tokio::task::yield_now().await;
    let cut = Instant::now();
    net.partition("a", "b");

    let outcome = pending.await.unwrap();
    let detected = cut.elapsed();
    assert!(matches!(outcome, Err(AskError::NodeDown)), "{outcome:?}");
    assert!(detected <= BUDGET + Duration::from_secs(1), "detected after {detected:?}");
    let notice = tokio::time::timeout(Duration::from_secs(1), notices.recv()).await.unwrap().unwrap();
    assert_eq!(notice, Terminated { id: remote.id(), reason: ExitReason::NodeDown });
    assert!(matches!(remote.tell(Ping).await, Err(SendError::NodeDown(_))));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn short_partition_under_the_budget_loses_nothing() {
    let net = MemoryNetwork::new();
    let (a, b, remote) = pair(&net).await;
    net.partition("a", "b");
    let asked = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.ask(Ping).timeout(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(BUDGET / 2).await;
    net.heal("a", "b");
    assert_eq!(asked.await.unwrap().unwrap(), 1, "the ask made during the partition is answered after it");
    assert!(remote.is_alive());
    assert_eq!(b.peers(), ["a"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn orderly_shutdown_is_seen_at_once() {
    let net = MemoryNetwork::new();
    let (a, b, remote) = pair(&net).await;
    let pending = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.ask(Hang).timeout(Duration::from_secs(60)).await })
    };
    tokio::task::yield_now().await;
    let start = Instant::now();
    // a's own shutdown waits for its busy actor; its peers hear of it first.
    let stopping = tokio::spawn(async move { a.shutdown().await });
    assert!(matches!(pending.await.unwrap(), Err(AskError::NodeDown)));
    assert_eq!(remote.wait_for_stop().await, ExitReason::NodeDown);
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    b.shutdown().await;
    stopping.abort();
}

/// An ask to an actor whose node is known to be down never leaves this
/// node, and hands its message back (as a tell does); an ask lost after it
/// left says `NodeDown` and cannot.
#[tokio::test(start_paused = true)]
async fn an_ask_to_a_node_known_down_hands_its_message_back() {
    let net = MemoryNetwork::new();
    let (a, b, remote) = pair(&net).await;
    net.partition("a", "b");
    remote.wait_for_stop().await; // the stand-in learns the node is lost
    let outcome = remote.ask(Ping).await;
    assert!(matches!(outcome, Err(AskError::NotSent(Ping, footlight::NotSent::NodeDown))), "{outcome:?}");
    a.shutdown().await;
    b.shutdown().await;
}
