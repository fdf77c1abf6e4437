//! # cluster_demo: the flagship demo
//!
//! One command starts a three-node cluster as three OS processes on
//! 127.0.0.1, over QUIC with mutual TLS (a development CA made for this run),
//! and runs the `work_queue` service through a script:
//!
//! 1. the three nodes form a cluster (gossip membership) and their worker
//!    pools join one process group;
//! 2. jobs flow across all three nodes through reliable delivery's work
//!    pulling; poison jobs crash workers, which their supervisors restart,
//!    and the jobs, not acknowledged, come again;
//! 3. while a second batch runs, one node's process is killed with SIGKILL;
//!    the survivors declare it down, the jobs it had not acknowledged go to
//!    the other workers (nothing resubmits by hand), and the batch completes
//!    without losing a job;
//! 4. the killed node is started again: it rejoins as a new member (a new
//!    run) and takes work again;
//! 5. sharding: the `bank` example's accounts are entities spread over the
//!    three nodes; while transfers run, another node is killed with
//!    SIGKILL; its accounts are activated again on the survivors, and the
//!    audit finds the total balance unchanged and every account active on
//!    exactly one node;
//! 6. a summary with the figures.
//!
//! ```sh
//! cargo run --release --example cluster_demo
//! ```
//!
//! It exits 0 if every step behaved as promised, else non-zero with the
//! reason. This process is node `n1`; it starts `n2` and `n3` by running
//! itself with `--child`.

#[path = "work_queue/app.rs"]
mod app;
#[path = "bank/app.rs"]
mod bank;
#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use footlight::ClusterEvent;

const WORKERS: usize = 4;
const JOB_MILLIS: u64 = 5;
/// Transfers in flight at once (step 5).
const CONCURRENCY: usize = 32;
const CLUSTER: &str = "demo";

/// The flagship demo: a three-process cluster through a scripted scenario.
#[derive(Parser)]
struct Cli {}

/// How the demo runs its child nodes: `cluster_demo --child <node flags>`.
#[derive(Parser)]
struct ChildCli {
    /// Run as one of the demo's child nodes.
    #[arg(long)]
    child: bool,
    /// The bank's ledger directory.
    #[arg(long)]
    ledger: std::path::PathBuf,
    #[command(flatten)]
    node: common::NodeArgs,
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("--child") {
        let cli = ChildCli::parse();
        if let Err(e) = rt.block_on(child(cli.node, cli.ledger)) {
            eprintln!("child failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    Cli::parse();
    // Quiet logs: the demo narrates; RUST_LOG=info shows everything.
    common::init_logging_default("off");
    common::quiet_expected_panics("is poison");
    let outcome = rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), demo()).await });
    match outcome {
        Ok(Ok(())) => println!("\nall steps behaved as promised"),
        Ok(Err(e)) => {
            println!("\nFAILED: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            println!("\nFAILED: the demo did not finish within 2 minutes");
            std::process::exit(1);
        }
    }
}

/// A child node: a worker pool and the bank's accounts; prints
/// `READY <addr>` and membership changes; leaves when its stdin closes.
async fn child(args: common::NodeArgs, ledger: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let node = common::start(&args).await?;
    app::start_pool(&node, WORKERS);
    let _bank = bank::start(&node, &ledger)?;
    println!("READY {}", node.addr());
    let mut events = node.subscribe();
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    });
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ClusterEvent::MemberDown(m)) => println!("DOWN {} {}", m.id, unix_ms()),
                Some(_) => {}
                None => break,
            },
            _ = &mut stdin_closed => break,
        }
    }
    node.shutdown().await;
    Ok(())
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// A child node process and the lines it prints.
struct ChildNode {
    id: String,
    process: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildNode {
    fn spawn(id: &str, seed: &str, ca_dir: &std::path::Path) -> Result<ChildNode, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut process = Command::new(exe)
            .args(["--child", "--node", id, "--listen", "127.0.0.1:0", "--seeds", seed, "--cluster", CLUSTER])
            .arg("--dev-ca-dir")
            .arg(ca_dir)
            .arg("--ledger")
            .arg(ca_dir.join("ledger"))
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let child = ChildNode { id: id.to_owned(), process, lines };
        child.expect("READY", Duration::from_secs(30))?;
        Ok(child)
    }

    /// The first line starting with `prefix`, within `within`.
    fn expect(&self, prefix: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => return Err(format!("node {} did not say {prefix:?} within {within:?}", self.id)),
            }
        }
    }

    /// Asks the node to leave (closes its stdin) and waits for it to exit.
    fn stop(mut self) {
        drop(self.process.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn check(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.into()) }
}

