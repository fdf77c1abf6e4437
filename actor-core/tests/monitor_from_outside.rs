//! Watching an actor from outside any actor (`ActorSystem::monitor`):
//! distinct monitors each answered with their own id, cancellable, and
//! answered at once for an actor already stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{ActorSystem, ExitReason};
use common::{Crash, Worker, within};

#[tokio::test]
async fn each_monitor_gets_its_own_notice_with_the_exit_reason() {
    let system = ActorSystem::new("t");
    let worker = system.spawn(Worker);
    let first = system.monitor(&worker);
    let second = system.monitor(&worker);
    let (a, b) = (first.id(), second.id());
    assert_ne!(a, b);
    worker.tell(Crash).await.unwrap();
    let (down_a, down_b) = within("both notices", async { (first.await, second.await) }).await;
    assert_eq!(
        (down_a.monitor, down_a.actor, down_a.reason.clone()),
        (a, worker.id(), ExitReason::Failed("boom".into()))
    );
    assert_eq!((down_b.monitor, down_b.reason), (b, ExitReason::Failed("boom".into())));
    system.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_monitor_leaves_the_others_and_the_actor_alone() {
    let system = ActorSystem::new("t");
    let worker = system.spawn(Worker);
    let kept = system.monitor(&worker);
    let before = system.top_level_count();
    system.monitor(&worker).cancel();
    // Its watcher is gone (it was one more top-level actor).
    within("the cancelled watcher to stop", async {
        while system.top_level_count() > before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(worker.is_alive());
    worker.stop();
    assert_eq!(within("the kept notice", kept).await.reason, ExitReason::Normal);
    system.shutdown().await;
}

#[tokio::test]
async fn monitoring_an_actor_already_stopped_answers_at_once() {
    let system = ActorSystem::new("t");
    let worker = system.spawn(Worker);
    worker.stop();
    worker.wait_for_stop().await;
    let down = within("the notice", system.monitor(&worker)).await;
    assert_eq!(down.reason, ExitReason::Normal);
    system.shutdown().await;
}
