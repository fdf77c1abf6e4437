//! Remote benchmarks: two processes on 127.0.0.1, QUIC with mutual TLS, each
//! on a 2-worker Tokio runtime; beside a baseline in the same run that moves
//! 16-byte messages over one bare QUIC bidirectional stream set up by the same
//! transport (same TLS, same quinn settings, no protocol, no actors).
//!
//! Run: `cargo bench --bench remote` (add `-- --quick` for a tenth of the work,
//! `-- --only rtt` or `-- --only oneway` for one part, `-- --ops rtt N` or
//! `-- --ops rtt-raw N` for N round trips and nothing else (an instruction
//! count, see `scripts/instructions.sh`), `-- --tells N` to set
//! the one-way count, `-- --outside` to drive the load from the main thread
//! instead of a task on a worker).
//!
//! The benchmark re-executes itself as the server process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use footlight::prelude::*;
use footlight::remote::transport::quic::Quic;
use footlight::remote::transport::tls::{DevCa, Tls};
use footlight::remote::transport::{Connection, Transport};

const ROLE: &str = "FOOTLIGHT_BENCH_ROLE";

#[derive(Actor, Default)]
struct Sink {
    count: u64,
}

/// About 16 bytes on the wire as payload.
#[derive(Message, Serialize, Deserialize)]
#[message(remote = "bench.Data")]
struct Data(u64, u32);

impl Handler<Data> for Sink {
    async fn handle(&mut self, _: Data, _ctx: &mut Context<Self>) {
        self.count += 1;
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "bench.Count")]
struct Count;

impl Handler<Count> for Sink {
    async fn handle(&mut self, _: Count, _ctx: &mut Context<Self>) -> u64 {
        std::mem::take(&mut self.count)
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "bench.Ping")]
struct Ping(u64);

impl Handler<Ping> for Sink {
    async fn handle(&mut self, Ping(n): Ping, _ctx: &mut Context<Self>) -> u64 {
        n
    }
}

