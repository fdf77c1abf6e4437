//! Sharding figures: activation rate (first message to new ids), message
//! rate to 100 k live entities spread over 3 nodes (in memory and over QUIC
//! on 127.0.0.1), memory per idle entity next to a plain actor's, and the
//! time to rebalance 1,000 shards after a join and after a kill.
//!
//! Run: `cargo bench --bench sharding` (`-- --runs N` fresh processes per
//! figure, default 3; the median is reported, with the spread).
//!
//! Each figure comes from a fresh process (this program run with
//! `--child <figure>`), on a Tokio runtime with 2 workers and the I/O driver
//! on, the load driven from a task on a worker, as users run actors. Rates
//! are quoted beside a baseline measured in the same process: the same
//! tells sent straight to plain `ActorRef`s of actors spread over the same
//! three nodes (a third local, the rest remote over the same connections),
//! which is what sharding adds its routing to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use footlight::cluster::{EntityRef, Sharding, SplitBrainResolver};
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::remote::transport::quic::Quic;
use footlight::remote::transport::tls::DevCa;
use footlight::{ActorRef, ClusterEvent, Node};

const ENTITIES: u64 = 100_000;
const MESSAGES: u64 = 1_000_000;
const SHARDS: u32 = 1000;

struct Counter {
    hits: Arc<AtomicU64>,
}

impl Actor for Counter {}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "bench.Hit")]
struct Hit;