async fn demo() -> Result<(), String> {
    let started = Instant::now();
    let ca_dir = std::env::temp_dir().join(format!("footlight-cluster-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(ca_dir.clone());
    let args = |id: &str, seeds: Vec<String>| common::NodeArgs {
        node: id.to_owned(),
        listen: "127.0.0.1:0".into(),
        seeds,
        advertise: None,
        cluster: CLUSTER.into(),
        cert: None,
        key: None,
        ca: None,
        dev_ca_dir: Some(ca_dir.clone()),
        split_brain: common::SplitBrain::default(),
        log_format: common::LogFormat::Text,
        ops: None,
    };
    println!("footlight cluster demo: three OS processes on 127.0.0.1, QUIC with mutual TLS\n");

    // 1. Form the cluster.
    let n1 = common::start(&args("n1", vec![])).await.map_err(|e| format!("n1 did not start: {e}"))?;
    app::start_pool(&n1, WORKERS);
    let bank = bank::start(&n1, &ca_dir.join("ledger")).map_err(|e| format!("n1's bank did not start: {e}"))?;
    let forming = Instant::now();
    let n2 = tokio::task::block_in_place(|| ChildNode::spawn("n2", n1.addr(), &ca_dir))?;
    let n3 = tokio::task::block_in_place(|| ChildNode::spawn("n3", n1.addr(), &ca_dir))?;
    common::wait_for_members(&n1, 3, Duration::from_secs(20)).await?;
    let formed = forming.elapsed();
    check(app::wait_for_workers(&n1, 3 * WORKERS, Duration::from_secs(10)).await, "the worker group did not fill")?;
    println!(
        "1. n1 (this process, {}), n2 and n3 (child processes) formed a cluster in {}; {} workers joined the group",
        n1.addr(),
        ms(formed),
        3 * WORKERS
    );

    // 2. Traffic across the nodes.
    let report = app::run_jobs(&n1, 0..600, JOB_MILLIS, |_| {}).await?;
    check(report.completed == 600, format!("batch 1 completed {} of 600", report.completed))?;
    check(report.by_node.len() == 3, format!("batch 1 ran on {:?} only", report.by_node.keys()))?;
    check(report.retried_after_panic >= 12, "poison jobs did not crash their workers")?;
    check(report.duplicates() == 0, format!("{} jobs ran twice with no node lost", report.duplicates()))?;
    println!(
        "2. 600 jobs handed out from n1 by work pulling ran on {}, each once; {} crashed their worker and came \
         again after its restart; latency p50 {}, p99 {}",
        report.by_node.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "),
        report.retried_after_panic,
        ms(report.latency(0.5)),
        ms(report.latency(0.99))
    );
    let mut handled = report.handled;

    // 3. Kill n3 while a batch runs.
    let mut down_events = n1.subscribe();
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let batch = {
        let (n1, done) = (n1.clone(), done.clone());
        tokio::spawn(async move {
            let progress = move |n| done.store(n, Ordering::Relaxed);
            app::run_jobs(&n1, 1000..2500, JOB_MILLIS, progress).await
        })
    };
    while done.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut n3 = n3;
    let n3_pid = n3.process.id();
    let n3_run = n1.members().into_iter().find(|m| m.id == "n3").map(|m| m.run);
    n3.process.kill().map_err(|e| format!("cannot kill n3: {e}"))?;
    let killed = Instant::now();
    let killed_unix = unix_ms();
    let at_kill = done.load(Ordering::Relaxed);
    let wait_down = async {
        loop {
            if let Some(ClusterEvent::MemberDown(m)) = down_events.recv().await
                && m.id == "n3"
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait_down)
        .await
        .map_err(|_| "n1 did not declare n3 down within 5 s".to_owned())?;
    let detected_n1 = killed.elapsed();
    let line = tokio::task::block_in_place(|| n2.expect("DOWN n3", Duration::from_secs(5)))?;
    let n2_unix: u128 = line.rsplit(' ').next().and_then(|t| t.parse().ok()).ok_or("bad line from n2")?;
    let detected_n2 = Duration::from_millis(u64::try_from(n2_unix.saturating_sub(killed_unix)).unwrap_or(u64::MAX));
    let report = batch.await.map_err(|e| format!("batch 2 task: {e}"))??;
    check(report.completed == 1500, format!("batch 2 completed {} of 1500: jobs were lost", report.completed))?;
    println!(
        "3. n3 (pid {n3_pid}) killed with SIGKILL after {at_kill} of 1500 jobs; declared down by n1 after {} and by n2 \
         after {}; the {} jobs it had not acknowledged went to n1's and n2's workers, {} of them were reported twice \
         (same key); 1500 of 1500 completed",
        ms(detected_n1),
        ms(detected_n2),
        report.reassigned,
        report.duplicates()
    );
    handled += report.handled;
    let reassigned = report.reassigned;
    let latency = (report.latency(0.5), report.latency(0.99));

    // 4. n3 comes back.
    let rejoining = Instant::now();
    let n3 = tokio::task::block_in_place(|| ChildNode::spawn("n3", n1.addr(), &ca_dir))?;
    common::wait_for_members(&n1, 3, Duration::from_secs(20)).await?;
    let rejoined = rejoining.elapsed();
    let new_run = n1.members().into_iter().find(|m| m.id == "n3").map(|m| m.run);
    check(new_run.is_some() && new_run != n3_run, "n3 came back with its old run")?;
    check(app::wait_for_workers(&n1, 3 * WORKERS, Duration::from_secs(10)).await, "n3's workers did not rejoin")?;
    let report = app::run_jobs(&n1, 5000..5300, JOB_MILLIS, |_| {}).await?;
    check(report.completed == 300, format!("batch 3 completed {} of 300", report.completed))?;
    let on_n3 = report.by_node.get("n3").copied().unwrap_or(0);
    check(on_n3 > 0, "the restarted n3 took no work")?;
    println!(
        "4. n3 restarted as a new member (new run) and rejoined in {}; of 300 more jobs it ran {on_n3}",
        ms(rejoined)
    );
    handled += report.handled;

    // 5. Sharding: accounts as entities; kill n2 while transfers run.
    const ACCOUNTS: u64 = 200;
    const TRANSFERS: u64 = 3000;
    let before = bank::audit(&n1, &bank, ACCOUNTS).await?;
    check(before.total == ACCOUNTS * bank::OPENING_BALANCE, format!("the accounts opened with {}", before.total))?;
    check(before.not_once().is_empty(), format!("accounts not active exactly once: {:?}", before.not_once()))?;
    let spread = before.per_node.clone();
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let transfers = {
        let (bank, done) = (bank.clone(), done.clone());
        tokio::spawn(async move { bank::run_transfers(&bank, 0..TRANSFERS, ACCOUNTS, CONCURRENCY, 5, done).await })
    };
    while done.load(Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut n2 = n2;
    let at_kill = done.load(Ordering::Relaxed);
    n2.process.kill().map_err(|e| format!("cannot kill n2: {e}"))?;
    let killed = Instant::now();
    let report = transfers.await.map_err(|e| format!("transfers task: {e}"))??;
    let took = killed.elapsed();
    let after = bank::audit(&n1, &bank, ACCOUNTS).await?;
    check(after.total == before.total, format!("the total balance went from {} to {}", before.total, after.total))?;
    check(after.not_once().is_empty(), format!("accounts not active exactly once: {:?}", after.not_once()))?;
    check(after.answered_from.values().all(|n| n != "n2"), "an account still answered from the killed n2")?;
    println!(
        "5. {ACCOUNTS} accounts as sharded entities ({}); n2 killed with SIGKILL after {at_kill} of {TRANSFERS} \
         transfers; its accounts were activated again on n1 and n3, and the rest ran in {} ({} asks repeated \
         after a timeout); total balance {} before and after; every account active on exactly one node ({})",
        spread.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "),
        ms(took),
        report.retries,
        after.total,
        after.per_node.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "),
    );

    // 6. Summary; everyone leaves.
    let gossip = n1.gossip_stats();
    tokio::task::block_in_place(|| {
        drop(n2);
        n3.stop();
    });
    n1.shutdown().await;
    println!("6. summary:");
    println!("   jobs submitted / completed      2400 / 2400 (none lost)");
    println!("   job runs / after a node loss    {handled} / {reassigned} reassigned, none resubmitted by hand");
    println!("   job latency, batch with a kill  p50 {}, p99 {}", ms(latency.0), ms(latency.1));
    println!("   kill -> down (budget 5 s)       n1 {}, n2 {}", ms(detected_n1), ms(detected_n2));
    println!("   transfers / balance             {TRANSFERS} with a kill / {} conserved", after.total);
    println!("   gossip at n1                    {} packets, {} bytes sent", gossip.packets_sent, gossip.bytes_sent);
    println!("   wall time                       {}", ms(started.elapsed()));
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Deletes the run's development CA directory at the end.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
