//! Erlang-style links: an abnormal exit propagates unless trapped; a normal
//! exit does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorRef, ActorSystem, Context, ExitReason, Handler, LinkDecision, Message, Terminated};
use common::within;
use tokio::sync::mpsc;

struct Peer {
    trap: Option<mpsc::UnboundedSender<Terminated>>,
}
impl Actor for Peer {
    async fn on_link_exit(&mut self, _ctx: &mut Context<Self>, exit: Terminated) -> LinkDecision {
        match &self.trap {
            Some(tx) => {
                tx.send(exit).unwrap();
                LinkDecision::Ignore
            }
            None if exit.reason != ExitReason::Normal => LinkDecision::Stop,
            None => LinkDecision::Ignore,
        }
    }
}

struct Link(ActorRef<Peer>);
impl Message for Link {
    type Reply = ();
}
impl Handler<Link> for Peer {
    async fn handle(&mut self, Link(other): Link, ctx: &mut Context<Self>) {
        ctx.link(&other);
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Peer {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

struct Quit;
impl Message for Quit {
    type Reply = ();
}
impl Handler<Quit> for Peer {
    async fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

struct Ping;
impl Message for Ping {
    type Reply = ();
}
impl Handler<Ping> for Peer {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) {}
}

#[tokio::test]
async fn abnormal_exit_propagates_both_ways() {
    let system = ActorSystem::new("t");
    let a = system.spawn(Peer { trap: None });
    let b = system.spawn(Peer { trap: None });
    a.ask(Link(b.clone())).await.unwrap();
    // Crash b; a is linked from a's side, so the link works both ways.
    b.tell(Crash).await.unwrap();
    let reason = within("a to stop", a.wait_for_stop()).await;
    match reason {
        ExitReason::Linked { from, reason } => {
            assert_eq!(from, b.id());
            assert!(matches!(*reason, ExitReason::Panicked(_)));
        }
        other => panic!("expected Linked, got {other:?}"),
    }
}

#[tokio::test]
async fn trapped_exit_is_delivered_and_the_actor_lives() {
    let system = ActorSystem::new("t");
    let (trap, mut exits) = common::events();
    let a = system.spawn(Peer { trap: Some(trap) });
    let b = system.spawn(Peer { trap: None });
    a.ask(Link(b.clone())).await.unwrap();
    b.tell(Crash).await.unwrap();
    let exit = exits.next().await;
    assert_eq!(exit.id, b.id());
    assert!(matches!(exit.reason, ExitReason::Panicked(_)));
    within("a still answers", a.ask(Ping)).await.unwrap();
    assert!(a.is_alive());
    system.shutdown().await;
}

#[tokio::test]
async fn normal_exit_does_not_propagate() {
    let system = ActorSystem::new("t");
    let a = system.spawn(Peer { trap: None });
    let b = system.spawn(Peer { trap: None });
    a.ask(Link(b.clone())).await.unwrap();
    b.tell(Quit).await.unwrap();
    assert_eq!(within("b to stop", b.wait_for_stop()).await, ExitReason::Normal);
    within("a still answers", a.ask(Ping)).await.unwrap();
    assert!(a.is_alive());
    system.shutdown().await;
}

#[tokio::test]
async fn linking_to_a_dead_actor_delivers_its_exit() {
    let system = ActorSystem::new("t");
    let (trap, mut exits) = common::events();
    let a = system.spawn(Peer { trap: Some(trap) });
    let b = system.spawn(Peer { trap: None });
    b.tell(Crash).await.unwrap();
    b.wait_for_stop().await;
    a.ask(Link(b.clone())).await.unwrap();
    assert_eq!(exits.next().await.id, b.id());
    system.shutdown().await;
}
