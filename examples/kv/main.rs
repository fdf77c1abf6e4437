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
//!
//! Partitions are decided by keep-majority (`--split-brain` to change): a
//! node on the minority side downs itself and refuses writes, saying why;
//! it then starts again as a new member, rejoins once the partition heals,
//! and hands the keys it held back to their owners (a later write of a key
//! always wins over an earlier one).

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
    let cli = Cli::parse();
    common::init_logging(&cli.node);
    let mut node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    let mut shard = app::serve(&node)?;
    let mut known = common::Known::watch(&node);
    let mut events = node.subscribe();
    let mut rejoining: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Rejoined>>>> = None;
    println!("[{}] kv shard up, listening on {}", node.id(), node.addr());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop = common::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = events.recv(), if rejoining.is_none() => match event {
                Some(footlight::ClusterEvent::SelfDowned { reason }) => {
                    println!("[{}] on the losing side of a partition ({reason}): writes are refused; starting again as a new member, to rejoin once the partition heals", node.id());
                    // Rejoin through the other side (those this node could
                    // not reach): its own side is downing itself too.
                    let seeds = known.other_side();
                    rejoining = Some(Box::pin(rejoin(cli.node.clone(), node.clone(), shard.clone(), seeds)));
                }
                Some(_) => {}
                None => break,
            },
            rejoined = async {
                match rejoining.as_mut() {
                    Some(rejoin) => rejoin.await,
                    None => std::future::pending().await,
                }
            } => {
                rejoining = None;
                match rejoined {
                    Ok((new_node, new_shard, keys)) => {
                        node = new_node;
                        shard = new_shard;
                        common::log_cluster_events(&node);
                        known = common::Known::watch(&node);
                        events = node.subscribe();
                        println!("[{}] rejoined as a new member; {keys} keys handed back to their owners", node.id());
                    }
                    Err(e) => {
                        println!("[{}] could not start again: {e}", node.id());
                        break;
                    }
                }
            }
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
                            let views = if node.is_converged() { "converged" } else { "not converged yet" };
                            println!("{} (views {views})", ids.join(", "));
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

type Rejoined = Result<(footlight::Cluster, footlight::ActorRef<app::Shard>, usize), Box<dyn std::error::Error>>;

/// Starts this node again as a new member through `seeds`, and hands the
/// old shard's keys to their owners.
async fn rejoin(
    args: common::NodeArgs,
    old: footlight::Cluster,
    shard: footlight::ActorRef<app::Shard>,
    seeds: Vec<String>,
) -> Rejoined {
    let data = shard.ask(app::Dump).await.unwrap_or_default();
    let keys = data.len();
    let node = common::start_again(args, old, seeds).await?;
    let shard = app::resume(&node, data)?;
    Ok((node, shard, keys))
}
