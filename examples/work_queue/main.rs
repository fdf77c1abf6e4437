//! # work_queue: a supervised worker pool spread over nodes, on reliable delivery
//!
//! Every node runs a supervised pool of workers, each a reliable worker of
//! the group `jobs`. A node started with `--jobs N` hands N jobs to them
//! through a work producer: each job to one worker with room in its window.
//! Every 50th job crashes the first worker of a node that runs it: the
//! supervisor restarts the worker and the job, not acknowledged, comes
//! again. Kill a node while jobs run: once the cluster declares it down
//! (about 3.5 s), the jobs its workers had not acknowledged go to the other
//! workers; one that had already run there runs again with the same key.
//! No job is resubmitted by hand. The final report counts distinct completed
//! jobs (it must equal N), jobs run twice, crashes and reassignments.
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
    let me = node.id().to_owned();
    let report = app::run_jobs(&node, first..first + jobs, cli.job_millis, move |done| {
        if done % step == 0 {
            println!("[{me}] {done}/{jobs} jobs done");
        }
    })
    .await?;
    println!(
        "[{}] {} of {} jobs completed in {:.2?} (latency p50 {:.2?}, p99 {:.2?}); {} reported twice after a node loss \
         (same key), {} went to another worker when theirs was lost; {} crashed a worker and came again",
        node.id(),
        report.completed,
        report.submitted,
        started.elapsed(),
        report.latency(0.5),
        report.latency(0.99),
        report.duplicates(),
        report.reassigned,
        report.retried_after_panic
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
