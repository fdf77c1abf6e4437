//! # ping_pong: two (or more) nodes, remote ask and tell, latency printed
//!
//! Every node runs a `Ponger` actor registered cluster-wide as
//! `ponger@<node>`. A node started with `--ping N` looks up every other
//! member's ponger, sends it 100 one-way notes and then N pings (asks), and
//! prints the round-trip p50/p99; the pong's note count proves the notes
//! arrived before the pings (FIFO per sender and receiver).
//!
//! On two terminals (QUIC with mutual TLS on loopback; without `--cert`, a
//! development CA shared through the temp directory issues certificates):
//!
//! ```sh
//! cargo run --example ping_pong -- --node a --listen 127.0.0.1:7001
//! cargo run --example ping_pong -- --node b --listen 127.0.0.1:7002 --seeds 127.0.0.1:7001 --ping 1000
//! ```
//!
//! A third terminal can join as well (`--node c --listen 127.0.0.1:7003
//! --seeds 127.0.0.1:7001 --ping 1000`): it pings both. Nodes without
//! `--ping` serve until Ctrl-C.

mod app;
#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser;

/// Two nodes, remote ask and tell, latency printed.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// Ping every other member this many times, print the latency, and exit.
    #[arg(long)]
    ping: Option<usize>,
    /// With `--ping`: wait for this many members (this node included).
    #[arg(long, default_value_t = 2)]
    members: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    common::init_logging(&cli.node);
    let node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    app::serve(&node)?;
    println!("[{}] listening on {}", node.id(), node.addr());
    let Some(pings) = cli.ping else {
        common::stop_requested().await;
        node.shutdown().await;
        return Ok(());
    };
    common::wait_for_members(&node, cli.members, Duration::from_secs(30)).await?;
    for member in node.members().into_iter().filter(|m| m.id != node.id()) {
        if !app::wait_for_name(&node, &app::name_of(&member.id), Duration::from_secs(10)).await {
            return Err(format!("{}'s ponger is not registered", member.id).into());
        }
        let latency = app::ping(&node, &member.id, pings, 100).await?;
        println!(
            "[{}] {} pings to {}: round trip p50 {:?}, p99 {:?}; it had all {} notes first",
            node.id(),
            latency.count,
            latency.peer,
            latency.p50,
            latency.p99,
            latency.notes_seen
        );
    }
    node.shutdown().await;
    Ok(())
}
