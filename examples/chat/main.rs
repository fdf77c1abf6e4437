//! # chat: a chat service over several nodes
//!
//! Rooms are actors, registered cluster-wide as `room:<name>` by the node of
//! the first user who joins; users are actors on their own node. Messages
//! fan out across nodes. A room watches its users: when a node dies, its
//! users leave the rooms and everyone else is told, and the others keep
//! chatting. If a room's own node dies, the next line said re-creates it.
//!
//! On three terminals (QUIC with mutual TLS on loopback; without `--cert`, a
//! development CA shared through the temp directory issues certificates):
//!
//! ```sh
//! cargo run --example chat -- --node a --listen 127.0.0.1:7001 --user alice
//! cargo run --example chat -- --node b --listen 127.0.0.1:7002 --seeds 127.0.0.1:7001 --user bob
//! cargo run --example chat -- --node c --listen 127.0.0.1:7003 --seeds 127.0.0.1:7001 --user carol
//! ```
//!
//! Then type `/join lobby` on each, and chat. Commands: `/join ROOM`,
//! `/leave`, `/who`, `/members`, `/quit`; any other line is said in the
//! current room. Kill one terminal (Ctrl-C, or `kill -9` its process) and
//! watch the others.
//!
//! Partitions are decided by keep-majority (`--split-brain` to change): a
//! node on the minority side downs itself and refuses its users' lines,
//! saying why, so no second room of one name grows there; it then starts
//! again as a new member, rejoins once the partition heals, and its user
//! re-enters the room they were in.

mod app;
#[path = "../common/mod.rs"]
mod common;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A chat service over several nodes.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: common::NodeArgs,
    /// Your name in the rooms (default: the node id).
    #[arg(long)]
    user: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    common::init_logging(&cli.node);
    let mut node = common::start(&cli.node).await?;
    common::log_cluster_events(&node);
    app::setup(&node)?;
    let user = cli.user.clone().unwrap_or_else(|| node.id().to_owned());
    let (mut client, mut lines) = app::Client::new(&node, &user);
    let mut known = common::Known::watch(&node);
    let mut events = node.subscribe();
    type Again =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<footlight::Cluster, Box<dyn std::error::Error>>>>>;
    let mut rejoining: Option<Again> = None;
    println!("[{}] {user} here, listening on {}; /join ROOM to start", node.id(), node.addr());
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop = common::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = events.recv(), if rejoining.is_none() => match event {
                Some(footlight::ClusterEvent::SelfDowned { reason }) => {
                    println!("[{}] on the losing side of a partition ({reason}): lines are refused; starting again as a new member, to rejoin once the partition heals", node.id());
                    rejoining = Some(Box::pin(common::start_again(cli.node.clone(), node.clone(), known.other_side())));
                }
                Some(_) => {}
                None => break,
            },
            again = async {
                match rejoining.as_mut() {
                    Some(again) => again.await,
                    None => std::future::pending().await,
                }
            } => {
                rejoining = None;
                let room = client.room_name();
                match again {
                    Ok(new_node) => {
                        node = new_node;
                        common::log_cluster_events(&node);
                        app::setup(&node)?;
                        (client, lines) = app::Client::new(&node, &user);
                        known = common::Known::watch(&node);
                        events = node.subscribe();
                        println!("[{}] rejoined as a new member", node.id());
                        if let Some(room) = room
                            && let Err(e) = client.join(&room).await
                        {
                            println!("! {e}");
                        }
                    }
                    Err(e) => {
                        println!("[{}] could not start again: {e}", node.id());
                        break;
                    }
                }
            }
            // While it starts again, the old node's user is gone.
            line = lines.recv(), if rejoining.is_none() => match line {
                Some(line) => println!("{line}"),
                None => break,
            },
            input = stdin.next_line(), if stdin_open => match input {
                Ok(Some(input)) => {
                    if let Err(e) = command(&node, &mut client, input.trim()).await {
                        if e.to_string() == "quit" {
                            break;
                        }
                        println!("! {e}");
                    }
                }
                // No terminal (a launcher, a container): keep serving.
                _ => stdin_open = false,
            },
            () = &mut stop => break,
        }
    }
    client.leave().await;
    node.shutdown().await;
    Ok(())
}

async fn command(
    node: &footlight::Cluster,
    client: &mut app::Client,
    input: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut words = input.splitn(2, ' ');
    match (words.next().unwrap_or_default(), words.next()) {
        ("", _) => Ok(()),
        ("/join", Some(room)) => client.join(room.trim()).await,
        ("/leave", _) => {
            client.leave().await;
            Ok(())
        }
        ("/who", _) => {
            println!("in the room: {}", client.who().await?.join(", "));
            Ok(())
        }
        ("/members", _) => {
            let ids: Vec<String> = node.members().into_iter().map(|m| m.id).collect();
            println!("cluster members: {}", ids.join(", "));
            Ok(())
        }
        ("/quit", _) => Err("quit".into()),
        (word, _) if word.starts_with('/') => Err("commands: /join ROOM, /leave, /who, /members, /quit".into()),
        _ => client.say(input).await,
    }
}
