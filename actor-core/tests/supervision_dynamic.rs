//! Children added while a supervisor runs (OTP's `start_child`, Elixir's
//! `DynamicSupervisor`): started and returned after their `started` hook,
//! supervised like static children, terminated, restarted and deleted by
//! name, listed with their state and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{
    Actor, ActorError, ActorSystem, ChildError, ChildSpec, ChildState, Context, ExitReason, Handler, Message, Restart,
    Supervisor,
};
use common::within;

/// One account: a balance, and a start that fails for a negative opening.
struct Account(i64);

impl Actor for Account {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        if self.0 < 0 { Err(ActorError::msg("negative opening balance")) } else { Ok(()) }
    }
}

struct Deposit(i64);
impl Message for Deposit {
    type Reply = i64;
}
impl Handler<Deposit> for Account {
    async fn handle(&mut self, Deposit(n): Deposit, _ctx: &mut Context<Self>) -> i64 {
        self.0 += n;
        self.0
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Account {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

fn account(name: &str, opening: i64) -> ChildSpec<Account> {
    ChildSpec::new(name, Restart::Permanent, move || Account(opening))
}

#[tokio::test]
async fn children_started_at_run_time_are_supervised_like_static_ones() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().max_restarts(10, Duration::from_secs(5)));
    let alice = within("start alice", sup.start_child(account("alice", 10))).await.unwrap();
    let bob = within("start bob", sup.start_child(account("bob", 20))).await.unwrap();
    assert_eq!(alice.ask(Deposit(5)).await.unwrap(), 15);
    assert_eq!(bob.ask(Deposit(1)).await.unwrap(), 21);

    // A crash restarts it in place (fresh state from its factory).
    alice.tell(Crash).await.unwrap();
    assert_eq!(within("alice after her restart", alice.ask(Deposit(0))).await.unwrap(), 10);
    assert_eq!(sup.child::<Account>("alice").await.unwrap(), alice);

    let names: Vec<(String, ChildState)> =
        sup.children().await.unwrap().into_iter().map(|c| (c.name, c.state)).collect();
    assert_eq!(names, [("alice".to_owned(), ChildState::Running), ("bob".to_owned(), ChildState::Running)]);
    let counts = sup.count_children().await.unwrap();
    assert_eq!((counts.specs, counts.active, counts.workers, counts.supervisors), (2, 2, 2, 0));
    system.shutdown().await;
}

#[tokio::test]
async fn a_name_in_use_and_a_failed_start_are_refused_and_add_nothing() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    sup.start_child(account("alice", 1)).await.unwrap();
    assert_eq!(sup.start_child(account("alice", 2)).await.unwrap_err(), ChildError::AlreadyPresent("alice".into()));
    match sup.start_child(account("mallory", -1)).await {
        Err(ChildError::StartFailed { name, reason: ExitReason::Failed(why) }) => {
            assert_eq!(name, "mallory");
            assert!(why.contains("negative"), "{why}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert_eq!(sup.count_children().await.unwrap().specs, 1);
    assert!(matches!(sup.child::<Account>("mallory").await, Err(ChildError::NotFound(_))));
    system.shutdown().await;
}

#[tokio::test]
async fn terminate_keeps_the_spec_for_restart_and_delete_removes_it() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    let alice = sup.start_child(account("alice", 10)).await.unwrap();
    sup.terminate_child("alice").await.unwrap();
    assert_eq!(alice.wait_for_stop().await, ExitReason::Shutdown);
    let listed = sup.children().await.unwrap();
    assert_eq!((listed[0].state, listed[0].id), (ChildState::Terminated, None));
    // Not restarted by its supervisor, and cannot be deleted while running.
    assert!(matches!(sup.child::<Account>("alice").await, Err(ChildError::NotFound(_))));

    sup.restart_child("alice").await.unwrap();
    let again = sup.child::<Account>("alice").await.unwrap();
    assert_ne!(again.id(), alice.id());
    assert_eq!(again.ask(Deposit(1)).await.unwrap(), 11);
    assert_eq!(sup.delete_child("alice").await.unwrap_err(), ChildError::Running("alice".into()));
    assert_eq!(sup.restart_child("alice").await.unwrap_err(), ChildError::Running("alice".into()));

    sup.terminate_child("alice").await.unwrap();
    sup.delete_child("alice").await.unwrap();
    assert_eq!(sup.count_children().await.unwrap().specs, 0);
    assert_eq!(sup.terminate_child("alice").await.unwrap_err(), ChildError::NotFound("alice".into()));
    system.shutdown().await;
}

#[tokio::test]
async fn a_temporary_child_terminated_is_deleted_and_a_wrong_type_is_an_error() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    sup.start_child(ChildSpec::new("once", Restart::Temporary, || Account(0))).await.unwrap();
    assert!(matches!(sup.child::<Supervisor>("once").await, Err(ChildError::WrongType { .. })));
    sup.terminate_child("once").await.unwrap();
    assert_eq!(sup.count_children().await.unwrap().specs, 0);
    system.shutdown().await;
}

#[tokio::test]
async fn many_children_start_and_stop_with_their_supervisor() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    let mut refs = Vec::new();
    for i in 0..2_000 {
        refs.push(sup.start_child(account(&format!("acct-{i}"), i)).await.unwrap());
    }
    assert_eq!(sup.count_children().await.unwrap().active, 2_000);
    assert_eq!(refs[1234].ask(Deposit(1)).await.unwrap(), 1235);
    within("shutdown", system.shutdown()).await;
    assert!(refs.iter().all(|r| !r.is_alive()));
}

#[tokio::test]
async fn asking_a_stopped_supervisor_says_so() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    sup.stop();
    sup.wait_for_stop().await;
    assert_eq!(sup.start_child(account("a", 1)).await.unwrap_err(), ChildError::SupervisorStopped);
    assert_eq!(sup.children().await.unwrap_err(), ChildError::SupervisorStopped);
    system.shutdown().await;
}

#[tokio::test]
async fn a_failed_restart_keeps_the_child_terminated_with_its_spec() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one());
    let starts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = starts.clone();
    // Opens with 1 the first time, then with -1 (its start fails).
    let spec = ChildSpec::new("flaky", Restart::Permanent, move || {
        Account(if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 { 1 } else { -1 })
    });
    sup.start_child(spec).await.unwrap();
    sup.terminate_child("flaky").await.unwrap();
    assert!(matches!(sup.restart_child("flaky").await, Err(ChildError::StartFailed { .. })));
    let listed = sup.children().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].state), ("flaky", ChildState::Terminated));
    sup.delete_child("flaky").await.unwrap();
    system.shutdown().await;
}

#[tokio::test]
async fn two_static_children_with_one_name_fail_the_supervisor_start() {
    let system = ActorSystem::new("t");
    let sup = system.spawn(Supervisor::one_for_one().child("a", Restart::Permanent, || Account(1)).child(
        "a",
        Restart::Permanent,
        || Account(2),
    ));
    let reason = within("the supervisor", sup.wait_for_stop()).await;
    assert!(matches!(&reason, ExitReason::Failed(why) if why.contains("two children")), "{reason:?}");
    system.shutdown().await;
}
