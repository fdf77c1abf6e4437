//! One-for-one: a panicking child is restarted with fresh state, its ref stays
//! valid, and its siblings are untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorSystem, AskError, Context, Handler, Message, Restart, Supervisor};
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
    type Reply = u64;
}
impl Handler<Crash> for Counter {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) -> u64 {
        panic!("crash on purpose");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_child_restarts_and_its_ref_stays_valid() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().child("a", Restart::Permanent, Counter::default).child(
        "b",
        Restart::Permanent,
        Counter::default,
    ));
    let a = sup.child::<Counter>("a").await.unwrap();
    let b = sup.child::<Counter>("b").await.unwrap();
    assert_eq!(a.ask(Add(5)).await.unwrap(), 5);
    assert_eq!(b.ask(Add(7)).await.unwrap(), 7);

    let err = within("crash", a.ask(Crash)).await.unwrap_err();
    assert!(matches!(err, AskError::NoReply), "{err:?}");
    // The same ref reaches the new instance, whose state starts afresh.
    assert_eq!(within("ask after restart", a.ask(Add(1))).await.unwrap(), 1);
    assert!(a.is_alive());
    // The sibling kept its state: it was not restarted.
    assert_eq!(b.ask(Add(0)).await.unwrap(), 7);
    // The supervisor still lists the same child.
    assert_eq!(sup.child::<Counter>("a").await.unwrap(), a);
    system.shutdown().await;
    assert!(!a.is_alive() && !b.is_alive() && !sup.is_alive());
}
