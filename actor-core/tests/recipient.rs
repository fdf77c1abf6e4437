//! `Recipient<M>` reaches actors of different types that handle `M`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use actor_core::{Actor, ActorSystem, Context, Handler, Message, Recipient};

struct Greet(&'static str);
impl Message for Greet {
    type Reply = String;
}

struct English;
impl Actor for English {}
impl Handler<Greet> for English {
    async fn handle(&mut self, Greet(who): Greet, _ctx: &mut Context<Self>) -> String {
        format!("hello {who}")
    }
}

struct French;
impl Actor for French {}
impl Handler<Greet> for French {
    async fn handle(&mut self, Greet(who): Greet, _ctx: &mut Context<Self>) -> String {
        format!("bonjour {who}")
    }
}

#[tokio::test]
async fn recipients_erase_the_actor_type() {
    let system = ActorSystem::new("t");
    let en = system.spawn(English);
    let fr = system.spawn(French);
    let all: Vec<Recipient<Greet>> = vec![en.recipient(), fr.recipient()];
    let mut replies = Vec::new();
    for r in &all {
        r.tell(Greet("ignored")).await.unwrap();
        replies.push(r.ask(Greet("ada"), Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(replies, ["hello ada", "bonjour ada"]);
    assert_eq!(all[0].id(), en.id());
    en.stop();
    en.wait_for_stop().await;
    assert!(all[0].try_tell(Greet("late")).is_err());
    system.shutdown().await;
}

#[tokio::test]
async fn weak_refs_do_not_keep_the_mailbox_alive() {
    let system = ActorSystem::new("t");
    let en = system.spawn(English);
    let weak = en.downgrade();
    assert_eq!(weak.upgrade().unwrap().ask(Greet("x")).await.unwrap(), "hello x");
    en.stop();
    en.wait_for_stop().await;
    drop(en);
    // The actor's own handle went with its task; no strong ref is left.
    let mut upgraded = weak.upgrade();
    while upgraded.is_some() {
        tokio::task::yield_now().await;
        upgraded = weak.upgrade();
    }
}
