//! A whole node under a hostile peer: node `a` (cluster services included)
//! exposing an actor, an honest cluster node `b` connected to it, and a peer
//! driven by the fuzzer's input (the protocol's own `Session` over a raw
//! in-memory connection) that sends any frames and bytes, reconnects,
//! advances the paused clock, and answers or ignores what `a` asks it.
//!
//! Checks, at the end of every input:
//! - no panic, in the node or in the harness;
//! - every ask resolved exactly once: the hostile peer's own (its session),
//!   and those made on `a` and `b` while the peer misbehaved (a lookup that
//!   asks every peer, asks through `b`'s ref) each completed;
//! - the node's other connections are unaffected: `b` reaches an actor
//!   spawned on `a` after the fact, over the connection it had all along;
//! - both nodes shut down in bounded (virtual) time.
//!
//! Memory stays bounded: libFuzzer's `-rss_limit_mb` (set by `fuzz/run`;
//! and `-malloc_limit_mb` under a sanitizer) turns unbounded growth into a
//! crash. The hostile peer's own asks are answered by its session (at the
//! latest when the connection ends); what this target checks of the node
//! is that the asks made on the nodes resolve and the honest connection
//! keeps working.

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use footlight::prelude::*;
use footlight::remote::codec;
use footlight::remote::proto::frame::Target;
use footlight::remote::proto::{Event, Session, SessionConfig};
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::remote::transport::{Connection, Transport};
use footlight::{Cluster, Node, RefAddr};

use tokio::task::JoinHandle;

use super::{Pools, SessionCheck};

/// The exposed actor: answers `Add`, and does what `Sub` says with the ref
/// it carries (a ref decoded from a peer's bytes).
#[derive(Actor, Default)]
struct Echo;

#[derive(Message, Serialize, Deserialize, Debug)]
#[message(reply = u64, remote = "fz.Add")]
struct Add(u64);

impl Handler<Add> for Echo {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        n.wrapping_add(1)
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "fz.Sub")]
struct Sub(ActorRef<Echo>, u8);

impl Handler<Sub> for Echo {
    async fn handle(&mut self, Sub(other, how): Sub, ctx: &mut Context<Self>) {
        match how % 4 {
            0 => {
                let _ = other.try_tell(Add(1));
            }
            1 => ctx.watch(&other),
            2 => ctx.link(&other),
            _ => {
                let _ = other.ask(Add(2)).timeout(Duration::from_secs(2)).await;
            }
        }
    }
}

impl RemoteActor for Echo {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Add>().add::<Sub>();
    }
}

/// The virtual clock's now, as the sessions take it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs one input. See the module's docs.
pub fn node(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime");
    rt.block_on(run(Unstructured::new(data)));
}

struct Hostile {
    conn: Option<Connection>,
    session: Session,
    check: SessionCheck,
    run: u64,
}

impl Hostile {
    async fn connect(net: &MemoryNetwork, run: u64) -> Hostile {
        let conn = net.transport().connect("a").await.ok();
        let session = Session::new(SessionConfig::new("footlight", "raw", run), now());
        let check = SessionCheck { asks: Default::default(), established: false, closed: false };
        Hostile { conn, session, check, run }
    }

    /// Writes what the session queued, then `extra` bytes.
    async fn write(&mut self, extra: &[u8]) {
        let Some(conn) = &mut self.conn else { return };
        let mut out = Vec::new();
        while let Some(bytes) = self.session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(extra);
        // A node that stops reading (its own output unread) closes the
        // connection once idle; the write then fails.
        if !out.is_empty() && !matches!(tokio::time::timeout(PATIENCE, conn.send.write_all(&out)).await, Ok(Ok(()))) {
            self.lost();
        }
    }

