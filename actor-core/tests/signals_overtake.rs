//! A stop signal overtakes user messages already queued, even in a full mailbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use actor_core::{Actor, ActorSystem, Context, ExitReason, Handler, Mailbox, Message, SpawnOptions};
use common::within;
use tokio::sync::{Semaphore, mpsc};

struct Worker {
    gate: Arc<Semaphore>,
    handled: mpsc::UnboundedSender<u32>,
}
impl Actor for Worker {}

struct Job(u32);
impl Message for Job {
    type Reply = ();
}
impl Handler<Job> for Worker {
    async fn handle(&mut self, Job(n): Job, _ctx: &mut Context<Self>) {
        self.handled.send(n).unwrap();
        self.gate.acquire().await.unwrap().forget();
    }
}

#[tokio::test]
async fn stop_overtakes_a_full_mailbox() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let (handled, mut handled_rx) = common::events();
    let worker = system
        .spawn_with(Worker { gate: gate.clone(), handled }, SpawnOptions::new().mailbox(Mailbox::bounded(4)))
        .unwrap();
    worker.tell(Job(0)).await.unwrap();
    assert_eq!(handled_rx.next().await, 0, "job 0 is in progress");
    for n in 1..=4 {
        worker.try_tell(Job(n)).unwrap();
    }
    assert!(worker.try_tell(Job(5)).is_err(), "mailbox is full");

    worker.stop();
    gate.add_permits(100);
    assert_eq!(within("stop", worker.wait_for_stop()).await, ExitReason::Normal);
    assert!(handled_rx.drain().is_empty(), "queued jobs must not run after the stop signal");
}
