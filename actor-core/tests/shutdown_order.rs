//! `ActorSystem::shutdown` stops children before parents, runs `stopping` and
//! `stopped`, and returns only when every actor has stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use actor_core::{Actor, ActorError, ActorSystem, Context};

type Log = Arc<Mutex<Vec<String>>>;

struct Node {
    name: &'static str,
    kids: Vec<&'static str>,
    log: Log,
}

impl Actor for Node {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for kid in self.kids.drain(..) {
            let grandkids = if kid == "child-1" { vec!["grandchild"] } else { vec![] };
            ctx.spawn(Node { name: kid, kids: grandkids, log: self.log.clone() });
        }
        Ok(())
    }

    async fn stopping(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("stopping {}", self.name));
    }

    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("stopped {}", self.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_stop_before_parents() {
    let system = ActorSystem::new("t");
    let log: Log = Arc::default();
    let root = system.spawn(Node { name: "root", kids: vec!["child-1", "child-2"], log: log.clone() });
    system.shutdown().await;
    assert!(!root.is_alive());
    assert_eq!(system.top_level_count(), 0);

    let log = log.lock().unwrap().clone();
    let at =
        |entry: &str| log.iter().position(|e| e == entry).unwrap_or_else(|| panic!("{entry} missing from {log:?}"));
    // Parent's stopping runs first, then children youngest first, then parent's stopped.
    assert!(at("stopping root") < at("stopping child-2"));
    assert!(at("stopped child-2") < at("stopping child-1"), "youngest child first: {log:?}");
    assert!(at("stopped grandchild") < at("stopped child-1"));
    assert!(at("stopped child-1") < at("stopped root"));
    assert_eq!(log.len(), 8, "every hook ran once: {log:?}");
}
