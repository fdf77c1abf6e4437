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

#[tokio::test]
async fn stop_after_queued_lets_the_queued_messages_run_first_and_refuses_later_ones() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let (handled, mut handled_rx) = common::events();
    let worker = system
        .spawn_with(Worker { gate: gate.clone(), handled }, SpawnOptions::new().mailbox(Mailbox::bounded(4)))
        .unwrap();
    worker.tell(Job(0)).await.unwrap();
    assert_eq!(handled_rx.next().await, 0, "job 0 is in progress");
    for n in 1..=3 {
        worker.try_tell(Job(n)).unwrap();
    }
    // Queued behind jobs 1..=3 (it takes the mailbox's last place).
    let stop = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.stop_after_queued().await })
    };
    gate.add_permits(100);
    assert!(within("queued", stop).await.unwrap());
    assert_eq!(within("stop", worker.wait_for_stop()).await, ExitReason::Normal);
    assert_eq!(handled_rx.drain(), [1, 2, 3], "the jobs queued before the request ran");
    assert!(worker.try_tell(Job(9)).is_err(), "stopped");
    assert!(!worker.stop_after_queued().await, "already stopped");
}

#[tokio::test]
async fn activity_is_reported_once_per_batch_taken() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(100));
    let (handled, mut handled_rx) = common::events();
    let worker = system.spawn(Worker { gate, handled });
    assert!(!actor_core::remote::take_activity(&worker), "nothing handled yet");
    worker.tell(Job(1)).await.unwrap();
    assert_eq!(handled_rx.next().await, 1);
    assert!(actor_core::remote::take_activity(&worker), "a message was taken");
    assert!(!actor_core::remote::take_activity(&worker), "cleared by the call");
}
