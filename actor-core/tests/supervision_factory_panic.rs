//! A child factory that panics never wedges its supervisor: the failure counts
//! as a restart and the intensity limit still applies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actor_core::{Actor, ActorSystem, Context, ExitReason, Handler, Message, OnStartFailure, Restart, Supervisor};
use common::within;

struct Db;
impl Actor for Db {}

struct Ping;
impl Message for Ping {
    type Reply = ();
}
impl Handler<Ping> for Db {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) {}
}

#[tokio::test]
async fn always_panicking_factory_exhausts_the_intensity() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(
        Supervisor::one_for_one()
            .max_restarts(3, Duration::from_secs(60))
            .on_start_failure(OnStartFailure::Restart)
            .child("db", Restart::Permanent, || -> Db { panic!("bad configuration") }),
    );
    assert_eq!(within("supervisor to give up", sup.wait_for_stop()).await, ExitReason::MaxRestartsExceeded);
    within("shutdown", system.shutdown()).await;
}

#[tokio::test]
async fn factory_that_panics_once_then_works() {
    let system = ActorSystem::new("t");
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let sup = system.spawn(Supervisor::one_for_one().on_start_failure(OnStartFailure::Restart).child(
        "db",
        Restart::Permanent,
        move || {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first start fails");
            }
            Db
        },
    ));
    let db = within("child ref", sup.child::<Db>("db")).await.unwrap();
    within("child answers after its restart", db.ask(Ping)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    within("shutdown", system.shutdown()).await;
}

/// The default, as OTP: a child whose first start fails fails its
/// supervisor's start; the siblings started before it are stopped.
#[tokio::test]
async fn by_default_a_child_failing_its_first_start_fails_the_supervisor() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().child("ok", Restart::Permanent, || Db).child(
        "db",
        Restart::Permanent,
        || -> Db { panic!("bad configuration") },
    ));
    let reason = within("supervisor to fail", sup.wait_for_stop()).await;
    assert!(
        matches!(&reason, ExitReason::Failed(why) if why.contains("\"db\" failed to start") && why.contains("bad configuration")),
        "{reason:?}"
    );
    assert!(matches!(sup.wait_started().await, Err(ExitReason::Failed(_))));
    within("shutdown", system.shutdown()).await;
}
