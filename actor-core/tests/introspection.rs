//! What an operator reads off a running system: the top-level and named
//! actors with their mailbox depth and messages handled, and the
//! supervision tree down to the leaves, with an actor busy in a long
//! handler listed without its children instead of holding the snapshot up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use actor_core::{Actor, ActorError, ActorRef, ActorSystem, Context, Handler, Mailbox, Message, SpawnOptions};
use tokio::sync::Semaphore;

/// Spawns `fanout` children, each spawning `fanout - 1`, down to none.
struct Node {
    fanout: usize,
}

impl Actor for Node {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        for _ in 0..self.fanout {
            ctx.spawn(Node { fanout: self.fanout - 1 });
        }
        Ok(())
    }
}

/// Waits for a permit in its handler.
struct Stuck;

impl Actor for Stuck {
    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        ctx.spawn(Node { fanout: 0 });
        Ok(())
    }
}

struct Wait(Arc<Semaphore>, Option<tokio::sync::oneshot::Sender<()>>);

impl Message for Wait {
    type Reply = ();
}

impl Handler<Wait> for Stuck {
    async fn handle(&mut self, Wait(gate, started): Wait, _ctx: &mut Context<Self>) {
        if let Some(started) = started {
            let _ = started.send(());
        }
        gate.acquire().await.unwrap().forget();
    }
}

fn count(nodes: &[actor_core::ActorNode]) -> usize {
    nodes.iter().map(|n| 1 + n.children.as_deref().map_or(0, count)).sum()
}

#[tokio::test]
async fn the_tree_lists_every_generation_and_a_busy_actor_without_holding_up() {
    let system = ActorSystem::new("t");
    let root = system.spawn(Node { fanout: 3 });
    let stuck: ActorRef<Stuck> = system.spawn_with(Stuck, SpawnOptions::new().mailbox(Mailbox::bounded(8))).unwrap();
    system.register("stuck", &stuck).unwrap();
    // Every generation has started (children start before the tree reads them).
    common::within("spawned", async {
        while count(&system.tree(Duration::from_secs(1)).await) < 1 + 3 + 3 * 2 + 3 * 2 + 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let (held, holding) = tokio::sync::oneshot::channel();
    stuck.try_tell(Wait(gate.clone(), Some(held))).unwrap();
    holding.await.unwrap();
    stuck.try_tell(Wait(gate.clone(), None)).unwrap();
    // The message in hand counts until its slot is released, once the
    // handler waits.
    common::within("one queued", async {
        while system.actors().iter().find(|a| a.id == stuck.id()).and_then(|a| a.mailbox_depth) != Some(1) {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let tree = system.tree(Duration::from_millis(100)).await;
    assert_eq!(tree.len(), 2);
    let (r, s) = (&tree[0], &tree[1]);
    assert_eq!(r.info.id, root.id());
    // 3 children, 2 grandchildren each, 1 great-grandchild each, then leaves.
    let kids = r.children.as_ref().expect("the root answered");
    assert_eq!(kids.len(), 3);
    assert!(kids.iter().all(|k| k.children.as_ref().unwrap().len() == 2));
    assert_eq!(count(&tree[..1]), 1 + 3 + 6 + 6);
    assert!(kids.iter().all(|k| !k.info.top_level && k.info.type_name.ends_with("Node")));
    // Busy: listed, with its queue, but without children.
    assert_eq!(s.info.id, stuck.id());
    assert_eq!(s.info.names, ["stuck"]);
    assert_eq!((s.info.mailbox_depth, s.info.mailbox_capacity), (Some(1), Some(8)));
    assert_eq!(s.children, None);
    // Once free, it answers.
    gate.add_permits(2);
    common::within("answers", async {
        while system.tree(Duration::from_millis(100)).await[1].children.as_ref().map(Vec::len) != Some(1) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The flat list: top-level and named actors only.
    let listed = system.actors();
    assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), [root.id(), stuck.id()]);
    assert_eq!(listed[1].handled, 2);
    system.shutdown().await;
}
