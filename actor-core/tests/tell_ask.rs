//! `tell` then `ask`, and each way an ask can end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{Actor, ActorSystem, AskError, Context, Handler, Message, SendError, TrySendError};
use common::within;

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

/// Never replies: parks forever.
struct Hang;
impl Message for Hang {
    type Reply = ();
}
impl Handler<Hang> for Counter {
    async fn handle(&mut self, _: Hang, _ctx: &mut Context<Self>) {
        std::future::pending::<()>().await;
    }
}

struct Boom;
impl Message for Boom {
    type Reply = u64;
}
impl Handler<Boom> for Counter {
    async fn handle(&mut self, _: Boom, _ctx: &mut Context<Self>) -> u64 {
        panic!("boom");
    }
}

#[tokio::test]
async fn tell_then_ask_sees_every_tell() {
    let system = ActorSystem::new("t");
    let counter = system.spawn(Counter(0));
    for _ in 0..100 {
        counter.tell(Add(1)).await.unwrap();
    }
    assert_eq!(within("ask", counter.ask(Add(0))).await.unwrap(), 100);
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ask_times_out() {
    let system = ActorSystem::new("t");
    let counter = system.spawn(Counter(0));
    let err = counter.ask(Hang).timeout(Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, AskError::Timeout), "{err:?}");
}

#[tokio::test]
async fn ask_to_a_stopped_actor_returns_the_message() {
    let system = ActorSystem::new("t");
    let counter = system.spawn(Counter(0));
    counter.stop();
    within("stop", counter.wait_for_stop()).await;
    match counter.ask(Add(7)).await {
        Err(AskError::Closed(Add(7))) => {}
        other => panic!("expected Closed(Add(7)), got {other:?}"),
    }
    match counter.tell(Add(8)).await {
        Err(SendError::Closed(Add(8))) => {}
        other => panic!("expected Closed(Add(8)), got {other:?}"),
    }
    match counter.try_tell(Add(9)) {
        Err(TrySendError::Closed(Add(9))) => {}
        other => panic!("expected Closed(Add(9)), got {other:?}"),
    }
}

#[tokio::test]
async fn ask_whose_handler_panics_gets_no_reply() {
    let system = ActorSystem::new("t");
    let counter = system.spawn(Counter(0));
    let err = within("ask", counter.ask(Boom)).await.unwrap_err();
    assert!(matches!(err, AskError::NoReply), "{err:?}");
    let reason = within("stop", counter.wait_for_stop()).await;
    assert!(
        matches!(reason, actor_core::ExitReason::Panicked(ref why) if why.contains("boom") && why.contains("Boom")),
        "{reason:?}"
    );
}

impl std::fmt::Debug for Add {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Add({})", self.0)
    }
}
