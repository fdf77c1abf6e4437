//! Inputs that could panic the runtime do not: huge durations, a message
//! whose `Drop` panics while queued at the actor's death.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use actor_core::{Actor, ActorSystem, Context, Handler, Message};
use common::within;
use tokio::sync::Semaphore;

struct Sleepy {
    gate: Arc<Semaphore>,
}
impl Actor for Sleepy {}

struct Hold;
impl Message for Hold {
    type Reply = ();
}
impl Handler<Hold> for Sleepy {
    async fn handle(&mut self, _: Hold, _ctx: &mut Context<Self>) {
        self.gate.acquire().await.unwrap().forget();
    }
}

#[derive(Clone)]
struct Echo(u32);
impl Message for Echo {
    type Reply = u32;
}
impl Handler<Echo> for Sleepy {
    async fn handle(&mut self, Echo(n): Echo, _ctx: &mut Context<Self>) -> u32 {
        n
    }
}

struct Every(Duration);
impl Message for Every {
    type Reply = ();
}
impl Handler<Every> for Sleepy {
    async fn handle(&mut self, Every(d): Every, ctx: &mut Context<Self>) {
        ctx.send_interval(d, Echo(0));
        ctx.send_after(d, Echo(0));
    }
}

/// Panics when dropped unhandled.
struct Grenade;
impl Message for Grenade {
    type Reply = ();
}
impl Drop for Grenade {
    fn drop(&mut self) {
        panic!("grenade dropped");
    }
}
impl Handler<Grenade> for Sleepy {
    async fn handle(&mut self, g: Grenade, _ctx: &mut Context<Self>) {
        std::mem::forget(g);
    }
}

#[tokio::test]
async fn huge_durations_saturate_instead_of_panicking() {
    let system = ActorSystem::new("t");
    let a = system.spawn(Sleepy { gate: Arc::new(Semaphore::new(0)) });
    assert_eq!(a.ask(Echo(7)).timeout(Duration::MAX).await.unwrap(), 7);
    a.ask(Every(Duration::MAX)).await.unwrap();
    assert_eq!(a.ask(Echo(8)).await.unwrap(), 8, "the actor lives on");
    system.shutdown().await;
}

#[tokio::test]
async fn panicking_drop_of_a_queued_message_does_not_stop_the_bookkeeping() {
    let system = ActorSystem::new("t");
    let gate = Arc::new(Semaphore::new(0));
    let a = system.spawn(Sleepy { gate: gate.clone() });
    a.tell(Hold).await.unwrap();
    a.tell(Grenade).await.unwrap();
    a.stop();
    gate.add_permits(1);
    within("the actor to finish stopping", a.wait_for_stop()).await;
    within("shutdown", system.shutdown()).await;
}
