//! Watching a remote actor: its end (not only its node's) reaches local
//! watchers once, with its exit reason, over the in-memory network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::IntoFuture;
use std::time::Duration;

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use tokio::sync::mpsc;

#[derive(Actor)]
struct Worker;

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Quit")]
struct Quit;

impl Handler<Quit> for Worker {
    async fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Crash")]
struct Crash;

impl Handler<Crash> for Worker {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash on purpose");
    }
}

impl RemoteActor for Worker {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Quit>().add::<Crash>();
    }
}

struct Watcher(mpsc::UnboundedSender<Terminated>);
impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        let _ = self.0.send(t);
    }
}

#[derive(Message)]
struct WatchIt(ActorRef<Worker>);
impl Handler<WatchIt> for Watcher {
    async fn handle(&mut self, WatchIt(r): WatchIt, ctx: &mut Context<Self>) {
        ctx.watch(&r);
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("in time")
}

/// Members `a` and `b` over the in-memory network, `b` connected to `a`.
async fn two_nodes() -> (MemoryNetwork, Cluster, Cluster) {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    let b =
        Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    (net, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_actor_ends_reach_local_watchers() {
    let (_net, a, b) = two_nodes().await;
    a.spawn_named("quitter", Worker).unwrap();
    a.spawn_named("crasher", Worker).unwrap();
    let quitter: ActorRef<Worker> = b.lookup("quitter").await.unwrap();
    let crasher: ActorRef<Worker> = b.lookup("crasher").await.unwrap();
    let (seen, mut notices) = mpsc::unbounded_channel();
    let watcher = b.system().spawn(Watcher(seen));
    watcher.ask(WatchIt(quitter.clone())).await.unwrap();
    watcher.ask(WatchIt(crasher.clone())).await.unwrap();

    quitter.tell(Quit).await.unwrap();
    let notice = within(notices.recv()).await.unwrap();
    assert_eq!(notice, Terminated { id: quitter.id(), reason: ExitReason::Normal });
    assert_eq!(within(quitter.wait_for_stop()).await, ExitReason::Normal);

    crasher.tell(Crash).await.unwrap();
    let notice = within(notices.recv()).await.unwrap();
    assert_eq!(notice.id, crasher.id());
    match notice.reason {
        ExitReason::Failed(why) => assert!(why.contains("crash on purpose"), "{why}"),
        other => panic!("expected the remote panic as the reason, got {other:?}"),
    }
    // The node itself is fine; nothing else fired.
    assert_eq!(b.peers(), ["a"]);
    assert!(notices.try_recv().is_err());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_the_refs_it_was_made_through() {
    let (_net, a, b) = two_nodes().await;
    let local = a.spawn_named("quitter", Worker).unwrap();
    let (seen, mut notices) = mpsc::unbounded_channel();
    let watcher = b.system().spawn(Watcher(seen));
    let id = {
        let remote: ActorRef<Worker> = b.lookup("quitter").await.unwrap();
        watcher.ask(WatchIt(remote.clone())).await.unwrap();
        remote.id()
    };
    // Every ref on b is gone; the watch must still fire.
    local.tell(Quit).await.unwrap();
    let notice = within(notices.recv()).await.unwrap();
    assert_eq!(notice, Terminated { id, reason: ExitReason::Normal });
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_through_a_remote_ref_stops_the_actor_on_its_node() {
    let (_net, a, b) = two_nodes().await;
    let local = a.spawn_named("worker", Worker).unwrap();
    let remote: ActorRef<Worker> = b.lookup("worker").await.unwrap();
    let (seen, mut notices) = mpsc::unbounded_channel();
    let watcher = b.system().spawn(Watcher(seen));
    watcher.ask(WatchIt(remote.clone())).await.unwrap();

    remote.stop();
    // Stopped on its own node, with the reason a local stop gives...
    assert_eq!(within(local.wait_for_stop()).await, ExitReason::Normal);
    // ...and seen through the remote ref and by its watcher.
    assert_eq!(within(remote.wait_for_stop()).await, ExitReason::Normal);
    assert_eq!(within(notices.recv()).await.unwrap(), Terminated { id: remote.id(), reason: ExitReason::Normal });
    assert!(matches!(remote.tell(Quit).await, Err(footlight::SendError::Closed(_))));
    a.shutdown().await;
    b.shutdown().await;
}

/// A monitor taken outside any actor (`system.monitor`) on a remote ref
/// resolves with the remote actor's exit reason, and with `NodeDown` when
/// the actor's node goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_from_outside_an_actor_sees_remote_ends() {
    let (_net, a, b) = two_nodes().await;
    a.spawn_named("quitter", Worker).unwrap();
    a.spawn_named("stayer", Worker).unwrap();
    let quitter: ActorRef<Worker> = b.lookup("quitter").await.unwrap();
    let stayer: ActorRef<Worker> = b.lookup("stayer").await.unwrap();
    let on_quitter = b.system().monitor(&quitter);
    let on_stayer = b.system().monitor(&stayer);
    quitter.tell(Quit).await.unwrap();
    let down = within(on_quitter.into_future()).await;
    assert_eq!((down.actor, down.reason), (quitter.id(), ExitReason::Normal));
    a.shutdown().await;
    assert_eq!(within(on_stayer.into_future()).await.reason, ExitReason::NodeDown);
    b.shutdown().await;
}
