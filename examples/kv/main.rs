//! # kv: a partitioned, replicated key-value store
//!
//! Keys are hashed to owner shards across the members (rendezvous hashing
//! over the member list, two copies of each key); `put` and `get` work from
//! any node; ownership moves when members join, leave or die. Each node
//! reads a line protocol on stdin:
//!
//! ```text
//! put KEY VALUE     store (prints how many copies were written)
//! get KEY           read
//! owners KEY        which members own KEY
//! counts            keys held per member
//! members           the cluster as this node sees it
//! quit              hand this node's keys over and leave
//! ```
//!
//! On three terminals (QUIC with mutual TLS on loopback; without `--cert`, a
//! development CA shared through the temp directory issues certificates):
//!
//! ```sh
//! cargo run --example kv -- --node a --listen 127.0.0.1:7001
//! cargo run --example kv -- --node b --listen 127.0.0.1:7002 --seeds 127.0.0.1:7001
//! cargo run --example kv -- --node c --listen 127.0.0.1:7003 --seeds 127.0.0.1:7001
//! ```
//!
//! `put x 1` on one, `get x` on another; `quit` one node (or `kill -9` it)
//! and read every key back from the others. With stdin closed (under a
//! launcher or in a container) a node keeps serving until SIGTERM.

mod app;
#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A partitioned, replicated key-value store.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging();
    let cli = Cli::parse();
    let node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    let shard = app::serve(&node)?;
    println!("[{}] kv shard up, listening on {}", node.id(), node.addr());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop = common::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            input = stdin.next_line(), if stdin_open => match input {
                Ok(Some(line)) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["put", key, value @ ..] if !value.is_empty() => match app::put(&node, key, &value.join(" ")).await {
                            Ok(copies) => println!("ok ({copies} copies)"),
                            Err(e) => println!("error: {e}"),
                        },
                        ["get", key] => match app::get(&node, key).await {
                            Ok(Some(value)) => println!("{key} = {value}"),
                            Ok(None) => println!("{key} not found"),
                            Err(e) => println!("error: {e}"),
                        },
                        ["owners", key] => {
                            let members: Vec<String> = node.members().into_iter().map(|m| m.id).collect();
                            println!("{}", app::owners(&members, key, app::REPLICAS).join(", "));
                        }
                        ["counts"] => {
                            for (member, count) in app::counts(&node).await {
                                println!("{member}: {}", count.map_or("unreachable".to_owned(), |c| c.to_string()));
                            }
                        }
                        ["members"] => {
                            let ids: Vec<String> = node.members().into_iter().map(|m| m.id).collect();
                            println!("{}", ids.join(", "));
                        }
                        ["quit"] => break,
                        [] => {}
                        _ => println!("commands: put KEY VALUE | get KEY | owners KEY | counts | members | quit"),
                    }
                }
                _ => stdin_open = false,
            },
            () = &mut stop => break,
        }
    }
    println!("[{}] handing keys over and leaving", node.id());
    app::leave(&node, &shard).await;
    Ok(())
}
