//! Watches belong to the actor, not to one instance: a `Terminated` that
//! arrives while a supervised actor waits to be restarted reaches the new
//! instance (virtual clock, backoff holds the restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{Actor, ActorRef, ActorSystem, Backoff, Context, Handler, Message, Restart, Supervisor, Terminated};
use tokio::sync::mpsc;

struct Target;
impl Actor for Target {}

struct Watcher {
    generation: u32,
    seen: mpsc::UnboundedSender<(u32, Terminated)>,
}
impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        let _ = self.seen.send((self.generation, t));
    }
}

struct Watch(ActorRef<Target>);
impl Message for Watch {
    type Reply = ();
}
impl Handler<Watch> for Watcher {
    async fn handle(&mut self, Watch(t): Watch, ctx: &mut Context<Self>) {
        ctx.watch(&t);
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Watcher {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

#[tokio::test(start_paused = true)]
async fn notice_arriving_between_instances_reaches_the_next_one() {
    let system = ActorSystem::new("t");
    let (seen, mut events) = common::events();
    let generation = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sup =
        system.spawn(
            Supervisor::one_for_one()
                .backoff(Backoff::exponential(Duration::from_secs(2), Duration::from_secs(2)))
                .child("w", Restart::Permanent, move || Watcher {
                    generation: generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
                    seen: seen.clone(),
                }),
        );
    let watcher = sup.child::<Watcher>("w").await.unwrap();
    let target = system.spawn(Target);
    watcher.ask(Watch(target.clone())).await.unwrap();
    watcher.tell(Crash).await.unwrap();
    // The restart waits 2 s of backoff; the target dies meanwhile.
    target.stop();
    target.wait_for_stop().await;
    let (generation, notice) = events.next().await;
    assert_eq!(notice.id, target.id());
    assert_eq!(generation, 2, "delivered to the restarted instance");
    system.shutdown().await;
}
