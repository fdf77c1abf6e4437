//! A full bounded mailbox makes `tell` wait and `try_tell` fail with `Full`,
//! giving the message back; nothing already accepted is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use actor_core::{Actor, ActorSystem, Context, Handler, Mailbox, Message, SpawnOptions, TrySendError};
use common::within;
use tokio::sync::Semaphore;

struct Slow {
    gate: Arc<Semaphore>,
    began: tokio::sync::mpsc::UnboundedSender<u32>,
    handled: Vec<u32>,
}
impl Actor for Slow {}

#[derive(Debug, PartialEq)]
struct Job(u32);
impl Message for Job {
    type Reply = ();
}
impl Handler<Job> for Slow {
    async fn handle(&mut self, Job(n): Job, _ctx: &mut Context<Self>) {
        self.began.send(n).unwrap();
        // Each job needs one permit: the test decides when jobs may finish.
        self.gate.acquire().await.unwrap().forget();
        self.handled.push(n);
    }
}

struct Handled;
impl Message for Handled {
    type Reply = Vec<u32>;
}
impl Handler<Handled> for Slow {
    async fn handle(&mut self, _: Handled, _ctx: &mut Context<Self>) -> Vec<u32> {
        self.handled.clone()
    }
}

/// Polls a future once: is it ready right now?
async fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

#[tokio::test]
async fn full_mailbox_pushes_back() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let (began, mut began_rx) = common::events();
    let slow = system
        .spawn_with(
            Slow { gate: gate.clone(), began, handled: Vec::new() },
            SpawnOptions::new().mailbox(Mailbox::bounded(2)),
        )
        .unwrap();

    // Job 0 is taken by the actor (blocked on the gate); 1 and 2 fill the mailbox.
    slow.tell(Job(0)).await.unwrap();
    assert_eq!(began_rx.next().await, 0);
    slow.try_tell(Job(1)).unwrap();
    slow.try_tell(Job(2)).unwrap();
    match slow.try_tell(Job(3)) {
        Err(TrySendError::Full(job)) => assert_eq!(job, Job(3), "the refused message comes back"),
        other => panic!("expected Full, got {other:?}"),
    }

    // A waiting tell stays pending until room frees up.
    let mut waiting = pin!(slow.tell(Job(3)));
    assert!(poll_once(waiting.as_mut()).await.is_pending(), "tell must wait on a full mailbox");
    gate.add_permits(1);
    within("tell to get room", waiting).await.unwrap();

    gate.add_permits(3);
    let handled = within("handled", slow.ask(Handled)).await.unwrap();
    assert_eq!(handled, vec![0, 1, 2, 3]);
    system.shutdown().await;
}

#[test]
fn default_capacity_is_documented_value() {
    assert_eq!(Mailbox::default(), Mailbox::Bounded(Mailbox::DEFAULT_CAPACITY));
    assert_eq!(Mailbox::DEFAULT_CAPACITY, 1024);
    assert_eq!(Mailbox::bounded(0).capacity(), 1);
}
