//! A handler that sends to a full mailbox (its own, or one whose owner waits
//! on it) makes progress: a handler that waits hands back the mailbox slots
//! its actor holds, and waiting senders are woken as slots free up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use actor_core::{Actor, ActorRef, ActorSystem, Context, Handler, Mailbox, Message, SpawnOptions};
use common::within;
use tokio::sync::Semaphore;

struct Echo {
    gate: Arc<Semaphore>,
    seen: u32,
}
impl Actor for Echo {}

/// Parks the actor until the test opens the gate.
struct Hold;
impl Message for Hold {
    type Reply = ();
}
impl Handler<Hold> for Echo {
    async fn handle(&mut self, _: Hold, _ctx: &mut Context<Self>) {
        self.gate.acquire().await.unwrap().forget();
    }
}

/// Sends its own actor a `Note`.
struct Bounce;
impl Message for Bounce {
    type Reply = ();
}
impl Handler<Bounce> for Echo {
    async fn handle(&mut self, _: Bounce, ctx: &mut Context<Self>) {
        ctx.myself().tell(Note).await.unwrap();
    }
}

struct Note;
impl Message for Note {
    type Reply = ();
}
impl Handler<Note> for Echo {
    async fn handle(&mut self, _: Note, _ctx: &mut Context<Self>) {
        self.seen += 1;
    }
}

struct Seen;
impl Message for Seen {
    type Reply = u32;
}
impl Handler<Seen> for Echo {
    async fn handle(&mut self, _: Seen, _ctx: &mut Context<Self>) -> u32 {
        self.seen
    }
}

#[tokio::test]
async fn self_send_into_a_full_mailbox_completes() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let echo = system
        .spawn_with(Echo { gate: gate.clone(), seen: 0 }, SpawnOptions::new().mailbox(Mailbox::bounded(64)))
        .unwrap();
    // While the actor is parked, queue a Bounce and fill the mailbox with
    // Notes; once released, the actor takes them all into its batch and the
    // Bounce's self-send finds the mailbox full.
    echo.tell(Hold).await.unwrap();
    echo.tell(Bounce).await.unwrap();
    let mut queued = 0;
    while echo.try_tell(Note).is_ok() {
        queued += 1;
    }
    assert!(queued >= 60, "mailbox accepted {queued}");
    gate.add_permits(1);
    // The test's ask may overtake the self-sent note; ask until it is counted.
    within("every note handled", async {
        while echo.ask(Seen).await.unwrap() != queued + 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    system.shutdown().await;
}

struct Front {
    gate: Arc<Semaphore>,
    back: Option<ActorRef<Back>>,
}
impl Actor for Front {}

struct Work;
impl Message for Work {
    type Reply = ();
}
impl Handler<Work> for Front {
    async fn handle(&mut self, _: Work, _ctx: &mut Context<Self>) {
        // Asks the actor that is blocked sending to us.
        if let Some(back) = &self.back {
            back.ask(Status).await.unwrap();
        }
    }
}

impl Handler<Hold> for Front {
    async fn handle(&mut self, _: Hold, _ctx: &mut Context<Self>) {
        self.gate.acquire().await.unwrap().forget();
    }
}

struct SetBack(ActorRef<Back>);
impl Message for SetBack {
    type Reply = ();
}
impl Handler<SetBack> for Front {
    async fn handle(&mut self, SetBack(b): SetBack, _ctx: &mut Context<Self>) {
        self.back = Some(b);
    }
}

struct Back {
    front: ActorRef<Front>,
}
impl Actor for Back {}

struct SendOne;
impl Message for SendOne {
    type Reply = ();
}
impl Handler<SendOne> for Back {
    async fn handle(&mut self, _: SendOne, _ctx: &mut Context<Self>) {
        self.front.tell(Work).await.unwrap();
    }
}

struct Status;
impl Message for Status {
    type Reply = ();
}
impl Handler<Status> for Back {
    async fn handle(&mut self, _: Status, _ctx: &mut Context<Self>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_parked_on_a_full_mailbox_is_woken_when_its_owner_waits_on_it() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let front = system
        .spawn_with(Front { gate: gate.clone(), back: None }, SpawnOptions::new().mailbox(Mailbox::bounded(64)))
        .unwrap();
    let back = system.spawn(Back { front: front.clone() });
    front.ask(SetBack(back.clone())).await.unwrap();
    // Front parks on Hold; Works fill its mailbox.
    front.tell(Hold).await.unwrap();
    let mut queued = 0;
    while front.try_tell(Work).is_ok() {
        queued += 1;
    }
    assert!(queued >= 60, "mailbox accepted {queued}");
    // Back now parks sending one more Work to the full mailbox...
    back.tell(SendOne).await.unwrap();
    // ...and every Work Front handles asks Back, which can only answer once
    // its own send went through: Front's first ask must free a slot for it.
    // (The test sends nothing more to Front until Back is through: another
    // sender could take the freed slot first, and a cycle of waits on full
    // mailboxes is a deadlock with any bounded queue.)
    gate.add_permits(1);
    within("back's send to go through", back.ask(Status)).await.unwrap();
    within("front to drain", front.ask(SetBack(back.clone()))).await.unwrap();
    system.shutdown().await;
}
