//! Restart intensity: more than N restarts in the window stops the supervisor
//! with `MaxRestartsExceeded`; under a parent supervisor this escalates, and the
//! parent restarts the whole subtree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actor_core::{Actor, ActorError, ActorSystem, Context, ExitReason, Handler, Message, Restart, Supervisor};
use common::within;

struct Flaky {
    starts: Arc<AtomicU32>,
}
impl Actor for Flaky {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Flaky {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

fn flaky(starts: &Arc<AtomicU32>) -> impl Fn() -> Flaky + Send + Sync + 'static {
    let starts = starts.clone();
    move || Flaky { starts: starts.clone() }
}

#[tokio::test]
async fn exceeding_the_intensity_stops_the_supervisor() {
    let system = ActorSystem::new("t");
    let starts = Arc::new(AtomicU32::new(0));
    let sup = system.spawn(Supervisor::one_for_one().max_restarts(2, Duration::from_secs(60)).child(
        "f",
        Restart::Permanent,
        flaky(&starts),
    ));
    let f = sup.child::<Flaky>("f").await.unwrap();
    // Crash 1 and 2 are restarted; crash 3 exceeds 2 restarts in the window.
    for _ in 0..3 {
        // Each crash is sent once the previous restart is done (ask gates it).
        let _ = f.tell(Crash).await;
    }
    assert_eq!(within("supervisor to give up", sup.wait_for_stop()).await, ExitReason::MaxRestartsExceeded);
    assert_eq!(starts.load(Ordering::SeqCst), 3, "initial start + 2 restarts");
    assert!(!f.is_alive(), "children are stopped with their supervisor");
}

#[tokio::test]
async fn intensity_exceeded_escalates_to_the_parent() {
    let system = ActorSystem::new("t");
    let starts = Arc::new(AtomicU32::new(0));
    let inner_starts = starts.clone();
    let root = system.spawn(Supervisor::one_for_one().max_restarts(5, Duration::from_secs(60)).child(
        "inner",
        Restart::Permanent,
        move || {
            Supervisor::one_for_one().max_restarts(0, Duration::from_secs(60)).child(
                "f",
                Restart::Permanent,
                flaky(&inner_starts),
            )
        },
    ));
    let inner = root.child::<Supervisor>("inner").await.unwrap();
    let f = inner.child::<Flaky>("f").await.unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    f.tell(Crash).await.unwrap();
    // The inner supervisor allows no restart, so it gives up; the root restarts
    // it (same ref), which starts a fresh Flaky under a fresh mailbox.
    let mut fresh = None;
    while fresh.is_none() {
        tokio::task::yield_now().await;
        let current = within("inner answers", inner.child::<Flaky>("f")).await.ok();
        fresh = current.filter(|c| c.id() != f.id());
    }
    assert!(!f.is_alive(), "the old grandchild stopped with its supervisor");
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert!(root.is_alive() && inner.is_alive());
    system.shutdown().await;
}
