//! Exit reasons as OTP gives them: the child that made its supervisor give
//! up ends with its own failure; linking to a dead actor is `NoProc`; the
//! root cause of a link chain; supervisor events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{ActorRef, ActorSystem, Context, ExitReason, Handler, Message, Restart, Supervisor, SupervisorEvent};
use common::{Crash, Worker, within};

struct Link(ActorRef<Worker>);
impl Message for Link {
    type Reply = ();
}
impl Handler<Link> for Worker {
    async fn handle(&mut self, Link(other): Link, ctx: &mut Context<Self>) {
        ctx.link(&other);
    }
}

#[tokio::test]
async fn the_child_that_makes_its_supervisor_give_up_ends_with_its_failure() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(
        Supervisor::one_for_one()
            .max_restarts(0, Duration::from_secs(5))
            .child("w", Restart::Permanent, Worker::default)
            .child("sibling", Restart::Permanent, Worker::default),
    );
    let w = sup.child::<Worker>("w").await.unwrap();
    let sibling = sup.child::<Worker>("sibling").await.unwrap();
    let mut events = sup.subscribe().await;
    w.tell(Crash).await.unwrap();
    assert_eq!(within("the supervisor", sup.wait_for_stop()).await, ExitReason::MaxRestartsExceeded);
    // It used to be `Shutdown`: nobody outside could learn it had crashed.
    assert_eq!(w.wait_for_stop().await, ExitReason::Failed("boom".into()));
    assert_eq!(sibling.wait_for_stop().await, ExitReason::Shutdown);
    assert_eq!(
        within("the event", events.recv()).await.unwrap(),
        SupervisorEvent::GaveUp { name: "w".into(), reason: ExitReason::Failed("boom".into()) }
    );
    system.shutdown().await;
}

#[tokio::test]
async fn restarts_are_reported_to_subscribers() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().child("w", Restart::Permanent, Worker::default));
    let w = sup.child::<Worker>("w").await.unwrap();
    let mut events = sup.subscribe().await;
    w.tell(Crash).await.unwrap();
    assert_eq!(
        within("the event", events.recv()).await.unwrap(),
        SupervisorEvent::Restarting { name: "w".into(), id: w.id(), reason: ExitReason::Failed("boom".into()) }
    );
    w.stop();
    assert_eq!(
        within("the event", events.recv()).await.unwrap(),
        SupervisorEvent::ChildExited { name: "w".into(), id: w.id(), reason: ExitReason::Normal }
    );
    system.shutdown().await;
}

#[tokio::test]
async fn linking_to_an_actor_that_stopped_normally_is_noproc_and_stops_the_linker() {
    let system = ActorSystem::new("t");
    let gone = system.spawn(Worker);
    gone.stop();
    assert_eq!(gone.wait_for_stop().await, ExitReason::Normal);
    let linker = system.spawn(Worker);
    linker.tell(Link(gone.clone())).await.unwrap();
    // It used to survive: the dead actor's own reason (normal) was delivered.
    let reason = within("the linker", linker.wait_for_stop()).await;
    assert_eq!(reason, ExitReason::Linked { from: gone.id(), reason: Box::new(ExitReason::NoProc) });
    assert_eq!(reason.root_cause(), &ExitReason::NoProc);
    system.shutdown().await;
}

#[test]
fn root_cause_follows_a_chain_of_links() {
    let a = actor_core::ActorId::fresh();
    let chain = ExitReason::Linked {
        from: a,
        reason: Box::new(ExitReason::Linked { from: a, reason: Box::new(ExitReason::Panicked("x".into())) }),
    };
    assert_eq!(chain.root_cause(), &ExitReason::Panicked("x".into()));
    assert!(chain.is_abnormal() && !chain.is_panic() && chain.root_cause().is_panic());
    assert_eq!(ExitReason::Normal.root_cause(), &ExitReason::Normal);
    assert!(ExitReason::NoProc.is_abnormal() && ExitReason::Killed.is_abnormal());
}