impl RemoteActor for Sink {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Data>().add::<Count>().add::<Ping>();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn tls_from_env(node: &str) -> Tls {
    let dir = std::env::var("FOOTLIGHT_BENCH_CERTS").expect("cert dir");
    Tls::from_pem_files(format!("{dir}/{node}.pem"), format!("{dir}/{node}.key"), format!("{dir}/ca.pem")).expect("tls")
}

/// The server process: a node with a `Sink` named "sink", and a bare-stream
/// endpoint that echoes 16-byte messages and acknowledges counts.
fn server() {
    runtime().block_on(async {
        let node = Cluster::builder(
            Node::builder("server").transport(Quic::new(tls_from_env("server"))).listen("127.0.0.1:0"),
        )
        .start()
        .await
        .unwrap();
        node.spawn_named("sink", Sink::default()).unwrap();
        let raw = Quic::new(tls_from_env("server"));
        let mut listener = raw.listen("127.0.0.1:0").await.unwrap();
        println!("{} {}", node.addr(), listener.local_addr());
        tokio::spawn(async move {
            while let Ok(conn) = listener.accept().await {
                tokio::spawn(raw_server(conn));
            }
        });
        // Run until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await
        .unwrap();
        node.shutdown().await;
    });
}

/// Bare stream protocol: 16-byte messages. First byte 1 = echo this message;
/// first byte 2 = count it; first byte 3 = reply with the count so far (8
/// bytes) and reset.
async fn raw_server(mut conn: Connection) {
    let mut buf: Vec<u8> = Vec::new();
    let mut count = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(Some(n)) = conn.recv.read(&mut chunk).await {
        buf.extend_from_slice(&chunk[..n]);
        let whole = buf.len() / 16 * 16;
        let mut out = Vec::new();
        for msg in buf[..whole].chunks_exact(16) {
            match msg[0] {
                1 => out.extend_from_slice(msg),
                2 => count += 1,
                _ => {
                    out.extend_from_slice(&count.to_be_bytes());
                    out.extend_from_slice(&[0; 8]);
                    count = 0;
                }
            }
        }
        buf.drain(..whole);
        if !out.is_empty() && conn.send.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn read_exact(conn: &mut Connection, buf: &mut Vec<u8>, n: usize) {
    let mut chunk = [0u8; 4096];
    while buf.len() < n {
        let got = conn.recv.read(&mut chunk).await.unwrap().expect("stream open");
        buf.extend_from_slice(&chunk[..got]);
    }
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn main() {
    if std::env::var_os(ROLE).is_some() {
        return server();
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (asks, mut tells) = if quick { (2_000usize, 100_000u64) } else { (20_000, 1_000_000) };
    // `--tells N` sets the one-way message count; `--only rtt|oneway` runs one part.
    if let Some(n) = args.iter().position(|a| a == "--tells").and_then(|i| args.get(i + 1)) {
        tells = n.parse().expect("--tells takes a count");
    }
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    // `--ops rtt N` (or `--ops rtt-raw N`) only does N round trips, for an
    // instruction count under callgrind (`scripts/instructions.sh`).
    let ops: Option<(String, u64)> = args.iter().position(|a| a == "--ops").map(|i| {
        let what = args.get(i + 1).cloned().expect("--ops takes rtt or rtt-raw, then a count");
        let n = args.get(i + 2).and_then(|n| n.parse().ok()).expect("--ops takes a count after the operation");
        (what, n)
    });
    let run = move |part: &str| only.as_deref().is_none_or(|o| o == part);

    let ca = DevCa::generate("footlight").unwrap();
    let dir = std::env::temp_dir().join(format!("footlight-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.ca_pem()).unwrap();
    for node in ["server", "client"] {
        let (cert, key) = ca.issue_pem(node).unwrap();
        std::fs::write(dir.join(format!("{node}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{node}.key")), key).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "server")
        .env("FOOTLIGHT_BENCH_CERTS", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut addrs = line.split_whitespace().map(str::to_owned);
    let (node_addr, raw_addr) = (addrs.next().unwrap(), addrs.next().unwrap());

    // The load is driven from a task on a worker, where actor code runs;
    // `--outside` drives it from the main thread through `block_on`, outside
    // the two workers (every wake-up of the driver then crosses threads, for
    // both sides alike).
    let outside = args.iter().any(|a| a == "--outside");
    let client = async move {
        let node = Cluster::builder(
            Node::builder("client").transport(Quic::new(tls_from_dir(&dir, "client"))).listen("127.0.0.1:0"),
        )
        .seeds([node_addr])
        .start()
        .await
        .unwrap();
        node.wait_for_peer("server").await.unwrap();
        let sink: ActorRef<Sink> = node.lookup("sink").await.unwrap();
        let raw = Quic::new(tls_from_dir(&dir, "client"));
        let mut conn = raw.connect(&raw_addr).await.unwrap();

        if let Some((what, n)) = &ops {
            let mut buf = Vec::new();
            for i in 0..*n {
                match what.as_str() {
                    "rtt" => assert_eq!(sink.ask(Ping(i)).await.unwrap(), i),
                    "rtt-raw" => {
                        let mut msg = [0u8; 16];
                        msg[0] = 1;
                        msg[8..].copy_from_slice(&i.to_be_bytes());
                        conn.send.write_all(&msg).await.unwrap();
                        read_exact(&mut conn, &mut buf, 16).await;
                        assert_eq!(&buf[..16], &msg);
                        buf.drain(..16);
                    }
                    other => panic!("--ops takes rtt or rtt-raw, not {other}"),
                }
            }
            node.shutdown().await;
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let place = if outside { "driven from the main thread (--outside)" } else { "driven from a task on a worker" };
        println!(
            "footlight remote benchmarks: two processes, QUIC + mutual TLS on 127.0.0.1, 2 workers each, {place}\n"
        );
        println!("{:<40} {:>14} {:>14} {:>8}", "scenario", "footlight", "bare stream", "ratio");

        // Round trips, interleaved in chunks so both see the same noise.
        let mut buf = Vec::new();
        if run("rtt") {
            let (mut ours, mut theirs) = (Vec::with_capacity(asks), Vec::with_capacity(asks));
            for _ in 0..(asks / 1000).max(1) {
                for i in 0..1000u64 {
                    let t = Instant::now();
                    let mut msg = [0u8; 16];
                    msg[0] = 1;
                    msg[8..].copy_from_slice(&i.to_be_bytes());
                    conn.send.write_all(&msg).await.unwrap();
                    read_exact(&mut conn, &mut buf, 16).await;
                    theirs.push(t.elapsed());
                    assert_eq!(&buf[..16], &msg);
                    buf.drain(..16);
                }
                for i in 0..1000u64 {
                    let t = Instant::now();
                    assert_eq!(sink.ask(Ping(i)).await.unwrap(), i);
                    ours.push(t.elapsed());
                }
            }
            ours.sort_unstable();
            theirs.sort_unstable();
            let (o50, t50) = (percentile(&ours, 50), percentile(&theirs, 50));
            let (o99, t99) = (percentile(&ours, 99), percentile(&theirs, 99));
            println!("{:<40} {:>11.1} us {:>11.1} us {:>7.2}x", "round trip p50", o50, t50, o50 / t50);
            println!("{:<40} {:>11.1} us {:>11.1} us {:>7.2}x", "round trip p99", o99, t99, o99 / t99);
        }
        if run("oneway") {
            // One-way throughput with a confirming ask / count reply.
            let t = Instant::now();
            for i in 0..tells {
                sink.tell(Data(i, 7)).await.unwrap();
            }
            let got = sink.ask(Count).timeout(Duration::from_secs(120)).await.unwrap();
            let ours = tells as f64 / t.elapsed().as_secs_f64();
            assert_eq!(got, tells, "every tell arrived");

            let t = Instant::now();
            let batch = 1024u64;
            let mut sent = 0;
            while sent < tells {
                let n = batch.min(tells - sent);
                let mut out = Vec::with_capacity(n as usize * 16);
                for _ in 0..n {
                    let mut msg = [0u8; 16];
                    msg[0] = 2;
                    out.extend_from_slice(&msg);
                }
                conn.send.write_all(&out).await.unwrap();
                sent += n;
            }
            let mut done = [0u8; 16];
            done[0] = 3;
            conn.send.write_all(&done).await.unwrap();
            buf.clear();
            read_exact(&mut conn, &mut buf, 16).await;
            let count = u64::from_be_bytes(buf[..8].try_into().unwrap());
            let theirs = tells as f64 / t.elapsed().as_secs_f64();
            assert_eq!(count, tells, "every bare message arrived");
            println!(
                "{:<40} {:>10.2} M/s {:>10.2} M/s {:>7.2}x",
                "one-way small messages (count confirmed)",
                ours / 1e6,
                theirs / 1e6,
                ours / theirs
            );
        }
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    };
    let rt = runtime();
    if outside {
        rt.block_on(client);
    } else {
        rt.block_on(async move { tokio::spawn(client).await.expect("benchmark driver") });
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

fn tls_from_dir(dir: &std::path::Path, node: &str) -> Tls {
    Tls::from_pem_files(dir.join(format!("{node}.pem")), dir.join(format!("{node}.key")), dir.join("ca.pem"))
        .expect("tls")
}
