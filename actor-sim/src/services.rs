//! The cluster services under the built-in workload: a cluster singleton,
//! sharded entities and reliable delivery on every run of every node,
//! recording what [`check`](crate::check) needs to hold them to their
//! promises (at most one singleton instance and one activation per entity
//! id at any instant; a reliable consumer gets each message once and in
//! order while it lives, and everything acknowledged was handled).

use std::time::Duration;

use footlight::Cluster;
use footlight::cluster::delivery::{Delivered, Producer};
use footlight::cluster::{Sharding, Singleton};
use footlight::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::trace::Event;
use crate::world::{Phase, World};

/// The singleton's name (and `of` in its trace events).
pub const SINGLETON: &str = "singleton";

/// How many entity ids the workload uses (`e0`, `e1`, …).
pub const ENTITIES: usize = 6;

/// The reliable consumers' window.
const WINDOW: u32 = 32;

/// A one-of-a-kind actor that records when it runs: the singleton's
/// instance, or a sharded entity.
struct Instance {
    world: World,
    of: String,
    node: String,
    run: u64,
    running: bool,
}

impl Instance {
    fn new(world: World, of: String, node: &Cluster) -> Self {
        Instance { world, of, node: node.id().to_owned(), run: node.run(), running: false }
    }
}

impl Actor for Instance {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.running = true;
        self.world.record(Event::InstanceStarted { of: self.of.clone(), node: self.node.clone(), run: self.run });
        Ok(())
    }
}

/// Gone: stopped, or killed with its node (no hook runs then; the state is
/// dropped).
impl Drop for Instance {
    fn drop(&mut self) {
        if self.running {
            self.world.record(Event::InstanceStopped {
                of: std::mem::take(&mut self.of),
                node: std::mem::take(&mut self.node),
                run: self.run,
            });
        }
    }
}

/// A tell to an instance.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "sim.Poke")]
struct Poke;

impl Handler<Poke> for Instance {
    async fn handle(&mut self, _: Poke, _ctx: &mut Context<Self>) {}
}

impl RemoteActor for Instance {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Poke>();
    }
}

/// A reliable consumer's handler: records what it gets.
#[derive(Actor)]
struct Consumer {
    world: World,
    node: String,
    run: u64,
}

impl Handler<Delivered<u64>> for Consumer {
    async fn handle(&mut self, d: Delivered<u64>, _ctx: &mut Context<Self>) {
        self.world.record(Event::Delivered {
            node: self.node.clone(),
            run: self.run,
            producer: d.producer.to_string(),
            seq: d.seq,
        });
    }
}

/// The name of `node`'s reliable consumer.
fn consumer_name(node: &str) -> String {
    format!("c-{node}")
}

/// Starts the services on one run of a node: the singleton, the entity
/// type, a reliable consumer named after the node, and a producer (id
/// `<node>-<run>`) sending to the next node's consumer; spawns the task
/// that pokes the singleton and the entities and feeds the producer until
/// the run is over, then records what was acknowledged. `done` hears when
/// that task ends.
pub(crate) fn start(world: &World, node: &Cluster, done: tokio::sync::mpsc::UnboundedSender<u64>) {
    let me = node.id().to_owned();
    let fail = |what: &str, e: &dyn std::fmt::Display| world.note(format!("{me} could not start its {what}: {e}"));
    let w = world.clone();
    let n = node.clone();
    let singleton = match node.singleton(SINGLETON, move || Instance::new(w.clone(), SINGLETON.to_owned(), &n)).start()
    {
        Ok(s) => s,
        Err(e) => return fail("singleton", &e),
    };
    let w = world.clone();
    let n = node.clone();
    let entities = match node
        .sharding("entity", move |id: &str| Instance::new(w.clone(), format!("entity {id}"), &n))
        .shards(12)
        .start()
    {
        Ok(s) => s,
        Err(e) => return fail("entity type", &e),
    };
    let consumer = Consumer { world: world.clone(), node: me.clone(), run: node.run() };
    let consumer = node.system().spawn(consumer);
    if let Err(e) = node.reliable_consumer::<u64>(&consumer_name(&me), consumer.recipient(), WINDOW) {
        return fail("consumer", &e);
    }
    let ids = world.ids();
    let next = ids.iter().position(|id| *id == me).map(|i| ids[(i + 1) % ids.len()].clone()).unwrap_or_default();
    let producer_id = format!("{me}-{}", node.run());
    let producer = match node.reliable_producer::<u64>(&producer_id, &consumer_name(&next)).window(WINDOW).start() {
        Ok(p) => p,
        Err(e) => return fail("producer", &e),
    };
    let (world, node) = (world.clone(), node.clone());
    tokio::spawn(async move {
        let sent = feed(&world, &node, &singleton, &entities, &producer).await;
        if world.is_live(node.id(), node.run()) {
            let upto = sent.saturating_sub(producer.unconfirmed() as u64);
            world.record(Event::Confirmed { producer: producer_id, consumer: next, upto, sent });
        }
        let _ = done.send(0);
    });
}

/// Until the run is over (or this node's run ends): every 50–500 ms
/// (virtual), pokes the singleton or an entity, or sends the next message
/// to the producer (without waiting while its window is full). Returns the
/// last sequence number the producer gave (0: none).
async fn feed(
    world: &World,
    node: &Cluster,
    singleton: &Singleton<Instance>,
    entities: &Sharding<Instance>,
    producer: &Producer<u64>,
) -> u64 {
    let (me, my_run) = (node.id().to_owned(), node.run());
    let mut rng = StdRng::seed_from_u64(footlight::entropy::next_u64());
    let mut sent = 0;
    while world.phase() < Phase::Done && world.is_live(&me, my_run) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        if world.phase() >= Phase::Done || !world.is_live(&me, my_run) {
            break;
        }
        match rng.random_range(0..4) {
            0 => {
                let _ = singleton.tell(Poke);
            }
            1 => {
                let id = format!("e{}", rng.random_range(0..ENTITIES));
                let _ = entities.entity_ref(id).tell(Poke);
            }
            _ => {
                if let Ok(seq) = producer.try_send(sent + 1) {
                    sent = seq;
                }
            }
        }
    }
    sent
}
