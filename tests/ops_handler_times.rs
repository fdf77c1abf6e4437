//! Handler times, opt-in: with them on, `/metrics` shows the time spent in
//! each actor type's handlers. Its own test binary: the endpoint started
//! first in a process owns the process's metrics recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actor_ops::OpsServer;
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Actor)]
struct Timed;

struct Work;

impl Message for Work {
    type Reply = ();
}

impl Handler<Work> for Timed {
    async fn handle(&mut self, _: Work, _ctx: &mut Context<Self>) {}
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_times_show_per_actor_type_once_turned_on() {
    let net = MemoryNetwork::new();
    let node = support::start(&net, "solo", &[]).await;
    let ops = OpsServer::start(&node, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let timed = node.system().spawn(Timed);
    timed.ask(Work).await.unwrap();
    assert!(
        !metrics(ops.local_addr()).await.contains("footlight_actor_handler_seconds_count{actor_type=\"Timed\"}"),
        "off by default"
    );
    footlight::stats::set_handler_times(true);
    for _ in 0..10 {
        timed.ask(Work).await.unwrap();
    }
    footlight::stats::set_handler_times(false);
    // A handler's time is recorded once it has returned, after its reply
    // went out: the last may come a moment after the ask's answer.
    let counted = "footlight_actor_handler_seconds_count{actor_type=\"Timed\"} 10";
    support::eventually(Duration::from_secs(30), || async { metrics(ops.local_addr()).await.contains(counted) }).await;
    drop(ops);
    node.shutdown().await;
}
