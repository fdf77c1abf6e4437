//! `quiet_actor_panics`: panics the runtime catches in actors no longer
//! reach the previous panic hook (stderr by default); every other panic
//! still does. One test in this file: the panic hook is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actor_core::{Actor, ActorSystem, Context, ExitReason, Handler, Message};
use common::within;

struct Worker;
impl Actor for Worker {}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Worker {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("in an actor");
    }
}

#[tokio::test]
async fn actor_panics_stay_off_the_previous_hook_and_others_do_not() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    // Stands for the default hook: counts, and prints (so a failed
    // assertion in this test still shows its message).
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        eprintln!("{info}");
    }));
    actor_core::quiet_actor_panics();

    let system = ActorSystem::new("t");
    let worker = system.spawn(Worker);
    worker.tell(Crash).await.unwrap();
    let reason = within("the crash", worker.wait_for_stop()).await;
    assert!(matches!(reason, ExitReason::Panicked(ref why) if why.contains("in an actor")), "{reason:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "an actor's panic reached the previous hook");

    // A panic of the test's own still does (as a failed assertion would).
    let own = std::panic::catch_unwind(|| panic!("my own"));
    assert!(own.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a panic outside actors did not reach the previous hook");
    let _ = std::panic::take_hook();
    system.shutdown().await;
}
