//! Rest-for-one: the failed child and those started after it restart; older
//! siblings keep running with their state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorSystem, Context, Handler, Message, Restart, Supervisor};
use common::within;

#[derive(Default)]
struct Counter(u64);
impl Actor for Counter {}

struct Add(u64);
impl Message for Add {
    type Reply = u64;
}
impl Handler<Add> for Counter {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Counter {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn younger_siblings_restart_older_ones_do_not() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(
        Supervisor::rest_for_one()
            .child("a", Restart::Permanent, Counter::default)
            .child("b", Restart::Permanent, Counter::default)
            .child("c", Restart::Permanent, Counter::default),
    );
    let mut refs = Vec::new();
    for name in ["a", "b", "c"] {
        let r = sup.child::<Counter>(name).await.unwrap();
        r.ask(Add(10)).await.unwrap();
        refs.push(r);
    }
    refs[1].tell(Crash).await.unwrap();
    // b restarted from scratch; the restart finishes before b takes its next message.
    assert_eq!(within("b", refs[1].ask(Add(1))).await.unwrap(), 1);
    // c (younger) restarts too; the supervisor restarts it right after b.
    let mut c_state = within("c", refs[2].ask(Add(0))).await.unwrap();
    while c_state != 0 {
        // c may still answer from its old instance until its suspension lands.
        tokio::task::yield_now().await;
        c_state = within("c", refs[2].ask(Add(0))).await.unwrap();
    }
    assert_eq!(within("a", refs[0].ask(Add(0))).await.unwrap(), 10, "a (older) kept its state");
    system.shutdown().await;
}
