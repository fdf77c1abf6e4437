//! Messages from one sender are handled in send order, also with several
//! concurrent senders on a multi-thread runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorSystem, Context, Handler, Message};
use common::within;

#[derive(Default)]
struct Recorder {
    seen: Vec<(usize, u64)>,
}
impl Actor for Recorder {}

struct Item {
    sender: usize,
    seq: u64,
}
impl Message for Item {
    type Reply = ();
}
impl Handler<Item> for Recorder {
    async fn handle(&mut self, item: Item, _ctx: &mut Context<Self>) {
        self.seen.push((item.sender, item.seq));
    }
}

struct Take;
impl Message for Take {
    type Reply = Vec<(usize, u64)>;
}
impl Handler<Take> for Recorder {
    async fn handle(&mut self, _: Take, _ctx: &mut Context<Self>) -> Vec<(usize, u64)> {
        std::mem::take(&mut self.seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_messages_arrive_in_order() {
    const SENDERS: usize = 4;
    const PER_SENDER: u64 = 5_000;
    let system = ActorSystem::new("t");
    let recorder = system.spawn(Recorder::default());
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let r = recorder.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                r.tell(Item { sender, seq }).await.unwrap();
            }
        }));
    }
    for t in tasks {
        within("senders", t).await.unwrap();
    }
    let seen = within("take", recorder.ask(Take)).await.unwrap();
    assert_eq!(seen.len(), SENDERS * PER_SENDER as usize);
    let mut next = [0u64; SENDERS];
    for (sender, seq) in seen {
        assert_eq!(seq, next[sender], "sender {sender} out of order");
        next[sender] += 1;
    }
    system.shutdown().await;
}
