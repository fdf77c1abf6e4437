//! # bank: accounts as sharded entities, transfers that survive a lost node
//!
//! Every node runs the accounts' sharding: account `acct-N` is an entity,
//! activated on the member that owns its shard, at most one copy in the
//! cluster. A node started with `--transfers N` runs N transfers between
//! `--accounts` accounts by ask (debit, then credit; each idempotent by
//! transfer id, so a transfer asked again after a timeout or a lost node is
//! applied once), then audits: the sum of every balance must equal what the
//! accounts opened with, and every account must be active on exactly one
//! node. Accounts keep their state in a ledger directory shared by the
//! nodes of this machine (it stands in for a database).
//!
//! On three terminals (QUIC with mutual TLS on loopback; without `--cert`,
//! a development CA shared through the temp directory issues certificates):
//!
//! ```sh
//! cargo run --example bank -- --node a --listen 127.0.0.1:7101
//! cargo run --example bank -- --node b --listen 127.0.0.1:7102 --seeds 127.0.0.1:7101
//! cargo run --example bank -- --node c --listen 127.0.0.1:7103 --seeds 127.0.0.1:7101 --transfers 5000 --members 3
//! ```
//!
//! While node c runs the transfers, `kill -9` node b: its accounts are
//! activated again on a and c once b is downed and the removal margin has
//! passed (about 12 s with the defaults), the transfers waiting on them
//! carry on, and the audit still balances. Nodes without `--transfers`
//! serve until Ctrl-C. `cargo run --example cluster_demo` runs this (step 5).

mod app;
#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

/// Accounts as sharded entities; transfers that survive a lost node.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// The ledger directory, shared by the nodes (default: in the temp
    /// directory, named after the cluster).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Run this many transfers, audit, print the report and exit.
    #[arg(long)]
    transfers: Option<u64>,
    /// The number of accounts.
    #[arg(long, default_value_t = 200)]
    accounts: u64,
    /// With `--transfers`: wait for this many members first (this node included).
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Draws the transfers' pairs and amounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    common::init_logging(&cli.node);
    let node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    let ledger = cli.ledger.clone().unwrap_or_else(|| app::default_ledger(&cli.node.cluster));
    let bank = app::start(&node, &ledger)?;
    println!("[{}] bank up, ledger {}, listening on {}", node.id(), ledger.display(), node.addr());
    let Some(transfers) = cli.transfers else {
        common::stop_requested().await;
        node.shutdown().await;
        return Ok(());
    };
    common::wait_for_members(&node, cli.members, Duration::from_secs(30)).await?;
    // A fresh ledger for this run's transfer ids.
    let first = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64 * 1000;
    let before = app::audit(&node, &bank, cli.accounts).await?;
    let started = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let report =
        app::run_transfers(&bank, first..first + transfers, cli.accounts, cli.concurrency, cli.seed, done).await?;
    println!(
        "[{}] {} transfers in {:.2?}: {} moved money, {} refused for want of funds, {} asks repeated after a timeout or a lost node",
        node.id(),
        report.transfers,
        started.elapsed(),
        report.moved,
        report.refused,
        report.retries
    );
    let after = app::audit(&node, &bank, cli.accounts).await?;
    println!("[{}] total balance {} before, {} after", node.id(), before.total, after.total);
    for (at, n) in &after.per_node {
        println!("[{}]   {n} accounts active on {at}", node.id());
    }
    let not_once = after.not_once();
    node.shutdown().await;
    if after.total != before.total {
        return Err("the total balance changed".into());
    }
    if !not_once.is_empty() {
        return Err(format!("accounts not active exactly once: {not_once:?}").into());
    }
    println!("[{}] balanced; every account active exactly once", node.id());
    Ok(())
}
