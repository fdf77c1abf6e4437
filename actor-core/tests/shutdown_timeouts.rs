//! Shutdown policies (OTP's child `shutdown`): a child stuck in a long
//! handler no longer holds its parent's or the system's shutdown up past its
//! timeout; it is killed and its exit reason says so. Brutal kill, infinity,
//! and `ActorRef::kill`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{
    Actor, ActorRef, ActorSystem, Context, ExitReason, Handler, Message, Restart, Shutdown, SpawnOptions, Supervisor,
};
use common::{events, within};
use tokio::sync::mpsc::UnboundedSender;

/// Sleeps in its handler for as long as it is told; reports its hooks.
struct Sleeper {
    hooks: Option<UnboundedSender<&'static str>>,
}

impl Actor for Sleeper {
    async fn stopping(&mut self, _ctx: &mut Context<Self>) {
        if let Some(h) = &self.hooks {
            let _ = h.send("stopping");
        }
    }
}

struct Nap(Duration);
impl Message for Nap {
    type Reply = ();
}
impl Handler<Nap> for Sleeper {
    async fn handle(&mut self, Nap(d): Nap, _ctx: &mut Context<Self>) {
        tokio::time::sleep(d).await;
    }
}

/// Asks for a nap and waits until the handler is in it.
async fn napping(actor: &ActorRef<Sleeper>, d: Duration) {
    let _ = actor.tell(Nap(d)).await;
    // The nap is handled once a second message can be queued behind it and
    // the actor is still alive: give the task a turn.
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn system_shutdown_is_bounded_by_the_default_timeout_and_says_killed() {
    let system = ActorSystem::new("t");
    let stuck = system.spawn(Sleeper { hooks: None });
    napping(&stuck, Duration::from_secs(3600)).await;
    let began = tokio::time::Instant::now();
    within("shutdown", system.shutdown()).await;
    let took = began.elapsed();
    // The virtual clock: exactly the 5 s default, not the hour.
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "shutdown took {took:?}");
    assert_eq!(stuck.wait_for_stop().await, ExitReason::Killed);
}

#[tokio::test(start_paused = true)]
async fn an_actor_that_stops_in_time_is_not_killed_and_runs_its_hooks() {
    let system = ActorSystem::new("t");
    let (tx, mut hooks) = events();
    let quick = system.spawn(Sleeper { hooks: Some(tx) });
    napping(&quick, Duration::from_secs(1)).await;
    within("shutdown", system.shutdown()).await;
    assert_eq!(quick.wait_for_stop().await, ExitReason::Shutdown);
    assert_eq!(hooks.next().await, "stopping");
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_kills_a_child_stuck_past_its_timeout() {
    let system = ActorSystem::new("t");
    let (tx, mut hooks) = events();
    let sup = system.spawn(
        Supervisor::one_for_one()
            .child_spec(
                actor_core::supervisor::ChildSpec::new("stuck", Restart::Permanent, move || Sleeper {
                    hooks: Some(tx.clone()),
                })
                .shutdown(Shutdown::Timeout(Duration::from_millis(200))),
            )
            .child("other", Restart::Permanent, || Sleeper { hooks: None }),
    );
    let stuck = sup.child::<Sleeper>("stuck").await.unwrap();
    napping(&stuck, Duration::from_secs(3600)).await;
    let began = tokio::time::Instant::now();
    sup.stop();
    assert_eq!(within("the supervisor's stop", sup.wait_for_stop()).await, ExitReason::Normal);
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(stuck.wait_for_stop().await, ExitReason::Killed);
    // Killed: its stopping hook did not run.
    hooks.assert_empty();
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn brutal_kill_does_not_wait_and_infinity_waits_as_long_as_it_takes() {
    let system = ActorSystem::new("t");
    let brutal =
        system.spawn_with(Sleeper { hooks: None }, SpawnOptions::new().shutdown(Shutdown::BrutalKill)).unwrap();
    let patient = system.spawn_with(Sleeper { hooks: None }, SpawnOptions::new().shutdown(Shutdown::Infinity)).unwrap();
    napping(&brutal, Duration::from_secs(3600)).await;
    napping(&patient, Duration::from_secs(8)).await;
    let began = tokio::time::Instant::now();
    within("shutdown", system.shutdown()).await;
    // Infinity: the whole nap (8 s of virtual time, past the 5 s default),
    // then a clean stop.
    assert!(began.elapsed() >= Duration::from_secs(8), "took {:?}", began.elapsed());
    assert_eq!(brutal.wait_for_stop().await, ExitReason::Killed);
    assert_eq!(patient.wait_for_stop().await, ExitReason::Shutdown);
}

/// Watches one actor and reports its notice.
struct Watcher {
    target: ActorRef<Sleeper>,
    seen: UnboundedSender<ExitReason>,
}

impl Actor for Watcher {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), actor_core::ActorError> {
        ctx.watch(&self.target);
        Ok(())
    }

    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: actor_core::Terminated) {
        let _ = self.seen.send(t.reason);
    }
}

#[tokio::test(start_paused = true)]
async fn kill_interrupts_a_handler_and_watchers_and_the_supervisor_see_killed() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().child("w", Restart::Permanent, || Sleeper { hooks: None }));
    let child = sup.child::<Sleeper>("w").await.unwrap();
    let (tx, mut seen) = events();
    let _watcher = system.spawn(Watcher { target: child.clone(), seen: tx });
    napping(&child, Duration::from_secs(3600)).await;
    child.kill();
    assert_eq!(within("the kill", child.wait_for_stop()).await, ExitReason::Killed);
    assert_eq!(seen.next().await, ExitReason::Killed);
    // Not restarted, as after any stop for good; the supervisor lives on.
    within("the child leaving", async {
        while sup.children().await.unwrap().iter().any(|c| c.name == "w") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(sup.is_alive());
    system.shutdown().await;
}

/// Spawns a sleeping child in its `started` and hands it out.
struct Parent {
    out: UnboundedSender<ActorRef<Sleeper>>,
}

impl Actor for Parent {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), actor_core::ActorError> {
        let child = ctx.spawn(Sleeper { hooks: None });
        let _ = self.out.send(child);
        Ok(())
    }
}

/// A parent killed while it waits for a stuck child to stop (both with the
/// default 5 s: the parent's deadline comes first) kills that child too; it
/// used to run on after `shutdown` returned.
#[tokio::test(start_paused = true)]
async fn a_parent_killed_while_stopping_a_child_kills_that_child() {
    let system = ActorSystem::new("t");
    let (tx, mut children) = events();
    let _parent = system.spawn(Parent { out: tx });
    let child = children.next().await;
    napping(&child, Duration::from_secs(3600)).await;
    within("shutdown", system.shutdown()).await;
    assert_eq!(within("the child", child.wait_for_stop()).await, ExitReason::Killed);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_too_long_to_represent_waits_and_does_not_panic() {
    let system = ActorSystem::new("t");
    let a = system
        .spawn_with(Sleeper { hooks: None }, SpawnOptions::new().shutdown(Shutdown::Timeout(Duration::MAX)))
        .unwrap();
    napping(&a, Duration::from_secs(7)).await;
    within("shutdown", system.shutdown()).await;
    assert_eq!(a.wait_for_stop().await, ExitReason::Shutdown);
}
