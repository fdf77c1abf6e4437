//! Exponential backoff delays consecutive restarts (virtual clock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{Actor, ActorError, ActorSystem, Backoff, Context, Handler, Message, Restart, Supervisor};
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Flaky {
    starts: mpsc::UnboundedSender<Instant>,
}
impl Actor for Flaky {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.starts.send(Instant::now()).unwrap();
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

#[tokio::test(start_paused = true)]
async fn consecutive_restarts_wait_longer() {
    let system = ActorSystem::new("t");
    let (starts, mut events) = common::events();
    let sup = system.spawn(
        Supervisor::one_for_one()
            .max_restarts(10, Duration::from_secs(60))
            .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(3)))
            .child("f", Restart::Permanent, move || Flaky { starts: starts.clone() }),
    );
    let f = sup.child::<Flaky>("f").await.unwrap();
    let mut last = events.next().await;
    for expected in [1, 2, 3, 3] {
        let crashed_at = Instant::now();
        f.tell(Crash).await.unwrap();
        let started = events.next().await;
        let waited = started - crashed_at;
        assert!(waited >= Duration::from_secs(expected), "restart after {waited:?}, expected {expected}s");
        assert!(waited < Duration::from_secs(expected) + Duration::from_millis(100), "restart after {waited:?}");
        last = started;
    }
    let _ = last;
    system.shutdown().await;
}
