//! Each multi-node example's scenario, in one process over the in-memory
//! network on tokio's paused clock: the same service code the example
//! binaries run (their `app.rs`), with nodes joined, partitioned and lost
//! deterministically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/bank/app.rs"]
mod bank;
#[path = "../examples/chat/app.rs"]
mod chat;
#[path = "../examples/kv/app.rs"]
mod kv;
#[path = "../examples/ping_pong/app.rs"]
mod ping_pong;
#[path = "../examples/work_queue/app.rs"]
mod work_queue;

mod support;

use std::time::Duration;

use footlight::Cluster;
use footlight::remote::transport::mem::MemoryNetwork;
use support::{cluster, eventually};
use tokio::sync::mpsc;

/// How long (virtual time) a condition may take to hold.
const WAIT: Duration = Duration::from_secs(30);

/// The next line on `lines` containing `text`, within 10 s (virtual).
async fn line_with(lines: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    let wait = async {
        loop {
            let line = lines.recv().await.expect("client gone");
            if line.contains(text) {
                return line;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or_else(|_| panic!("no line with {text:?}"))
}

#[tokio::test(start_paused = true)]
async fn ping_pong_measures_round_trips_after_the_notes() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b"], WAIT).await;
    for node in &nodes {
        ping_pong::serve(node).unwrap();
    }
    assert!(ping_pong::wait_for_name(&nodes[1], &ping_pong::name_of("a"), Duration::from_secs(10)).await);
    let latency = ping_pong::ping(&nodes[1], "a", 200, 50).await.unwrap();
    assert_eq!(latency.count, 200);
    assert_eq!(latency.peer, "a");
    assert_eq!(latency.notes_seen, 50, "every note arrives before the pings sent after it");
    assert!(latency.p50 <= latency.p99);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn chat_fans_out_across_nodes_and_drops_the_users_of_a_lost_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    for node in &nodes {
        chat::setup(node).unwrap();
    }
    let (mut alice, mut at_alice) = chat::Client::new(&nodes[0], "alice");
    let (mut bob, mut at_bob) = chat::Client::new(&nodes[1], "bob");
    let (mut carol, mut at_carol) = chat::Client::new(&nodes[2], "carol");
    alice.join("lobby").await.unwrap();
    // The room lives on a; its name reaches b and c.
    for node in &nodes[1..] {
        eventually(WAIT, || async { node.lookup::<chat::Room>("room:lobby").await.is_ok() }).await;
    }
    bob.join("lobby").await.unwrap();
    line_with(&mut at_alice, "bob joined").await;
    carol.join("lobby").await.unwrap();
    line_with(&mut at_alice, "carol joined").await;
    alice.say("hello from a").await.unwrap();
    assert_eq!(line_with(&mut at_bob, "hello").await, "[lobby] alice: hello from a");
    assert_eq!(line_with(&mut at_carol, "hello").await, "[lobby] alice: hello from a");
    assert_eq!(alice.who().await.unwrap(), ["alice", "bob", "carol"]);

    // c dies: the room (on a) drops carol and tells the others.
    net.isolate("c");
    assert_eq!(line_with(&mut at_alice, "carol left").await, "[lobby] *: carol left (their node is down)");
    line_with(&mut at_bob, "carol left").await;
    bob.say("still here").await.unwrap();
    assert_eq!(line_with(&mut at_alice, "still here").await, "[lobby] bob: still here");
    assert_eq!(alice.who().await.unwrap(), ["alice", "bob"]);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn kv_keeps_every_key_through_a_leave_and_a_node_loss() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c", "d"], WAIT).await;
    let shards: Vec<_> = nodes.iter().map(|n| kv::serve(n).unwrap()).collect();
    for node in &nodes {
        for id in ["a", "b", "c", "d"] {
            eventually(WAIT, || async { node.lookup::<kv::Shard>(&kv::name_of(id)).await.is_ok() }).await;
        }
    }
    // Writes from every node; two copies each.
    for i in 0..200 {
        let copies = kv::put(&nodes[i % 4], &format!("key{i}"), &format!("value{i}")).await.unwrap();
        assert_eq!(copies, kv::REPLICAS);
    }
    let total = |node: &Cluster| {
        let node = node.clone();
        async move { kv::counts(&node).await.iter().map(|(_, c)| c.unwrap_or(0)).sum::<usize>() }
    };
    assert_eq!(total(&nodes[0]).await, 400);
    for node in &nodes {
        for i in (0..200).step_by(7) {
            assert_eq!(kv::get(node, &format!("key{i}")).await.unwrap(), Some(format!("value{i}")));
        }
    }

    // c leaves: it hands its keys over first.
    kv::leave(&nodes[2], &shards[2]).await;
    eventually(WAIT, || async { nodes[0].members().len() == 3 }).await;
    eventually(WAIT, || async { total(&nodes[0]).await == 400 }).await;
    for i in 0..200 {
        assert_eq!(kv::get(&nodes[1], &format!("key{i}")).await.unwrap(), Some(format!("value{i}")), "key{i}");
    }

    // d is lost without a goodbye: its keys' other copies remain, and are
    // copied again to restore two of each.
    net.isolate("d");
    eventually(WAIT, || async { nodes[0].members().len() == 2 }).await;
    for i in 0..200 {
        assert_eq!(kv::get(&nodes[0], &format!("key{i}")).await.unwrap(), Some(format!("value{i}")), "key{i}");
    }
    eventually(WAIT, || async { total(&nodes[0]).await == 400 }).await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// The work queue on reliable delivery: poison jobs come again after their
/// worker's restart; with a node lost mid-batch, its unacknowledged jobs go
/// to the other workers; no job is lost, and a job runs twice only after the
/// loss, with its key (at most the lost node's windows).
#[tokio::test(start_paused = true)]
async fn work_queue_loses_no_job_to_panics_or_to_a_lost_node() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    for node in &nodes {
        work_queue::start_pool(node, 3);
    }
    assert!(work_queue::wait_for_workers(&nodes[0], 9, Duration::from_secs(10)).await);

    let report = work_queue::run_jobs(&nodes[0], 0..300, 5, |_| {}).await.unwrap();
    assert_eq!(report.completed, 300);
    assert_eq!(report.retried_after_panic, 6, "jobs 7, 57, ..., 257 are poison once");
    assert_eq!(report.duplicates(), 0, "no job ran twice with every node up");
    assert_eq!(report.by_node.len(), 3);

    // c is lost while a batch runs.
    let batch = {
        let a = nodes[0].clone();
        tokio::spawn(async move { work_queue::run_jobs(&a, 1000..1600, 5, |_| {}).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    net.isolate("c");
    let report = batch.await.unwrap().unwrap();
    assert_eq!(report.completed, 600, "no job lost");
    assert!(report.reassigned > 0, "jobs on c went to the other workers");
    let windows = 3 * u64::from(work_queue::WINDOW);
    assert!(report.duplicates() <= windows, "{} ran twice; at most c's windows", report.duplicates());
    for node in nodes {
        node.shutdown().await;
    }
}

/// The dispenser numbers its ids from the clock (`entropy::system_time`):
/// a new instance must start at least a millisecond per thousand ids
/// handed out after the old one. With Tokio's paused clock the move takes
/// next to no real time, so the system clock may not tick between the two
/// instances (it did not, once, under load). Inside a seeded scope that
/// clock is the runtime's (virtual) one, and the move takes the time it
/// takes there.
#[test]
fn work_queue_dispatchers_get_disjoint_job_ids_from_the_dispenser_even_after_it_moves() {
    footlight::entropy::seeded(1, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(dispensers_hand_out_disjoint_ids());
    });
}

async fn dispensers_hand_out_disjoint_ids() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a", "b", "c"], WAIT).await;
    let dispensers: Vec<_> = nodes.iter().map(|n| work_queue::dispenser(n).unwrap()).collect();
    let mut ranges = Vec::new();
    for (i, d) in dispensers.iter().enumerate() {
        let (first, from) = d.ask(work_queue::Reserve(100 + i as u64)).await.unwrap();
        assert_eq!(from, "a", "the dispenser runs on the oldest member");
        ranges.push(first..first + 100 + i as u64);
    }
    // a leaves: the dispenser moves to b, and goes on with ids not handed out.
    nodes[0].shutdown().await;
    let (first, from) = dispensers[2].ask(work_queue::Reserve(10)).await.unwrap();
    assert_eq!(from, "b");
    ranges.push(first..first + 10);
    for (i, r) in ranges.iter().enumerate() {
        for other in &ranges[i + 1..] {
            assert!(r.end <= other.start || other.end <= r.start, "{r:?} and {other:?} overlap");
        }
    }
    for node in &nodes[1..] {
        node.shutdown().await;
    }
}

/// `ids` on `net` joined through the first, with keep-majority.
async fn majority_cluster(net: &MemoryNetwork, ids: &[&str]) -> Vec<Cluster> {
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        nodes.push(majority_node(net, id, if i == 0 { &[] } else { &ids[..1] }).await);
    }
    for node in &nodes {
        // Converged too: every member counts in the resolver's decisions.
        eventually(WAIT, || async {
            node.members().len() == ids.len() && node.peers().len() == ids.len() - 1 && node.is_converged()
        })
        .await;
    }
    nodes
}

async fn majority_node(net: &MemoryNetwork, id: &str, seeds: &[&str]) -> Cluster {
    let node = Cluster::builder(footlight::Node::builder(id).transport(net.transport()).listen(id))
        .seeds(seeds.iter().copied())
        .split_brain_resolver(footlight::cluster::SplitBrainResolver::keep_majority())
        .start()
        .await
        .unwrap();
    node.joined().await.unwrap();
    node
}

/// A key whose two owners among `members` are both in `side`.
fn key_owned_by(members: &[String], side: &[&str], prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| kv::owners(members, k, kv::REPLICAS).iter().all(|o| side.contains(&o.as_str())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn kv_under_keep_majority_the_minority_refuses_writes_and_nothing_acknowledged_is_lost_after_the_heal() {
    let net = MemoryNetwork::new();
    let ids = ["a", "b", "c", "d", "e"];
    let mut nodes = majority_cluster(&net, &ids).await;
    let mut shards: Vec<_> = nodes.iter().map(|n| kv::serve(n).unwrap()).collect();
    for node in &nodes {
        for id in ids {
            eventually(WAIT, || async { node.lookup::<kv::Shard>(&kv::name_of(id)).await.is_ok() }).await;
        }
    }
    // What was acknowledged, and the value each key must end with.
    let mut acked: std::collections::BTreeMap<String, String> = Default::default();
    for i in 0..40 {
        let (k, v) = (format!("before{i}"), format!("v{i}"));
        assert_eq!(kv::put(&nodes[i % 5], &k, &v).await.unwrap(), 2);
        acked.insert(k, v);
    }
    let all: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    let minority_key = key_owned_by(&all, &["d", "e"], "m");
    let shared_key = key_owned_by(&all, &["d", "e"], "s");
    // After the heal only d comes back: the shared key's owners are then d
    // and a majority node holding the newer value, which d's older copy
    // must not overwrite.
    let after: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| (*s).to_owned()).collect();
    for a in ["a", "b", "c"] {
        for b in ["d", "e"] {
            net.partition(a, b);
        }
    }
    // Right after the cut nobody has noticed yet: d acknowledges writes of
    // keys d and e own.
    assert_eq!(kv::put(&nodes[3], &minority_key, "written on the minority").await.unwrap(), 2);
    acked.insert(minority_key.clone(), "written on the minority".into());
    kv::put(&nodes[3], &shared_key, "older").await.unwrap();
    // Once members are unreachable, both sides refuse until decided.
    eventually(WAIT, || async { kv::refusal(&nodes[0]).is_some() && kv::refusal(&nodes[3]).is_some() }).await;
    let refused = kv::put(&nodes[0], "during", "x").await.unwrap_err().to_string();
    assert!(refused.contains("unreachable"), "{refused}");
    // The minority downs itself and says why; the majority carries on.
    eventually(WAIT, || async { nodes[3].is_downed() && nodes[4].is_downed() }).await;
    let refused = kv::put(&nodes[4], "late", "x").await.unwrap_err().to_string();
    assert!(refused.contains("losing side") && refused.contains("keep-majority"), "{refused}");
    eventually(WAIT, || async { (0..3).all(|i| nodes[i].members().len() == 3 && kv::refusal(&nodes[i]).is_none()) })
        .await;
    // Versions are wall-clock milliseconds, which the paused test clock
    // does not move: let a few real ones pass.
    std::thread::sleep(Duration::from_millis(3));
    kv::put(&nodes[0], &shared_key, "newer").await.unwrap();
    acked.insert(shared_key.clone(), "newer".into());
    for i in 0..20 {
        let (k, v) = (format!("during{i}"), format!("w{i}"));
        assert_eq!(kv::put(&nodes[i % 3], &k, &v).await.unwrap(), 2);
        acked.insert(k, v);
    }
    // Thirty seconds of partition, then the heal; d starts again as a new
    // member (as the example does) with what it held; e stays away.
    tokio::time::sleep(Duration::from_secs(30)).await;
    net.heal_all();
    nodes.pop().unwrap().shutdown().await;
    let data = shards[3].ask(kv::Dump).await.unwrap();
    nodes[3].shutdown().await;
    nodes[3] = majority_node(&net, "d", &["a"]).await;
    shards[3] = kv::resume(&nodes[3], data).unwrap();
    for node in &nodes {
        eventually(WAIT, || async { node.members().len() == 4 }).await;
    }
    assert!(kv::owners(&after, &shared_key, kv::REPLICAS).iter().any(|o| o != "d"));
    // Every acknowledged write is there, on every owner, with the value of
    // the last acknowledged write of its key.
    let copies = |k: String| {
        let node = nodes[0].clone();
        let owners = kv::owners(&after, &k, kv::REPLICAS);
        async move {
            let mut values = Vec::new();
            for owner in owners {
                let shard = node.lookup::<kv::Shard>(&kv::name_of(&owner)).await.ok();
                values.push(match shard {
                    Some(shard) => shard.ask(kv::Get(k.clone())).await.ok().flatten(),
                    None => None,
                });
            }
            values
        }
    };
    for (k, v) in &acked {
        eventually(WAIT, || async { copies(k.clone()).await.iter().all(|c| c.as_deref() == Some(v.as_str())) }).await;
    }
    // Still so after several rounds of re-checking ownership.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for (k, v) in &acked {
        assert!(copies(k.clone()).await.iter().all(|c| c.as_deref() == Some(v.as_str())), "{k}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn kv_a_copy_never_replaces_a_later_version_of_its_key() {
    let net = MemoryNetwork::new();
    let nodes = cluster(&net, &["a"], WAIT).await;
    let version = |millis| kv::Version { millis, node: "a".into() };
    let shard = kv::resume(&nodes[0], [("k".to_owned(), ("newer".to_owned(), version(2)))].into()).unwrap();
    shard.ask(kv::Handoff(vec![("k".into(), ("older".into(), version(1)))])).await.unwrap();
    shard.ask(kv::Put { key: "k".into(), value: "older".into(), version: version(1) }).await.unwrap();
    assert_eq!(shard.ask(kv::Get("k".into())).await.unwrap().as_deref(), Some("newer"));
    shard.ask(kv::Handoff(vec![("k".into(), ("newest".into(), version(3)))])).await.unwrap();
    assert_eq!(shard.ask(kv::Get("k".into())).await.unwrap().as_deref(), Some("newest"));
    nodes[0].shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn chat_under_keep_majority_the_minority_refuses_lines_and_there_is_one_room() {
    let net = MemoryNetwork::new();
    let ids = ["a", "b", "c", "d", "e"];
    let nodes = majority_cluster(&net, &ids).await;
    for node in &nodes {
        chat::setup(node).unwrap();
    }
    // The room lives on d, on what becomes the minority side.
    let (mut dora, _at_dora) = chat::Client::new(&nodes[3], "dora");
    dora.join("lobby").await.unwrap();
    let (mut alice, mut at_alice) = chat::Client::new(&nodes[0], "alice");
    eventually(WAIT, || async { nodes[0].lookup::<chat::Room>("room:lobby").await.is_ok() }).await;
    alice.join("lobby").await.unwrap();
    alice.say("before").await.unwrap();
    line_with(&mut at_alice, "before").await;
    for a in ["a", "b", "c"] {
        for b in ["d", "e"] {
            net.partition(a, b);
        }
    }
    eventually(WAIT, || async { nodes[3].is_downed() && nodes[4].is_downed() }).await;
    let refused = dora.say("anyone?").await.unwrap_err().to_string();
    assert!(refused.contains("losing side") && refused.contains("keep-majority"), "{refused}");
    assert!(dora.join("lobby").await.unwrap_err().to_string().contains("losing side"));
    // The majority re-creates the room on its side once d is down; its users
    // go on talking there.
    eventually(WAIT, || async { nodes[0].members().len() == 3 }).await;
    alice.say("after").await.unwrap();
    line_with(&mut at_alice, "after").await;
    // One room of that name in the view of every member of the majority.
    let mut rooms = std::collections::BTreeSet::new();
    for node in &nodes[..3] {
        eventually(WAIT, || async { node.lookup::<chat::Room>("room:lobby").await.is_ok() }).await;
        let room = node.lookup::<chat::Room>("room:lobby").await.unwrap();
        rooms.insert(room.remote_addr().map_or_else(|| node.id().to_owned(), |a| a.node));
    }
    assert_eq!(rooms.len(), 1, "rooms on {rooms:?}");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn bank_conserves_money_and_keeps_one_activation_per_account_through_a_lost_node() {
    let net = MemoryNetwork::new();
    let nodes = majority_cluster(&net, &["a", "b", "c"]).await;
    let ledger = std::env::temp_dir().join(format!(
        "footlight-bank-scenario-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let banks: Vec<bank::Bank> = nodes.iter().map(|n| bank::start(n, &ledger).unwrap()).collect();
    const ACCOUNTS: u64 = 60;
    let before = bank::audit(&nodes[0], &banks[0], ACCOUNTS).await.unwrap();
    assert_eq!(before.total, ACCOUNTS * bank::OPENING_BALANCE);
    assert!(before.not_once().is_empty(), "{:?}", before.not_once());
    assert_eq!(before.per_node.len(), 3, "accounts on every node: {:?}", before.per_node);
    // c is lost while the transfers run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run = {
        let (bank, done) = (banks[0].clone(), done.clone());
        tokio::spawn(async move { bank::run_transfers(&bank, 0..800, ACCOUNTS, 16, 7, done).await })
    };
    while done.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        tokio::task::yield_now().await;
    }
    net.isolate("c");
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.transfers, 800);
    assert!(report.moved > 0);
    assert!(report.retries > 0, "transfers waited for the accounts that were on c");
    let after = bank::audit(&nodes[0], &banks[0], ACCOUNTS).await.unwrap();
    assert_eq!(after.total, before.total, "money was created or lost");
    assert!(after.not_once().is_empty(), "not active exactly once: {:?}", after.not_once());
    assert!(after.answered_from.values().all(|n| n != "c"), "{:?}", after.answered_from);
    assert!(banks[2].active.lock().unwrap().is_empty(), "c, downed, runs no account");
    for node in nodes {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&ledger);
}

#[tokio::test(start_paused = true)]
async fn kv_reads_the_live_copy_while_the_first_owner_is_only_suspected() {
    let net = MemoryNetwork::new();
    let nodes = majority_cluster(&net, &["a", "b", "c"]).await;
    for node in &nodes {
        kv::serve(node).unwrap();
    }
    for node in &nodes {
        for id in ["a", "b", "c"] {
            eventually(WAIT, || async { node.lookup::<kv::Shard>(&kv::name_of(id)).await.is_ok() }).await;
        }
    }
    let members: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    // A key whose first owner is b, read from a.
    let key = (0..).map(|i| format!("k{i}")).find(|k| kv::owners(&members, k, kv::REPLICAS)[0] == "b").unwrap();
    kv::put(&nodes[0], &key, "v").await.unwrap();
    let mut events = nodes[0].subscribe();
    net.isolate("b");
    let suspected = async {
        loop {
            if let Some(footlight::ClusterEvent::MemberUnreachable(m)) = events.recv().await
                && m.id == "b"
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, suspected).await.expect("b suspected");
    assert_eq!(kv::get(&nodes[0], &key).await.unwrap().as_deref(), Some("v"));
    assert!(
        nodes[0].members().iter().any(|m| m.id == "b"),
        "read before b was declared down: it went to the live copy"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
