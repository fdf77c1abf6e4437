//! The ping_pong service: every node runs a `Ponger`, registered cluster-wide
//! as `ponger@<node id>`; a node pings the others' pongers and measures round
//! trips. Shared by the example binary and the in-process test.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use footlight::prelude::*;

/// Answers pings; counts notes.
#[derive(Actor)]
pub struct Ponger {
    /// The node it runs on.
    pub node: String,
    /// Notes received (one-way tells).
    pub notes: u64,
}

/// A round trip: the reply says who answered.
#[derive(Message, Serialize, Deserialize)]
#[message(reply = Pong, remote = "ping_pong.Ping")]
pub struct Ping {
    /// Sequence number, echoed back.
    pub seq: u64,
}

/// The answer to a [`Ping`].
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Pong {
    /// The ping's sequence number.
    pub seq: u64,
    /// The node that answered.
    pub by: String,
    /// Notes received so far.
    pub notes: u64,
}

/// A one-way message.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "ping_pong.Note")]
pub struct Note(pub String);

impl Handler<Ping> for Ponger {
    async fn handle(&mut self, ping: Ping, _ctx: &mut Context<Self>) -> Pong {
        Pong { seq: ping.seq, by: self.node.clone(), notes: self.notes }
    }
}

impl Handler<Note> for Ponger {
    async fn handle(&mut self, _: Note, _ctx: &mut Context<Self>) {
        self.notes += 1;
    }
}

impl RemoteActor for Ponger {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Ping>().add::<Note>();
    }
}

/// The cluster-wide name of `node`'s ponger.
pub fn name_of(node: &str) -> String {
    format!("ponger@{node}")
}

/// Spawns this node's ponger and registers it.
pub fn serve(node: &Cluster) -> Result<ActorRef<Ponger>, ClusterError> {
    let ponger = node.system().spawn(Ponger { node: node.id().to_owned(), notes: 0 });
    node.register(&name_of(node.id()), &ponger)?;
    Ok(ponger)
}

/// Round-trip times of a series of pings.
#[derive(Debug)]
pub struct Latency {
    /// Who answered.
    pub peer: String,
    /// Pings answered.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Notes the peer had counted at the last ping (all sent before it).
    pub notes_seen: u64,
}

/// Sends `notes` one-way notes, then `pings` pings, to `peer`'s ponger.
pub async fn ping(node: &Cluster, peer: &str, pings: usize, notes: u64) -> Result<Latency, Box<dyn std::error::Error>> {
    let ponger: ActorRef<Ponger> = node.lookup(&name_of(peer)).await?;
    for i in 0..notes {
        ponger.tell(Note(format!("note {i}"))).await?;
    }
    let mut times = Vec::with_capacity(pings);
    let mut notes_seen = 0;
    for seq in 0..pings as u64 {
        let sent = Instant::now();
        let pong = ponger.ask(Ping { seq }).await?;
        times.push(sent.elapsed());
        if pong.seq != seq || pong.by != peer {
            return Err(format!("wrong pong: {pong:?}").into());
        }
        notes_seen = pong.notes;
    }
    times.sort();
    let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    Ok(Latency { peer: peer.to_owned(), count: times.len(), p50: at(0.5), p99: at(0.99), notes_seen })
}

/// Waits until `name` resolves (registrations travel asynchronously).
pub async fn wait_for_name(node: &Cluster, name: &str, within: Duration) -> bool {
    let wait = async {
        while node.lookup::<Ponger>(name).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}
