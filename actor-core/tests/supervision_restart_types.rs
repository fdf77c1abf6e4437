//! Permanent, transient and temporary children, after normal and abnormal exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorRef, ActorSystem, Context, ExitReason, Handler, Message, Restart, Supervisor};
use common::within;

#[derive(Default)]
struct Worker(u64);
impl Actor for Worker {}

struct Add(u64);
impl Message for Add {
    type Reply = u64;
}
impl Handler<Add> for Worker {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

enum Exit {
    Normal,
    Crash,
}
impl Message for Exit {
    type Reply = ();
}
impl Handler<Exit> for Worker {
    async fn handle(&mut self, exit: Exit, ctx: &mut Context<Self>) {
        match exit {
            Exit::Normal => ctx.stop(),
            Exit::Crash => panic!("crash"),
        }
    }
}

async fn supervised(restart: Restart) -> (ActorSystem, ActorRef<Supervisor>, ActorRef<Worker>) {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().max_restarts(10, std::time::Duration::from_secs(5)).child(
        "w",
        restart,
        Worker::default,
    ));
    let w = sup.child::<Worker>("w").await.unwrap();
    w.ask(Add(5)).await.unwrap();
    (system, sup, w)
}

/// Restarted means: the same ref answers, from fresh state.
async fn assert_restarted(w: &ActorRef<Worker>) {
    assert_eq!(within("restarted child", w.ask(Add(1))).await.unwrap(), 1);
}

async fn assert_gone(sup: &ActorRef<Supervisor>, w: &ActorRef<Worker>, reason: ExitReason) {
    assert_eq!(within("child to stop", w.wait_for_stop()).await, reason);
    // The supervisor forgets it (its answer comes after the exit report).
    let mut listed = sup.child::<Worker>("w").await.ok();
    while listed.is_some() {
        tokio::task::yield_now().await;
        listed = sup.child::<Worker>("w").await.ok();
    }
}

#[tokio::test]
async fn permanent_restarts_after_normal_exit() {
    let (system, _sup, w) = supervised(Restart::Permanent).await;
    w.tell(Exit::Normal).await.unwrap();
    assert_restarted(&w).await;
    system.shutdown().await;
}

#[tokio::test]
async fn permanent_restarts_after_crash() {
    let (system, _sup, w) = supervised(Restart::Permanent).await;
    w.tell(Exit::Crash).await.unwrap();
    assert_restarted(&w).await;
    system.shutdown().await;
}

#[tokio::test]
async fn transient_restarts_after_crash() {
    let (system, _sup, w) = supervised(Restart::Transient).await;
    w.tell(Exit::Crash).await.unwrap();
    assert_restarted(&w).await;
    system.shutdown().await;
}

#[tokio::test]
async fn transient_stays_down_after_normal_exit() {
    let (system, sup, w) = supervised(Restart::Transient).await;
    w.tell(Exit::Normal).await.unwrap();
    assert_gone(&sup, &w, ExitReason::Normal).await;
    assert!(sup.is_alive());
    system.shutdown().await;
}

#[tokio::test]
async fn temporary_stays_down_after_crash() {
    let (system, sup, w) = supervised(Restart::Temporary).await;
    w.tell(Exit::Crash).await.unwrap();
    let reason = within("stop", w.wait_for_stop()).await;
    assert!(matches!(reason, ExitReason::Panicked(_)), "{reason:?}");
    assert_gone(&sup, &w, reason).await;
    system.shutdown().await;
}

#[tokio::test]
async fn stopping_a_child_by_its_ref_is_final() {
    let (system, sup, w) = supervised(Restart::Permanent).await;
    w.stop();
    assert_gone(&sup, &w, ExitReason::Normal).await;
    system.shutdown().await;
}
