//! Death watch: one `Terminated` per watch, also for an actor that is already
//! dead; `unwatch` cancels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actor_core::{Actor, ActorRef, ActorSystem, Context, ExitReason, Handler, Message, Terminated};
use tokio::sync::mpsc;

struct Target;
impl Actor for Target {}

struct Watcher {
    seen: mpsc::UnboundedSender<Terminated>,
}
impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        self.seen.send(t).unwrap();
    }
}

struct Watch(ActorRef<Target>);
impl Message for Watch {
    type Reply = ();
}
impl Handler<Watch> for Watcher {
    async fn handle(&mut self, Watch(target): Watch, ctx: &mut Context<Self>) {
        ctx.watch(&target);
    }
}

struct Unwatch(ActorRef<Target>);
impl Message for Unwatch {
    type Reply = ();
}
impl Handler<Unwatch> for Watcher {
    async fn handle(&mut self, Unwatch(target): Unwatch, ctx: &mut Context<Self>) {
        ctx.unwatch(&target);
    }
}

#[tokio::test]
async fn one_notice_per_watch() {
    let system = ActorSystem::new("t");
    let (seen, mut events) = common::events();
    let watcher = system.spawn(Watcher { seen });
    let target = system.spawn(Target);
    watcher.ask(Watch(target.clone())).await.unwrap();
    watcher.ask(Watch(target.clone())).await.unwrap();
    target.stop();
    let expected = Terminated { id: target.id(), reason: ExitReason::Normal };
    assert_eq!(events.next().await, expected);
    assert_eq!(events.next().await, expected);
    // A round trip through the watcher proves no third notice is queued.
    watcher.ask(Watch(system.spawn(Target))).await.unwrap();
    events.assert_empty();
    system.shutdown().await;
}

#[tokio::test]
async fn watching_a_dead_actor_fires_at_once() {
    let system = ActorSystem::new("t");
    let (seen, mut events) = common::events();
    let watcher = system.spawn(Watcher { seen });
    let target = system.spawn(Target);
    target.stop();
    target.wait_for_stop().await;
    watcher.ask(Watch(target.clone())).await.unwrap();
    assert_eq!(events.next().await, Terminated { id: target.id(), reason: ExitReason::Normal });
    system.shutdown().await;
}

#[tokio::test]
async fn unwatch_cancels() {
    let system = ActorSystem::new("t");
    let (seen, mut events) = common::events();
    let watcher = system.spawn(Watcher { seen });
    let a = system.spawn(Target);
    let b = system.spawn(Target);
    watcher.ask(Watch(a.clone())).await.unwrap();
    watcher.ask(Watch(b.clone())).await.unwrap();
    watcher.ask(Unwatch(a.clone())).await.unwrap();
    a.stop();
    a.wait_for_stop().await;
    b.stop();
    // Notices arrive in death order, so b's notice coming first means a's never came.
    assert_eq!(events.next().await.id, b.id());
    events.assert_empty();
    system.shutdown().await;
}
