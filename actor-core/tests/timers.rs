//! `send_after` and `send_interval` deliver on time (virtual clock) and are
//! cancelled when the actor stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use actor_core::{Actor, ActorSystem, Context, Handler, Message, Timer};
use tokio::sync::mpsc;

struct Clock {
    ticks: mpsc::UnboundedSender<&'static str>,
    timer: Option<Timer>,
}
impl Actor for Clock {}

#[derive(Clone)]
struct Tick(&'static str);
impl Message for Tick {
    type Reply = ();
}
impl Handler<Tick> for Clock {
    async fn handle(&mut self, Tick(what): Tick, _ctx: &mut Context<Self>) {
        let _ = self.ticks.send(what);
    }
}

struct Arm {
    interval: bool,
    every: Duration,
}
impl Message for Arm {
    type Reply = ();
}
impl Handler<Arm> for Clock {
    async fn handle(&mut self, arm: Arm, ctx: &mut Context<Self>) {
        self.timer = Some(if arm.interval {
            ctx.send_interval(arm.every, Tick("interval"))
        } else {
            ctx.send_after(arm.every, Tick("once"))
        });
    }
}

struct Cancel;
impl Message for Cancel {
    type Reply = ();
}
impl Handler<Cancel> for Clock {
    async fn handle(&mut self, _: Cancel, _ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn send_after_fires_once_after_the_delay() {
    let system = ActorSystem::new("t");
    let (ticks, mut events) = common::events();
    let clock = system.spawn(Clock { ticks, timer: None });
    let armed_at = tokio::time::Instant::now();
    clock.ask(Arm { interval: false, every: Duration::from_secs(3) }).await.unwrap();
    assert_eq!(events.next().await, "once");
    assert!(armed_at.elapsed() >= Duration::from_secs(3));
    system.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn send_interval_repeats_until_cancelled() {
    let system = ActorSystem::new("t");
    let (ticks, mut events) = common::events();
    let clock = system.spawn(Clock { ticks, timer: None });
    clock.ask(Arm { interval: true, every: Duration::from_millis(100) }).await.unwrap();
    for _ in 0..3 {
        assert_eq!(events.next().await, "interval");
    }
    clock.ask(Cancel).await.unwrap();
    events.drain();
    tokio::time::sleep(Duration::from_secs(1)).await; // virtual time: ten periods
    clock.ask(Cancel).await.unwrap(); // flush the mailbox
    events.assert_empty();
    system.shutdown().await;
}

/// One instance of a supervised ticker; `generation` tells instances apart.
struct Ticker {
    generation: u32,
    ticks: mpsc::UnboundedSender<u32>,
}
impl Actor for Ticker {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), actor_core::ActorError> {
        ctx.send_interval(Duration::from_millis(100), Beat);
        Ok(())
    }
}

#[derive(Clone)]
struct Beat;
impl Message for Beat {
    type Reply = ();
}
impl Handler<Beat> for Ticker {
    async fn handle(&mut self, _: Beat, _ctx: &mut Context<Self>) {
        let _ = self.ticks.send(self.generation);
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Ticker {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

#[tokio::test(start_paused = true)]
async fn timers_of_a_failed_instance_are_cancelled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use actor_core::{Restart, Supervisor};

    let system = ActorSystem::new("t");
    let (ticks, mut events) = common::events();
    let generations = Arc::new(AtomicU32::new(0));
    let sup = system.spawn(Supervisor::one_for_one().child("ticker", Restart::Permanent, move || Ticker {
        generation: generations.fetch_add(1, Ordering::SeqCst) + 1,
        ticks: ticks.clone(),
    }));
    let ticker = sup.child::<Ticker>("ticker").await.unwrap();
    assert_eq!(events.next().await, 1);
    ticker.tell(Crash).await.unwrap();
    // Skip ticks of generation 1 still queued, then every later tick must be
    // from generation 2: the first instance's interval died with it.
    while events.next().await == 1 {}
    for _ in 0..10 {
        assert_eq!(events.next().await, 2, "a timer of the failed instance survived");
    }
    system.shutdown().await;
}