impl Handler<Hit> for Counter {
    async fn handle(&mut self, _: Hit, _ctx: &mut Context<Self>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

impl RemoteActor for Counter {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Hit>();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn wait_for(hits: &AtomicU64, n: u64) {
    while hits.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn join_all(nodes: &[Cluster]) {
    for node in nodes {
        while node.members().len() != nodes.len() || node.peers().len() != nodes.len() - 1 || !node.is_joined() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Every shard hosted by exactly one region, and each region some.
async fn settled(regions: &[Sharding<Counter>]) {
    loop {
        let mut all: Vec<u32> = regions.iter().flat_map(|r| r.local_shards()).collect();
        all.sort_unstable();
        if all.len() == SHARDS as usize
            && all.iter().enumerate().all(|(i, s)| *s == i as u32)
            && regions.iter().all(|r| !r.local_shards().is_empty())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn regions(nodes: &[Cluster], hits: &Arc<AtomicU64>) -> Vec<Sharding<Counter>> {
    nodes
        .iter()
        .map(|n| {
            let hits = hits.clone();
            n.sharding("counter", move |_: &str| Counter { hits: hits.clone() }).shards(SHARDS).start().unwrap()
        })
        .collect()
}

async fn mem_cluster(n: usize) -> (MemoryNetwork, Vec<Cluster>) {
    let net = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let seeds: Vec<String> = if i == 0 { Vec::new() } else { vec!["n0".into()] };
        nodes.push(
            Cluster::builder(Node::builder(id.as_str()).transport(net.transport()).listen(id.as_str()))
                .seeds(seeds)
                .split_brain_resolver(SplitBrainResolver::keep_majority())
                .start()
                .await
                .unwrap(),
        );
    }
    join_all(&nodes).await;
    (net, nodes)
}

async fn quic_cluster(n: usize) -> Vec<Cluster> {
    let ca = DevCa::generate("bench").unwrap();
    let mut nodes: Vec<Cluster> = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let tls = ca.issue(&id).unwrap();
        let seeds: Vec<String> = nodes.first().map(|n| vec![n.addr().to_owned()]).unwrap_or_default();
        nodes.push(
            Cluster::builder(Node::builder(id.as_str()).transport(Quic::new(tls)).listen("127.0.0.1:0"))
                .seeds(seeds)
                .split_brain_resolver(SplitBrainResolver::keep_majority())
                .start()
                .await
                .unwrap(),
        );
    }
    join_all(&nodes).await;
    nodes
}

/// Activation rate and message rate through `regions`, sent from the first;
/// then the baseline: the same tells straight to `plain`.
async fn rates(
    regions: &[Sharding<Counter>],
    hits: &Arc<AtomicU64>,
    plain: &[ActorRef<Counter>],
    plain_hits: &AtomicU64,
) {
    settled(regions).await;
    let from = regions[0].clone();
    let refs: Vec<EntityRef<Counter>> = (0..ENTITIES).map(|i| from.entity_ref(format!("e{i}"))).collect();
    let refs = Arc::new(refs);
    // Activation: the first message to each id.
    let started = Instant::now();
    let sending = refs.clone();
    tokio::spawn(async move {
        for r in sending.iter() {
            r.send(Hit).await.unwrap();
        }
    })
    .await
    .unwrap();
    wait_for(hits, ENTITIES).await;
    let activation = started.elapsed();
    let activated: usize = regions.iter().map(|r| r.local_entities()).sum();
    assert_eq!(activated as u64, ENTITIES);
    println!("RESULT activations_per_s {:.0}", ENTITIES as f64 / activation.as_secs_f64());
    // Messages to live entities, round robin.
    let started = Instant::now();
    let sending = refs.clone();
    tokio::spawn(async move {
        for i in 0..MESSAGES {
            sending[(i % ENTITIES) as usize].send(Hit).await.unwrap();
        }
    })
    .await
    .unwrap();
    wait_for(hits, ENTITIES + MESSAGES).await;
    let all = MESSAGES as f64 / started.elapsed().as_secs_f64();
    println!("RESULT sharded_msgs_per_s {all:.0}");
    // The same to as many entities as the baseline has actors, spread
    // over the three nodes as they are (the first ids).
    let started = Instant::now();
    let sending = refs.clone();
    let few = plain.len() as u64;
    tokio::spawn(async move {
        for i in 0..MESSAGES {
            sending[(i % few) as usize].send(Hit).await.unwrap();
        }
    })
    .await
    .unwrap();
    wait_for(hits, ENTITIES + 2 * MESSAGES).await;
    let sharded = MESSAGES as f64 / started.elapsed().as_secs_f64();
    println!("RESULT sharded_few_msgs_per_s {sharded:.0}");
    // The baseline: plain refs, round robin.
    let started = Instant::now();
    let plain_refs: Arc<Vec<ActorRef<Counter>>> = Arc::new(plain.to_vec());
    tokio::spawn(async move {
        let n = plain_refs.len() as u64;
        for i in 0..MESSAGES {
            plain_refs[(i % n) as usize].tell(Hit).await.unwrap();
        }
    })
    .await
    .unwrap();
    wait_for(plain_hits, MESSAGES).await;
    let baseline = MESSAGES as f64 / started.elapsed().as_secs_f64();
    println!("RESULT plain_msgs_per_s {baseline:.0}");
    println!("RESULT ratio {:.3}", sharded / baseline);
}

/// Plain actors on every node, reached from the first by refs (remote ones
/// for the other nodes): a third of the traffic stays local, as it does
/// for the entities.
async fn plain_actors(nodes: &[Cluster], hits: &Arc<AtomicU64>) -> Vec<ActorRef<Counter>> {
    let per_node = 1000;
    for (i, node) in nodes.iter().enumerate() {
        for k in 0..per_node {
            node.spawn_named(&format!("plain-{i}-{k}"), Counter { hits: hits.clone() }).unwrap();
        }
    }
    let mut plain = Vec::new();
    for k in 0..per_node {
        for i in 0..nodes.len() {
            let name = format!("plain-{i}-{k}");
            plain.push(nodes[0].lookup::<Counter>(&name).await.unwrap_or_else(|e| panic!("{name}: {e}")));
        }
    }
    plain
}

fn child_mem() {
    runtime().block_on(async {
        let (_net, nodes) = mem_cluster(3).await;
        let hits = Arc::new(AtomicU64::new(0));
        let regions = regions(&nodes, &hits);
        let plain_hits = Arc::new(AtomicU64::new(0));
        let plain = plain_actors(&nodes, &plain_hits).await;
        rates(&regions, &hits, &plain, &plain_hits).await;
        std::process::exit(0);
    });
}

fn child_quic() {
    runtime().block_on(async {
        let nodes = quic_cluster(3).await;
        let hits = Arc::new(AtomicU64::new(0));
        let regions = regions(&nodes, &hits);
        let plain_hits = Arc::new(AtomicU64::new(0));
        let plain = plain_actors(&nodes, &plain_hits).await;
        rates(&regions, &hits, &plain, &plain_hits).await;
        std::process::exit(0);
    });
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn child_memory(sharded: bool) {
    runtime().block_on(async {
        let (_net, nodes) = mem_cluster(1).await;
        let hits = Arc::new(AtomicU64::new(0));
        let region = regions(&nodes, &hits).remove(0);
        settled(std::slice::from_ref(&region)).await;
        // Warm up allocator and maps with a first batch, then measure.
        let warm = 10_000;
        let mut plain = Vec::new();
        for round in 0..2 {
            let (from, to) = if round == 0 { (0, warm) } else { (warm, warm + ENTITIES) };
            let before = rss_bytes();
            if sharded {
                for i in from..to {
                    region.entity_ref(format!("e{i}")).send(Hit).await.unwrap();
                }
            } else {
                for _ in from..to {
                    let actor = nodes[0].system().spawn(Counter { hits: hits.clone() });
                    actor.tell(Hit).await.unwrap();
                    plain.push(actor);
                }
            }
            wait_for(&hits, to).await;
            if round == 1 {
                let per = (rss_bytes().saturating_sub(before)) / ENTITIES;
                println!("RESULT bytes_per_{} {per}", if sharded { "entity" } else { "actor" });
            }
        }
    });
}

fn child_rebalance() {
    runtime().block_on(async {
        let (net, mut nodes) = mem_cluster(3).await;
        let hits = Arc::new(AtomicU64::new(0));
        let mut regions = regions(&nodes, &hits);
        settled(&regions).await;
        // 10 entities per shard on average.
        for i in 0..10_000u64 {
            regions[0].entity_ref(format!("e{i}")).send(Hit).await.unwrap();
        }
        wait_for(&hits, 10_000).await;
        // A join.
        let started = Instant::now();
        let n3 = Cluster::builder(Node::builder("n3").transport(net.transport()).listen("n3"))
            .seeds(["n0"])
            .split_brain_resolver(SplitBrainResolver::keep_majority())
            .start()
            .await
            .unwrap();
        let hits3 = hits.clone();
        regions.push(
            n3.sharding("counter", move |_: &str| Counter { hits: hits3.clone() }).shards(SHARDS).start().unwrap(),
        );
        nodes.push(n3);
        settled(&regions).await;
        println!("RESULT join_ms {:.1}", started.elapsed().as_secs_f64() * 1e3);
        println!("RESULT joined_shards {}", regions[3].local_shards().len());
        // A kill: n1 cut off; keep-majority downs it.
        let mut events = nodes[0].subscribe();
        let started = Instant::now();
        net.isolate("n1");
        loop {
            if let Some(ClusterEvent::MemberDown(m)) = events.recv().await
                && m.id == "n1"
            {
                break;
            }
        }
        let down = started.elapsed();
        let survivors = [regions[0].clone(), regions[2].clone(), regions[3].clone()];
        settled(&survivors).await;
        let total = started.elapsed();
        println!("RESULT kill_down_ms {:.1}", down.as_secs_f64() * 1e3);
        println!("RESULT kill_settled_ms {:.1}", total.as_secs_f64() * 1e3);
        std::process::exit(0);
    });
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn run_children(figure: &str, runs: usize) -> std::collections::BTreeMap<String, Vec<f64>> {
    let exe = std::env::current_exe().unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..runs {
        let output = Command::new(&exe).args(["--child", figure]).output().unwrap();
        if !output.status.success() {
            eprintln!("{figure}: child failed: {}", String::from_utf8_lossy(&output.stderr));
            std::process::exit(1);
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut parts = line.split_whitespace();
            if parts.next() == Some("RESULT")
                && let (Some(key), Some(value)) = (parts.next(), parts.next().and_then(|v| v.parse().ok()))
            {
                out.entry(key.to_owned()).or_default().push(value);
            }
        }
    }
    out
}

fn show(results: &std::collections::BTreeMap<String, Vec<f64>>, key: &str, label: &str) {
    if let Some(v) = results.get(key) {
        let (m, lo, hi) = median(v.clone());
        if m < 10.0 {
            println!("  {label:<48} {m:>12.3}   (min {lo:.3}, max {hi:.3})");
        } else {
            println!("  {label:<48} {m:>12.0}   (min {lo:.0}, max {hi:.0})");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
        }
        match args.get(i + 1).map(String::as_str) {
            Some("mem") => child_mem(),
            Some("quic") => child_quic(),
            Some("memory-entity") => child_memory(true),
            Some("memory-actor") => child_memory(false),
            Some("rebalance") => child_rebalance(),
            other => panic!("unknown figure {other:?}"),
        }
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let runs = args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
    let runs = runs.unwrap_or(3);
    println!(
        "sharding: {ENTITIES} entities, {SHARDS} shards, 2 workers, load from a task; median of {runs} fresh processes"
    );
    let mem = run_children("mem", runs);
    println!("3 nodes in memory:");
    show(&mem, "activations_per_s", "activations/s (first message to new ids)");
    show(&mem, "sharded_msgs_per_s", "messages/s, round robin over 100 k entities");
    show(&mem, "sharded_few_msgs_per_s", "messages/s, round robin over 3 k entities");
    show(&mem, "plain_msgs_per_s", "baseline: the same to 3 k plain actors' refs");
    show(&mem, "ratio", "ratio 3 k entities / 3 k plain actors");
    let quic = run_children("quic", runs);
    println!("3 nodes over QUIC on 127.0.0.1, sent from one:");
    show(&quic, "activations_per_s", "activations/s (first message to new ids)");
    show(&quic, "sharded_msgs_per_s", "messages/s, round robin over 100 k entities");
    show(&quic, "sharded_few_msgs_per_s", "messages/s, round robin over 3 k entities");
    show(&quic, "plain_msgs_per_s", "baseline: the same to 3 k plain actors' refs");
    show(&quic, "ratio", "ratio 3 k entities / 3 k plain actors");
    let entity = run_children("memory-entity", runs);
    let actor = run_children("memory-actor", runs);
    println!("memory per idle entity (RSS growth over 100 k, one node):");
    show(&entity, "bytes_per_entity", "sharded entity (bytes)");
    show(&actor, "bytes_per_actor", "plain actor (bytes)");
    let rebalance = run_children("rebalance", runs);
    println!("rebalancing 1000 shards holding 10 k entities, 3 nodes in memory, real clock, defaults:");
    show(&rebalance, "join_ms", "a 4th node joins -> every shard hosted once (ms)");
    show(&rebalance, "joined_shards", "shards the newcomer took");
    show(&rebalance, "kill_down_ms", "a node cut off -> MemberDown (ms)");
    show(&rebalance, "kill_settled_ms", "-> every shard hosted once again (ms)");
}
