//! Under one-for-all, a sibling whose crash report was already queued when a
//! group restart replaced it is not restarted (or counted) twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_core::{Actor, ActorError, ActorSystem, Context, Handler, Message, Restart, Supervisor};
use common::within;
use tokio::sync::{Semaphore, mpsc};

type Starts = Arc<Mutex<HashMap<&'static str, u32>>>;

struct Child {
    name: &'static str,
    starts: Starts,
    /// C blocks its second start on this gate, holding the supervisor inside
    /// a group restart.
    gate: Arc<Semaphore>,
    stopped: mpsc::UnboundedSender<&'static str>,
}

impl Actor for Child {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            let n = starts.entry(self.name).or_insert(0);
            *n += 1;
            *n
        };
        if self.name == "c" && n == 2 {
            self.gate.acquire().await.unwrap().forget();
        }
        Ok(())
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let _ = self.stopped.send(self.name);
    }
}

struct Crash;
impl Message for Crash {
    type Reply = ();
}
impl Handler<Crash> for Child {
    async fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("crash");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_report_after_a_group_restart_is_ignored() {
    let system = ActorSystem::new("t");
    let starts: Starts = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let (stopped, mut stops) = common::events();
    let mut sup = Supervisor::one_for_all().max_restarts(2, Duration::from_secs(60));
    for name in ["a", "b", "c"] {
        let (starts, gate, stopped) = (starts.clone(), gate.clone(), stopped.clone());
        sup = sup.child(name, Restart::Permanent, move || Child {
            name,
            starts: starts.clone(),
            gate: gate.clone(),
            stopped: stopped.clone(),
        });
    }
    let sup = system.spawn(sup);
    let a = sup.child::<Child>("a").await.unwrap();
    let b = sup.child::<Child>("b").await.unwrap();
    let c = sup.child::<Child>("c").await.unwrap();

    // Incident 1: c crashes; the group restarts and c's second start holds
    // the supervisor (a and b are already running again).
    c.tell(Crash).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(stops.next().await);
    }
    seen.sort_unstable();
    assert_eq!(seen, ["a", "b", "c"]);
    // While it waits, a and b both crash: two reports queue up.
    a.tell(Crash).await.unwrap();
    b.tell(Crash).await.unwrap();
    let mut seen = vec![stops.next().await, stops.next().await];
    seen.sort_unstable();
    assert_eq!(seen, ["a", "b"]);
    // Incident 2 (a's report) restarts the group again, b included; b's
    // report then refers to an instance already replaced.
    gate.add_permits(10);
    let all_three = || {
        let starts = starts.lock().unwrap();
        ["a", "b", "c"].iter().all(|n| starts.get(n) == Some(&3))
    };
    within("the second group restart", async {
        while !all_three() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // A round trip through the supervisor: b's queued report, behind it, has
    // been handled by the time this answers.
    within("supervisor answers", sup.child::<Child>("a")).await.unwrap();
    within("b answers", b.ask(Ping)).await.unwrap();
    assert!(sup.is_alive(), "two incidents fit max_restarts(2); a stale report must not count as a third");
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts["a"], 3, "{starts:?}");
    assert_eq!(starts["b"], 3, "stale report restarted b again: {starts:?}");
    assert_eq!(starts["c"], 3, "{starts:?}");
    system.shutdown().await;
}

struct Ping;
impl Message for Ping {
    type Reply = ();
}
impl Handler<Ping> for Child {
    async fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) {}
}
