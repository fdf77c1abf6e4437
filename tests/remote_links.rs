//! Links across nodes work both ways: a local actor linked to a remote one
//! sees it exit (through the remote actor's stand-in), and the remote actor
//! sees the local one exit, or its node get lost, as a link exit. Over the
//! in-memory network on the paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use footlight::Cluster;
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use tokio::sync::mpsc;

/// Exposed on node "b". With `trap`, records link exits and lives on;
/// without, exits as a linked actor does by default.
struct Worker {
    trap: Option<mpsc::UnboundedSender<Terminated>>,
}

impl Actor for Worker {
    async fn on_link_exit(&mut self, _ctx: &mut Context<Self>, exit: Terminated) -> LinkDecision {
        match &self.trap {
            Some(tx) => {
                let _ = tx.send(exit);
                LinkDecision::Ignore
            }
            None if exit.reason != ExitReason::Normal => LinkDecision::Stop,
            None => LinkDecision::Ignore,
        }
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "test.Ping")]
struct Ping(u64);

impl Handler<Ping> for Worker {
    async fn handle(&mut self, Ping(n): Ping, _ctx: &mut Context<Self>) -> u64 {
        n
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Crash")]
struct Crash;

impl Handler<Crash> for Worker {
    async fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        ctx.fail("crash");
    }
}

impl RemoteActor for Worker {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Ping>().add::<Crash>();
    }
}

/// Lives on node "a" and links itself to the worker on "b" when it starts.
struct Linker {
    worker: ActorRef<Worker>,
}

impl Actor for Linker {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.link(&self.worker);
        Ok(())
    }
}

#[derive(Message)]
struct Fail;

impl Handler<Fail> for Linker {
    async fn handle(&mut self, _: Fail, ctx: &mut Context<Self>) {
        ctx.fail("boom");
    }
}

#[derive(Message)]
struct Unlink;

impl Handler<Unlink> for Linker {
    async fn handle(&mut self, _: Unlink, ctx: &mut Context<Self>) {
        let worker = self.worker.clone();
        ctx.unlink(&worker);
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("in time")
}

/// Nodes "a" and "b", a worker on "b" (trapping exits into the returned
/// receiver if `trap`), and a linker on "a" linked to it.
async fn setup(
    net: &MemoryNetwork,
    trap: bool,
) -> (Cluster, Cluster, ActorRef<Worker>, ActorRef<Linker>, mpsc::UnboundedReceiver<Terminated>) {
    let a = support::start(net, "a", &[]).await;
    let b = support::start(net, "b", &["a"]).await;
    b.wait_for_peer("a").await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = b.spawn_named("worker", Worker { trap: trap.then_some(tx) }).unwrap();
    let remote: ActorRef<Worker> = a.lookup("worker").await.unwrap();
    let linker = a.system().spawn(Linker { worker: remote });
    (a, b, worker, linker, rx)
}

#[tokio::test(start_paused = true)]
async fn a_local_exit_stops_the_linked_remote_actor() {
    let net = MemoryNetwork::new();
    let (a, b, worker, linker, _rx) = setup(&net, false).await;
    linker.tell(Fail).await.unwrap();
    let reason = within(worker.wait_for_stop()).await;
    assert!(
        matches!(&reason, ExitReason::Linked { reason, .. } if matches!(&**reason, ExitReason::Failed(why) if why.contains("boom"))),
        "{reason:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_remote_actor_that_traps_exits_sees_the_reason_and_lives_on() {
    let net = MemoryNetwork::new();
    let (a, b, worker, linker, mut rx) = setup(&net, true).await;
    linker.tell(Fail).await.unwrap();
    let exit = within(rx.recv()).await.unwrap();
    assert!(matches!(&exit.reason, ExitReason::Failed(why) if why.contains("boom")), "{exit:?}");
    assert!(worker.is_alive());
    assert_eq!(worker.ask(Ping(1)).await.unwrap(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn losing_the_linkers_node_is_a_node_down_exit() {
    let net = MemoryNetwork::new();
    let (a, b, worker, _linker, mut rx) = setup(&net, true).await;
    // Let the link arrive before the node goes silent.
    let remote: ActorRef<Worker> = a.lookup("worker").await.unwrap();
    assert_eq!(remote.ask(Ping(2)).await.unwrap(), 2);
    net.isolate("a");
    let exit = within(rx.recv()).await.unwrap();
    assert_eq!(exit.reason, ExitReason::NodeDown);
    assert!(worker.is_alive());
    net.heal_all();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unlinked_remote_actor_hears_nothing() {
    let net = MemoryNetwork::new();
    let (a, b, worker, linker, mut rx) = setup(&net, true).await;
    linker.tell(Unlink).await.unwrap();
    linker.tell(Fail).await.unwrap();
    within(linker.wait_for_stop()).await;
    // Anything the linker's end sent travels ahead of this ask, on the same
    // connection, and link exits overtake queued messages.
    let remote: ActorRef<Worker> = a.lookup("worker").await.unwrap();
    assert_eq!(remote.ask(Ping(3)).await.unwrap(), 3);
    assert!(rx.try_recv().is_err(), "no link exit after unlink");
    // Nor when the linker's node is lost afterwards.
    net.isolate("a");
    support::eventually(Duration::from_secs(30), || async { !b.peers().iter().any(|p| p == "a") }).await;
    // Link exits overtake queued messages: any would be seen by now.
    assert_eq!(worker.ask(Ping(4)).await.unwrap(), 4);
    assert!(rx.try_recv().is_err(), "no node-down exit after unlink");
    net.heal_all();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_remote_actors_failure_still_stops_the_local_linker() {
    let net = MemoryNetwork::new();
    let (a, b, worker, linker, _rx) = setup(&net, false).await;
    worker.tell(Crash).await.unwrap();
    let reason = within(linker.wait_for_stop()).await;
    assert!(
        matches!(&reason, ExitReason::Linked { reason, .. } if matches!(&**reason, ExitReason::Failed(why) if why.contains("crash"))),
        "{reason:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