    /// Reads what arrives within `wait` (virtual), feeding the session.
    async fn read(&mut self, wait: Duration, pools: &mut Pools) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Some(conn) = &mut self.conn else { return };
            match tokio::time::timeout(wait, conn.recv.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(Some(n))) => {
                    self.session.handle_input(now(), &buf[..n]);
                    self.learn(pools);
                    self.write(&[]).await;
                }
                Ok(_) => {
                    self.lost();
                    break;
                }
            }
        }
    }

    /// Events checked (asks answered once, order), and what they name kept
    /// for later frames: the node's ask ids, handles and runs.
    fn learn(&mut self, pools: &mut Pools) {
        let mut events = Vec::new();
        while let Some(event) = self.session.poll_event() {
            events.push(event);
        }
        for event in &events {
            match event {
                Event::Established(peer) => pools.runs.push(peer.run),
                Event::Ask(ask) => pools.ids.push(ask.id),
                Event::Tell(tell) => {
                    if let Some(id) = tell.target.as_id() {
                        pools.ids.push(id);
                    }
                }
                Event::Watch(w) | Event::Unwatch(w) => pools.ids.extend([w.target.id, w.watcher.id]),
                Event::Link(l) | Event::Unlink(l) => pools.ids.extend([l.target, l.linker]),
                Event::Reply { payload, .. } => {
                    if let Ok(found) = codec::decode::<Found>(payload) {
                        pools.ids.push(found.id);
                    }
                }
                _ => {}
            }
        }
        // The same checks as the session target, on the events just taken.
        self.check.drain_from(events.into_iter());
        pools.ids.truncate(64);
    }

    fn assert_answered(&self) {
        for (id, seen) in &self.check.asks {
            assert_eq!(*seen, 1, "the hostile peer's ask {id} was never answered");
        }
    }

    fn lost(&mut self) {
        self.conn = None;
        self.session.handle_lost();
        let mut events = Vec::new();
        while let Some(event) = self.session.poll_event() {
            events.push(event);
        }
        self.check.drain_from(events.into_iter());
    }
}

/// A `footlight.Lookup` answer (PROTOCOL.md).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Found {
    id: u64,
    type_name: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    run: Option<u64>,
    #[serde(default)]
    addr: Option<String>,
}

async fn start(net: &MemoryNetwork, id: &str, seeds: &[&str]) -> Cluster {
    Cluster::builder(Node::builder(id).transport(net.transport()).listen(id))
        .seeds(seeds.iter().copied())
        .start()
        .await
        .expect("a node starts on a fresh in-memory network")
}

/// Within this much virtual time everything asked must have resolved.
const PATIENCE: Duration = Duration::from_secs(60);

