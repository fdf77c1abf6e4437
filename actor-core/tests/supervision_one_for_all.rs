//! One-for-all: when one child fails, every child is restarted: the others are
//! stopped youngest first, then all start again oldest first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use actor_core::{Actor, ActorError, ActorSystem, Context, Handler, Message, Restart, Supervisor};
use common::within;

type Log = Arc<Mutex<Vec<String>>>;

struct Child {
    name: &'static str,
    log: Log,
}
impl Actor for Child {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.log.lock().unwrap().push(format!("start {}", self.name));
        Ok(())
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Child {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

struct Ping;
impl Message for Ping {
    type Reply = &'static str;
}
impl Handler<Ping> for Child {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) -> &'static str {
        self.name
    }
}

fn child(name: &'static str, log: &Log) -> impl Fn() -> Child + Send + Sync + 'static {
    let log = log.clone();
    move || Child { name, log: log.clone() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_child_restarts_in_order() {
    let system = ActorSystem::new("t");
    let log: Log = Arc::default();
    let sup = system.spawn(
        Supervisor::one_for_all()
            .child("a", Restart::Permanent, child("a", &log))
            .child("b", Restart::Permanent, child("b", &log))
            .child("c", Restart::Permanent, child("c", &log)),
    );
    let b = sup.child::<Child>("b").await.unwrap();
    let c = sup.child::<Child>("c").await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["start a", "start b", "start c"]);
    log.lock().unwrap().clear();

    b.tell(Crash).await.unwrap();
    // Wait until c (the last to start again) answers from a new instance.
    loop {
        within("c answers", c.ask(Ping)).await.unwrap();
        if log.lock().unwrap().iter().any(|e| e == "start c") {
            break;
        }
        tokio::task::yield_now().await;
    }
    // b's stopped hook ran when it failed; then c and a were stopped youngest first.
    assert_eq!(*log.lock().unwrap(), ["stop b", "stop c", "stop a", "start a", "start b", "start c"]);
    assert_eq!(within("b answers", b.ask(Ping)).await.unwrap(), "b");
    system.shutdown().await;
}
