//! The built-in workload: every run of every node sends tells and asks to
//! the others and watches them, recording each step in the trace for
//! [`check`](crate::check).
//!
//! Each run of a node spawns a `Sink`, registered cluster-wide as
//! `sink-<node>`, that records what it handles; and a driver that, every
//! 20–200 ms (virtual), picks another node, finds its sink (asking it for
//! its run), watches it, and tells it (70 %) or asks it (30 %) a message
//! numbered per (sender run, receiver run). Each run also starts the
//! cluster [`services`](crate::services).

use std::collections::BTreeMap;
use std::time::Duration;

use footlight::prelude::*;
use footlight::{Cluster, SendError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::trace::{Event, Outcome};
use crate::world::{Phase, World};

/// How long one ask may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the workload on every node of `world` until the run is over;
/// returns how many messages were sent.
pub async fn run(world: World) -> u64 {
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    world.each_node(move |world, node| {
        let sent = sent_tx.clone();
        let sink = Sink { world: world.clone(), node: node.id().to_owned(), run: node.run() };
        let sink = match node.spawn_named("sink", sink) {
            Ok(sink) => sink,
            Err(e) => return world.note(format!("{} could not spawn its sink: {e}", node.id())),
        };
        if let Err(e) = node.register(&format!("sink-{}", node.id()), &sink) {
            world.note(format!("{} could not register its sink: {e}", node.id()));
        }
        crate::services::start(&world, &node, sent.clone());
        tokio::spawn(async move {
            let n = drive(world, node).await;
            let _ = sent.send(n);
        });
    });
    world.reached(Phase::Done).await;
    let mut sent = 0;
    // Every driver ends once the run is done (or its node's run ended).
    while let Ok(Some(n)) = tokio::time::timeout(ASK_TIMEOUT * 2, sent_rx.recv()).await {
        sent += n;
    }
    sent
}

/// Records what it handles.
#[derive(Actor)]
struct Sink {
    world: World,
    node: String,
    run: u64,
}

/// A tell.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "sim.Note")]
struct Note {
    from: String,
    from_run: u64,
    to_run: u64,
    seq: u64,
}

/// An ask; the reply is the sequence number handled.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "sim.Query")]
struct Query {
    from: String,
    from_run: u64,
    to_run: u64,
    seq: u64,
}

/// Which run are you?
#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "sim.Hello")]
struct Hello;

impl Sink {
    fn handled(&self, from: String, from_run: u64, to_run: u64, seq: u64, ask: bool) {
        self.world.record(Event::Handled { node: self.node.clone(), run: self.run, from, from_run, to_run, seq, ask });
    }
}

impl Handler<Note> for Sink {
    async fn handle(&mut self, m: Note, _ctx: &mut Context<Self>) {
        self.handled(m.from, m.from_run, m.to_run, m.seq, false);
    }
}

impl Handler<Query> for Sink {
    async fn handle(&mut self, m: Query, _ctx: &mut Context<Self>) -> u64 {
        self.handled(m.from, m.from_run, m.to_run, m.seq, true);
        m.seq
    }
}

impl Handler<Hello> for Sink {
    async fn handle(&mut self, _: Hello, _ctx: &mut Context<Self>) -> u64 {
        self.run
    }
}

impl RemoteActor for Sink {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Note>().add::<Query>().add::<Hello>();
    }
}

struct Target {
    sink: ActorRef<Sink>,
    run: u64,
}

/// One run's driver; returns how many messages it sent.
async fn drive(world: World, node: Cluster) -> u64 {
    let me = node.id().to_owned();
    let my_run = node.run();
    let mut rng = StdRng::seed_from_u64(footlight::entropy::next_u64());
    let others: Vec<String> = world.ids().iter().filter(|id| **id != me).cloned().collect();
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut seqs: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut sent = 0;
    while !others.is_empty() && world.phase() < Phase::Done && world.is_live(&me, my_run) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        if world.phase() >= Phase::Done || !world.is_live(&me, my_run) {
            break;
        }
        let to = others[rng.random_range(0..others.len())].clone();
        if !targets.contains_key(&to) {
            let Some(target) = find(&world, &node, &to).await else { continue };
            targets.insert(to.clone(), target);
        }
        let Some(target) = targets.get(&to) else { continue };
        let to_run = target.run;
        let seq = seqs.entry((to.clone(), to_run)).or_insert(0);
        *seq += 1;
        let seq = *seq;
        sent += 1;
        let from = me.clone();
        let lost = if rng.random_bool(0.7) {
            match target.sink.tell(Note { from, from_run: my_run, to_run, seq }).await {
                Ok(()) => false,
                Err(SendError::NodeDown(_) | SendError::Closed(_)) => true,
                Err(e) => {
                    world.note(format!("{me} tell to {to}: {e}"));
                    true
                }
            }
        } else {
            world.record(Event::Asked { from: me.clone(), from_run: my_run, to: to.clone(), to_run, seq });
            let answer = target.sink.ask(Query { from, from_run: my_run, to_run, seq }).timeout(ASK_TIMEOUT).await;
            let outcome = match answer {
                Ok(n) => Outcome::Replied(n),
                Err(AskError::Closed(_) | AskError::NotSent(..)) => Outcome::CameBack,
                Err(AskError::NodeDown) => Outcome::NodeDown,
                Err(AskError::Timeout) => Outcome::Timeout,
                Err(e) => Outcome::Failed(e.to_string()),
            };
            let lost = !matches!(outcome, Outcome::Replied(_) | Outcome::Timeout);
            world.record(Event::Answered { from: me.clone(), from_run: my_run, to: to.clone(), to_run, seq, outcome });
            lost
        };
        if lost {
            targets.remove(&to);
        }
    }
    sent
}

/// Finds `to`'s sink, learns its run, and watches it.
async fn find(world: &World, node: &Cluster, to: &str) -> Option<Target> {
    let sink = tokio::time::timeout(ASK_TIMEOUT, node.lookup::<Sink>(&format!("sink-{to}"))).await.ok()?.ok()?;
    let run = sink.ask(Hello).timeout(ASK_TIMEOUT).await.ok()?;
    let monitor = node.system().monitor(&sink);
    let (me, my_run) = (node.id().to_owned(), node.run());
    world.record(Event::Watching { from: me.clone(), from_run: my_run, to: to.to_owned(), to_run: run });
    let world2 = world.clone();
    let to2 = to.to_owned();
    tokio::spawn(async move {
        let down = monitor.await;
        let reason = format!("{:?}", down.reason);
        world2.record(Event::WatchFired { from: me, from_run: my_run, to: to2, to_run: run, reason });
    });
    Some(Target { sink, run })
}
