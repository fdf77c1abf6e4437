//! Waiting for an actor's `started` hook: `spawn` returns before it runs;
//! `wait_started` resolves once it has returned, or with the reason the
//! actor stopped without starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actor_core::{Actor, ActorError, ActorSystem, Context, ExitReason};
use common::within;
use tokio::sync::Semaphore;

/// Its start waits for a permit, then succeeds or fails as told.
struct Slow {
    gate: Arc<Semaphore>,
    fail: bool,
    done: Arc<AtomicBool>,
}

impl Actor for Slow {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let _permit = self.gate.acquire().await.unwrap();
        self.done.store(true, Ordering::SeqCst);
        if self.fail { Err(ActorError::msg("no database")) } else { Ok(()) }
    }
}

fn slow(fail: bool) -> (Slow, Arc<Semaphore>, Arc<AtomicBool>) {
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicBool::new(false));
    (Slow { gate: gate.clone(), fail, done: done.clone() }, gate, done)
}

#[tokio::test]
async fn wait_started_resolves_after_the_hook_returned() {
    let system = ActorSystem::new("t");
    let (actor, gate, done) = slow(false);
    let a = system.spawn(actor);
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.wait_started().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "resolved before the hook ran");
    gate.add_permits(1);
    within("the start", waiting).await.unwrap().unwrap();
    assert!(done.load(Ordering::SeqCst));
    // Once started, at once.
    within("again", a.wait_started()).await.unwrap();
    system.shutdown().await;
}

#[tokio::test]
async fn a_failed_start_is_reported_with_its_reason() {
    let system = ActorSystem::new("t");
    let (actor, gate, _) = slow(true);
    let a = system.spawn(actor);
    gate.add_permits(1);
    assert_eq!(within("the start", a.wait_started()).await, Err(ExitReason::Failed("no database".into())));
    system.shutdown().await;
}

#[tokio::test]
async fn an_actor_stopped_before_it_started_reports_its_stop() {
    let system = ActorSystem::new("t");
    let (actor, gate, _) = slow(false);
    let a = system.spawn(actor);
    a.kill();
    assert_eq!(within("the start", a.wait_started()).await, Err(ExitReason::Killed));
    drop(gate);
    system.shutdown().await;
}