async fn run(mut u: Unstructured<'_>) {
    let net = MemoryNetwork::new();
    let a = start(&net, "a", &[]).await;
    let b = start(&net, "b", &["a"]).await;
    let _echo = a.spawn_named("echo", Echo).expect("spawn echo");
    tokio::time::timeout(PATIENCE, b.wait_for_peer("a")).await.expect("b connects in time").expect("b connects");
    let from_b: ActorRef<Echo> = tokio::time::timeout(PATIENCE, b.node().lookup("echo"))
        .await
        .expect("b finds echo in time")
        .expect("b finds echo");

    let mut hostile = Hostile::connect(&net, 7).await;
    let mut pools = Pools { ids: vec![0, 1, 2], ..Pools::default() };
    // The handle of `echo`, as any peer learns it.
    let lookup = codec::encode(&"echo").expect("encodes");
    let asked =
        hostile.session.send_ask(now(), Target::name("$node"), None, "footlight.Lookup".into(), lookup, PATIENCE, None);
    if let Ok(id) = asked {
        hostile.check.asks.insert(id, 0);
    }
    hostile.write(&[]).await;
    hostile.read(Duration::from_millis(5), &mut pools).await;
    let handle = pools.ids.last().copied().unwrap_or(1);
    let mut pools = Pools {
        ids: vec![handle, 0, 1, 2],
        names: ["echo", "$node", "canary", "ghost"].map(String::from).to_vec(),
        wire_names: [
            "fz.Add",
            "fz.Sub",
            "footlight.Lookup",
            "footlight.Stop",
            "footlight.Gossip",
            "footlight.Leaving",
            "footlight.Registry",
            "footlight.ViewDigest",
            "footlight.Settle",
            "fz.Nope",
        ]
        .map(String::from)
        .to_vec(),
        payloads: Vec::new(),
        nodes: ["a", "b", "raw", "zz"].map(String::from).to_vec(),
        runs: vec![a.run(), b.run(), 7],
    };
    for (node, run) in [("raw", 7), ("b", b.run()), ("zz", 1)] {
        let addr = RefAddr { node: node.into(), run, id: handle };
        for how in 0..4u8 {
            pools.payloads.push(codec::encode(&(addr.clone(), how)).expect("encodes"));
        }
    }
    pools.payloads.extend([
        codec::encode(&(5u64,)).expect("encodes"),
        codec::encode(&5u64).expect("encodes"),
        codec::encode(&"echo").expect("encodes"),
        codec::encode(&handle).expect("encodes"),
    ]);

    let mut waiting: Vec<JoinHandle<()>> = Vec::new();
    let mut steps = 0;
    while !u.is_empty() && steps < 64 {
        steps += 1;
        let Ok(op) = u.int_in_range(0..=9u8) else { break };
        let step: Result<()> = async {
            match op {
                0..=3 => {
                    let mut bytes = Vec::new();
                    // A burst: frames are cheap next to the clock steps.
                    for _ in 0..u.int_in_range(1..=16)? {
                        pools.bytes(&mut u, &mut bytes)?;
                    }
                    hostile.write(&bytes).await;
                }
                4 => {
                    let target = pools.target(&mut u)?;
                    let (wire, payload) = if u.arbitrary()? {
                        ("footlight.Lookup", codec::encode(&"echo").expect("encodes"))
                    } else {
                        ("fz.Add", pools.payload(&mut u)?)
                    };
                    let target = if wire == "footlight.Lookup" { Target::name("$node") } else { target };
                    let timeout = Duration::from_millis(u.int_in_range(1..=5_000)?);
                    if let Ok(id) = hostile.session.send_ask(now(), target, None, wire.into(), payload, timeout, None) {
                        hostile.check.asks.insert(id, 0);
                    }
                    hostile.write(&[]).await;
                }
                5 => hostile.read(Duration::from_millis(u.int_in_range(1..=50)?), &mut pools).await,
                6 => {
                    // Mostly short steps; now and then past the idle timeout
                    // and ask deadlines (long virtual sleeps cost the most:
                    // every heartbeat and gossip round in them runs).
                    let most = if u.ratio(1, 8)? { 7_000 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(u.int_in_range(0..=most)?)).await;
                }
                7 => {
                    // Asks made on the nodes while the peer misbehaves: a
                    // lookup asks every peer of `a`, the hostile one too.
                    let name = Pools::pick(&mut u, &pools.names)?;
                    let a = a.node().clone();
                    waiting.push(tokio::spawn(async move {
                        let _ = a.lookup::<Echo>(&name).await;
                    }));
                    let from_b = from_b.clone();
                    let n = u.arbitrary()?;
                    waiting.push(tokio::spawn(async move {
                        let _ = from_b.ask(Add(n)).await;
                    }));
                }
                8 => {
                    // Reconnect, as the same run (a duplicate) or a new one.
                    let run = if u.arbitrary()? { hostile.run } else { u.arbitrary()? };
                    let mut old = std::mem::replace(&mut hostile, Hostile::connect(&net, run).await);
                    old.lost();
                    old.assert_answered();
                    hostile.write(&[]).await;
                }
                _ => {
                    hostile.session.close(now(), footlight::remote::proto::CloseCode::Normal, "bye");
                    hostile.write(&[]).await;
                }
            }
            Ok(())
        }
        .await;
        if step.is_err() {
            break;
        }
    }

    // The hostile peer goes away; what it was asked times out or fails.
    hostile.read(Duration::from_millis(20), &mut pools).await;
    hostile.lost();
    hostile.assert_answered();
    for task in waiting {
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("an ask made on a node never resolved")
            .expect("an ask task panicked");
    }

    // The honest connection was not disturbed: b reaches a new actor on a.
    let canary = a.spawn_named("canary", Echo).expect("spawn canary");
    let reached: ActorRef<Echo> = tokio::time::timeout(PATIENCE, b.node().lookup("canary"))
        .await
        .expect("b's lookup resolves")
        .expect("b finds an actor spawned on a after the hostile peer left");
    let answer = reached.ask(Add(41)).timeout(PATIENCE).await.expect("b's ask over its connection to a");
    assert_eq!(answer, 42);
    drop(canary);

    tokio::time::timeout(PATIENCE, async {
        b.shutdown().await;
        a.shutdown().await;
    })
    .await
    .expect("both nodes shut down in time");
}
