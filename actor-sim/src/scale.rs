//! Planning past one machine: a cluster of N members simulated in one
//! thread, measured in virtual time.
//!
//! [`measure`] starts N nodes joining through the first, then reports the
//! time until every member sees all N; the membership traffic per node in
//! a steady state; the time from a member's kill until every other member
//! has it down; and the time from a cluster-wide name's registration until
//! every member has it. Every figure is virtual time, so it says what the
//! protocol does, not what this machine's CPU can keep up with; the wall
//! time a run took is reported beside it.

use std::time::Duration;

use footlight::prelude::*;
use footlight::{Cluster, Member};

use crate::world::World;
use crate::{Faults, Sim, SimError};

/// The one-way latency of the simulated network: a LAN's.
pub const LATENCY: Duration = Duration::from_micros(500);

/// The figures of one [`measure`] run.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Members.
    pub members: usize,
    /// From the first start until every member saw all (virtual).
    pub converge: Duration,
    /// Membership bytes sent per node per second in a steady state
    /// (mean over the nodes).
    pub gossip_bytes_per_node_per_sec: f64,
    /// From a member's kill until every other member has it down
    /// (virtual).
    pub detect_everywhere: Duration,
    /// From a registration until every member has the name (virtual).
    pub registry_everywhere: Duration,
    /// Wall-clock time the run took on this machine.
    pub wall: Duration,
}

/// An actor to register.
#[derive(Actor)]
struct Probe;

impl RemoteActor for Probe {
    fn remote_messages(_: &mut RemoteMessages<Self>) {}
}

/// Polls `done` every 5 ms (virtual) until it holds or `within` passes;
/// the time it took, or `None`.
async fn until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while !done() {
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(start.elapsed())
}

fn sees(node: &Cluster, pick: impl Fn(&Member) -> bool) -> bool {
    node.members().iter().any(pick)
}

/// Runs the measurement for `members` nodes (seed `seed`).
pub fn measure(seed: u64, members: usize) -> Result<Figures, SimError> {
    let wall = std::time::Instant::now();
    let sim = Sim::new(seed)
        .nodes(members)
        .faults(Faults::none())
        .duration(Duration::ZERO)
        .settle(Duration::ZERO)
        .latency(LATENCY);
    let report = sim.run(move |world: World| async move {
        let converge = world.formed_at().unwrap_or_default();
        let nodes = world.nodes();
        let steady = Duration::from_secs(10);
        let before: Vec<u64> = nodes.iter().map(|n| n.gossip_stats().bytes_sent).collect();
        tokio::time::sleep(steady).await;
        let sent: u64 = nodes.iter().zip(&before).map(|(n, b)| n.gossip_stats().bytes_sent - b).sum();
        let gossip = sent as f64 / nodes.len() as f64 / steady.as_secs_f64();
        let bound = Duration::from_secs(120);
        let victim = nodes.last().map(|n| (n.id().to_owned(), n.run()));
        let mut detect = Duration::ZERO;
        if let Some((id, run)) = victim.filter(|_| nodes.len() > 1) {
            world.kill(&id).await;
            let others: Vec<Cluster> = world.nodes();
            detect =
                until(bound, || others.iter().all(|n| !sees(n, |m| m.id == id && m.run == run))).await.unwrap_or(bound);
        }
        let others = world.nodes();
        let registry = match others.first().map(|n| (n.clone(), n.system().spawn(Probe))) {
            Some((first, probe)) if first.register("scale-probe", &probe).is_ok() => {
                until(bound, || others.iter().all(|n| n.registry_entries().iter().any(|e| e.name == "scale-probe")))
                    .await
                    .unwrap_or(bound)
            }
            _ => bound,
        };
        (converge, gossip, detect, registry)
    })?;
    let (converge, gossip, detect, registry) = report.output;
    Ok(Figures {
        members,
        converge,
        gossip_bytes_per_node_per_sec: gossip,
        detect_everywhere: detect,
        registry_everywhere: registry,
        wall: wall.elapsed(),
    })
}
