//! A peer driven by hand, for tests of what a node does with frames a
//! well-behaved node would not send: the protocol's own `Session` over a
//! raw in-memory connection, with no node behind it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use footlight::remote::proto::frame::Target;
use footlight::remote::proto::{Event, Session, SessionConfig};
use footlight::remote::transport::mem::MemoryNetwork;
use footlight::remote::transport::{Connection, Transport};

/// A peer driven by hand: a `Session` over a raw in-memory connection.
pub struct RawPeer {
    pub conn: Connection,
    pub session: Session,
    pub events: Vec<Event>,
}

impl RawPeer {
    pub async fn connect(net: &MemoryNetwork, to: &str, me: &str) -> RawPeer {
        let conn = net.transport().connect(to).await.unwrap();
        let session = Session::new(SessionConfig::new("footlight", me, 7), Instant::now());
        let mut peer = RawPeer { conn, session, events: Vec::new() };
        peer.until(|e| matches!(e, Event::Established(_))).await;
        peer
    }

    /// Sends what the session has queued.
    pub async fn flush(&mut self) {
        while let Some(bytes) = self.session.poll_transmit() {
            self.conn.send.write_all(&bytes).await.unwrap();
        }
    }

    /// Flushes, then reads until an event matching `done` arrives.
    pub async fn until(&mut self, done: impl Fn(&Event) -> bool) -> &Event {
        let wait = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                self.flush().await;
                if let Some(i) = self.events.iter().position(&done) {
                    return i;
                }
                let n = self.conn.recv.read(&mut buf).await.unwrap().expect("the node closed the connection");
                self.session.handle_input(Instant::now(), &buf[..n]);
                while let Some(e) = self.session.poll_event() {
                    self.events.push(e);
                }
            }
        };
        let i = tokio::time::timeout(Duration::from_secs(10), wait).await.expect("event in time");
        &self.events[i]
    }

    /// Looks up `name` on the node: its handle. The ask's reply also shows
    /// that every frame sent before it was handled.
    pub async fn lookup(&mut self, name: &str) -> u64 {
        self.lookup_reply(name).await.id
    }

    /// Looks up `name` on the node: the whole answer.
    pub async fn lookup_reply(&mut self, name: &str) -> Found {
        let payload = footlight::remote::codec::encode(&name).unwrap();
        let id = self
            .session
            .send_ask(
                Instant::now(),
                Target::name("$node"),
                None,
                "footlight.Lookup".into(),
                payload,
                Duration::from_secs(5),
                None,
            )
            .unwrap();
        let reply = self.until(|e| matches!(e, Event::Reply { id: r, .. } if *r == id)).await;
        let Event::Reply { payload, .. } = reply else { unreachable!() };
        footlight::remote::codec::decode::<Found>(payload).unwrap()
    }
}

/// A `footlight.Lookup` answer (PROTOCOL.md).
#[derive(Debug, serde::Deserialize)]
pub struct Found {
    pub id: u64,
    pub type_name: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub run: Option<u64>,
    #[serde(default)]
    pub addr: Option<String>,
}
