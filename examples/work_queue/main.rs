//! # work_queue: a supervised worker pool spread over nodes
//!
//! Every node runs a supervised pool of workers, all in the process group
//! `workers`. A node started with `--jobs N` dispatches N jobs over the whole
//! group. Every 50th job crashes its worker on the first try: the supervisor
//! restarts the worker in place and the job is retried. Kill a node while
//! jobs run: once the cluster declares it down (about 3.5 s), its jobs fail
//! with `NodeDown` and are resubmitted elsewhere. The final report counts
//! distinct completed jobs: it must equal N.
//!
//! On three terminals (QUIC with mutual TLS on loopback; without `--cert`, a
//! development CA shared through the temp directory issues certificates):
//!
//! ```sh
//! cargo run --example work_queue -- --node a --listen 127.0.0.1:7001
//! cargo run --example work_queue -- --node b --listen 127.0.0.1:7002 --seeds 127.0.0.1:7001
//! cargo run --example work_queue -- --node c --listen 127.0.0.1:7003 --seeds 127.0.0.1:7001 --jobs 5000 --members 3
//! ```
//!
//! While node c works through the jobs, Ctrl-C (or `kill -9`) node b; the
//! report still says 5000 of 5000. Nodes without `--jobs` serve until
//! Ctrl-C. Job ids come from a cluster singleton (the dispenser, on the
//! oldest member): start `--jobs` on several nodes and no two dispatch the
//! same job.

mod app;
#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clap::Parser;

/// A supervised worker pool spread over nodes.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// Workers on this node.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Dispatch this many jobs over the cluster, print the report, and exit.
    #[arg(long)]
    jobs: Option<u64>,
    /// With `--jobs`: wait for this many members first (this node included).
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// How long each job takes, in milliseconds.
    #[arg(long, default_value_t = 5)]
    job_millis: u64,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::quiet_expected_panics("is poison");
    let cli = Cli::parse();
    common::init_logging(&cli.node);
    let node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    app::start_pool(&node, cli.workers);
    let dispenser = app::dispenser(&node)?;
    println!("[{}] {} workers up, listening on {}", node.id(), cli.workers, node.addr());
    let Some(jobs) = cli.jobs else {
        common::stop_requested().await;
        node.shutdown().await;
        return Ok(());
    };
    common::wait_for_members(&node, cli.members, Duration::from_secs(30)).await?;
    if !app::wait_for_workers(&node, cli.workers * cli.members, Duration::from_secs(10)).await {
        return Err("the workers of every member did not show up in the group".into());
    }
    let (first, from) = dispenser.ask(app::Reserve(jobs)).await?;
    println!("[{}] job ids {first}..{} reserved from the dispenser singleton on {from}", node.id(), first + jobs);
    let started = Instant::now();
    let step = (jobs / 10).max(1);
    let patience = app::default_patience(cli.job_millis);
    let report = app::run_jobs(&node, first..first + jobs, cli.concurrency, cli.job_millis, patience, |done| {
        if done % step == 0 {
            println!("[{}] {done}/{jobs} jobs done", node.id());
        }
    })
    .await?;
    println!(
        "[{}] {} of {} jobs completed in {:.2?} (latency p50 {:.2?}, p99 {:.2?}); {} retried after a worker panic, {} resubmitted after a node loss",
        node.id(),
        report.completed,
        report.submitted,
        started.elapsed(),
        report.latency(0.5),
        report.latency(0.99),
        report.retried_after_panic,
        report.resubmitted_after_loss
    );
    for (by, count) in &report.by_node {
        println!("[{}]   {count} jobs ran on {by}", node.id());
    }
    node.shutdown().await;
    if report.completed != report.submitted {
        return Err("jobs were lost".into());
    }
    Ok(())
}
