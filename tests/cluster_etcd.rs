//! Leases held in a real etcd (feature `etcd`): exclusive, renewed, and
//! expired only after their holder died; a singleton fenced by one moves
//! to the next member only once the dead owner's lease has run out.
//!
//! Each test starts its own etcd server (Debian's `etcd-server` package;
//! `.ci/run` installs it) on free loopback ports, in a fresh data
//! directory. Where no `etcd` binary is found, the tests say so and pass
//! without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use footlight::cluster::Singleton;
use footlight::cluster::lease::{EtcdLease, Lease};
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::{Cluster, Node};

/// How long a condition may take (real time).
const WAIT: Duration = Duration::from_secs(60);

/// An etcd server of this test, killed (and its data removed) on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts etcd, or `None` (with a message) where it is not installed.
fn etcd(test: &str) -> Option<Etcd> {
    let Some(binary) = etcd_binary() else {
        // CI installs etcd and says so: there, a missing etcd is a failure.
        assert!(
            std::env::var_os("FOOTLIGHT_REQUIRE_ETCD").is_none(),
            "{test}: FOOTLIGHT_REQUIRE_ETCD is set but there is no `etcd` binary on PATH"
        );
        eprintln!("SKIPPED {test}: no `etcd` binary on PATH (apt-get install etcd-server; .ci/run does)");
        return None;
    };
    let (client, peer) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("footlight-etcd-{}-{client}", std::process::id()));
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(binary)
        .args(["--name", "t", "--data-dir"])
        .arg(&dir)
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    Some(Etcd { child, dir, endpoint })
}

/// A lease handle on `etcd`, once etcd answers.
async fn lease(etcd: &Etcd, owner: &str, ttl: Duration) -> Arc<EtcdLease> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(lease) = EtcdLease::connect(&[etcd.endpoint.as_str()], "probe", owner, ttl).await
            && lease.holder().await.is_ok()
        {
            return lease;
        }
        assert!(Instant::now() < deadline, "etcd did not answer at {}", etcd.endpoint);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_etcd_lease_is_exclusive_renewed_and_expires_only_after_its_holder_died() {
    let Some(etcd) = etcd("an_etcd_lease_is_exclusive…") else { return };
    let ttl = Duration::from_secs(3);
    let a = lease(&etcd, "a", ttl).await;
    let b = lease(&etcd, "b", ttl).await;
    assert!(a.acquire().await.unwrap());
    assert!(!b.acquire().await.unwrap());
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("a"));
    // Renewed past several times to live.
    let renewed = async {
        let until = Instant::now() + ttl * 3;
        while Instant::now() < until {
            assert!(a.check(), "a stopped trusting a renewed lease");
            assert!(!b.acquire().await.unwrap(), "b took a renewed lease");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    renewed.await;
    // a's process dies: renewals stop, nothing is released.
    drop(a);
    let died = Instant::now();
    let taken = async {
        while !b.acquire().await.unwrap() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, taken).await.expect("b took the lease once it expired");
    // The last renewal was at most a third of the ttl before the death.
    assert!(died.elapsed() >= ttl - ttl / 3, "taken {:?} after the holder died", died.elapsed());
    assert!(b.check());
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("b"));
    assert!(b.release().await.unwrap());
    assert_eq!(b.holder().await.unwrap(), None);
    assert!(!b.check());
}

struct Probe {
    node: String,
    starts: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Actor for Probe {
    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        self.starts.lock().unwrap().push((self.node.clone(), Instant::now()));
        Ok(())
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = String, remote = "test.Where")]
struct Where;

impl Handler<Where> for Probe {
    async fn handle(&mut self, _: Where, _ctx: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl RemoteActor for Probe {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Where>();
    }
}

type Starts = Arc<Mutex<Vec<(String, Instant)>>>;

async fn member(
    net: &MemoryNetwork,
    etcd: &Etcd,
    id: &str,
    seeds: &[&str],
    ttl: Duration,
    starts: &Starts,
) -> (Cluster, Singleton<Probe>) {
    let node = Cluster::builder(Node::builder(id).transport(net.transport()).listen(id))
        .seeds(seeds.iter().copied())
        .start()
        .await
        .unwrap();
    node.joined().await.unwrap();
    let lease: Arc<dyn Lease> = lease(etcd, id, ttl).await;
    let (me, starts) = (id.to_owned(), starts.clone());
    let singleton = node
        .singleton("probe", move || Probe { node: me.clone(), starts: starts.clone() })
        .lease(lease)
        .start()
        .unwrap();
    (node, singleton)
}

async fn runs_on(singleton: &Singleton<Probe>, node: &str) {
    let wait = async {
        while singleton.ask_timeout(Where, Duration::from_secs(1)).await.ok().as_deref() != Some(node) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("the singleton never answered from {node}"));
}

/// The owner runs on a runtime of its own, shut down at once to kill it
/// as a process dies: its tasks (node, singleton, lease renewals) vanish
/// without a goodbye.
#[test]
fn a_singleton_fenced_by_an_etcd_lease_moves_only_after_the_dead_owners_lease_expired() {
    let Some(etcd) = etcd("a_singleton_fenced_by_an_etcd_lease…") else { return };
    let rt = |_| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (doomed, survivors) = (rt(1), rt(2));
    let net = MemoryNetwork::new();
    let ttl = Duration::from_secs(12);
    let starts = Starts::default();
    let _n1 = doomed.block_on(member(&net, &etcd, "n1", &[], ttl, &starts));
    let (n2, n3) = survivors.block_on(async {
        let n2 = member(&net, &etcd, "n2", &["n1"], ttl, &starts).await;
        let n3 = member(&net, &etcd, "n3", &["n1"], ttl, &starts).await;
        runs_on(&n3.1, "n1").await;
        (n2, n3)
    });
    doomed.shutdown_background();
    let killed = Instant::now();
    survivors.block_on(async {
        runs_on(&n3.1, "n2").await;
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        let took = starts[1].1.duration_since(killed);
        eprintln!("owner killed -> singleton running on n2: {took:?} (lease ttl {ttl:?})");
        assert!(took >= ttl - ttl / 3, "n2 started {took:?} after the kill, before n1's lease could expire");
        n2.0.shutdown().await;
        n3.0.shutdown().await;
    });
}
