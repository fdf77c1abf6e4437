//! Real QUIC on 127.0.0.1 with mutual TLS (generated dev certificates): two
//! nodes talk; peers without a valid certificate from the cluster CA, or whose
//! certificate names another node, never get through; an oversized frame
//! closes only its own connection; a peer that vanishes without goodbye is
//! declared lost within the detection budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use footlight::AskError;
use footlight::prelude::*;
use footlight::remote::transport::quic::{ALPN, Quic};
use footlight::remote::transport::tls::{DevCa, Tls};

#[derive(Actor)]
struct Echo;

#[derive(Message, Serialize, Deserialize)]
#[message(reply = String, remote = "test.Shout")]
struct Shout(String);

impl Handler<Shout> for Echo {
    async fn handle(&mut self, Shout(s): Shout, _ctx: &mut Context<Self>) -> String {
        s.to_uppercase()
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Hang")]
struct Hang;

impl Handler<Hang> for Echo {
    async fn handle(&mut self, _: Hang, _ctx: &mut Context<Self>) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

impl RemoteActor for Echo {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Shout>().add::<Hang>();
    }
}

async fn node(id: &str, tls: Tls, seeds: &[String]) -> Cluster {
    Cluster::builder(Node::builder(id).transport(Quic::new(tls)).listen("127.0.0.1:0"))
        .seeds(seeds.to_vec())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_over_quic_with_mutual_tls() {
    let ca = DevCa::generate("test").unwrap();
    let a = node("a", ca.issue("a").unwrap(), &[]).await;
    let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.wait_for_peer("a").await.unwrap();
    a.spawn_named("echo", Echo).unwrap();
    let echo: ActorRef<Echo> = b.lookup("echo").await.unwrap();
    assert_eq!(echo.ask(Shout("quic".into())).await.unwrap(), "QUIC");
    assert_eq!(a.peers(), ["b"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_certificate_never_get_through() {
    let ca = DevCa::generate("test").unwrap();
    let a = node("a", ca.issue("a").unwrap(), &[]).await;
    a.spawn_named("echo", Echo).unwrap();

    // Another cluster's CA.
    let rogue_ca = DevCa::generate("elsewhere").unwrap();
    let rogue = node("rogue", rogue_ca.issue("rogue").unwrap(), &[a.addr().to_owned()]).await;
    // A certificate from the right CA that names another node than the
    // Hello claims. (A node refuses to start with such a certificate, so the
    // liar speaks the protocol by hand.)
    let liar_closed_with = hello_as("liar", ca.issue("mallory").unwrap(), a.addr()).await;
    assert_eq!(liar_closed_with, Some(footlight::remote::proto::CloseCode::IdentityMismatch.to_u16()));
    // No client certificate at all.
    let anonymous = anonymous_client_connects(&ca, a.addr()).await;
    assert!(!anonymous, "a client without a certificate must not complete the handshake");

    // A legitimate node still gets through, and is the only peer.
    let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.wait_for_peer("a").await.unwrap();
    let echo: ActorRef<Echo> = b.lookup("echo").await.unwrap();
    assert_eq!(echo.ask(Shout("ok".into())).await.unwrap(), "OK");
    assert_eq!(a.peers(), ["b"], "neither the rogue nor the liar is a peer");
    assert!(rogue.peers().is_empty());
    for n in [a, b, rogue] {
        n.shutdown().await;
    }
}

/// Connects with `tls` and sends a Hello claiming to be node `claim`; the
/// close code the node answers with, if it closes.
async fn hello_as(claim: &str, tls: Tls, addr: &str) -> Option<u16> {
    use footlight::remote::proto::frame::{Frame, Hello};
    use footlight::remote::transport::Transport;
    let mut conn = Quic::new(tls).connect(addr).await.ok()?;
    let mut hello = Vec::new();
    Frame::Hello(Hello { version: 1, cluster: "footlight".into(), node: claim.into(), run: 1, max_frame: 1 << 20 })
        .encode(&mut hello, 1 << 20)
        .ok()?;
    conn.send.write_all(&hello).await.ok()?;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(Some(n)) = conn.recv.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let mut reader = footlight::remote::proto::FrameReader::new(1 << 20);
    reader.extend(&received);
    let mut code = None;
    while let Ok(Some(frame)) = reader.next_frame() {
        if let Frame::Close(close) = frame {
            code = Some(close.code);
        }
    }
    code
}

/// Tries a QUIC handshake with no client certificate; true if it completes.
async fn anonymous_client_connects(ca: &DevCa, addr: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.ca_pem().as_bytes()) {
        let cert: rustls::pki_types::CertificateDer<'static> = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let Ok(connecting) = endpoint.connect(addr.parse().unwrap(), "a") else { return false };
    let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await else { return false };
    // TLS 1.3 may finish on the client before the server rejects the missing
    // certificate; the server then closes the connection.
    let opened = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(b"\0\0\0\x01\x03").await.ok()?;
        recv.read_chunk(16, true).await.ok()?
    };
    matches!(tokio::time::timeout(Duration::from_secs(5), opened).await, Ok(Some(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_that_connection_only() {
    use footlight::remote::proto::frame::{Frame, Hello};
    use footlight::remote::transport::Transport;

    let ca = DevCa::generate("test").unwrap();
    let a = node("a", ca.issue("a").unwrap(), &[]).await;
    a.spawn_named("echo", Echo).unwrap();

    // A peer with a valid certificate that says hello, then announces a
    // 100 MiB frame.
    let raw = Quic::new(ca.issue("raw").unwrap());
    let mut conn = raw.connect(a.addr()).await.unwrap();
    let mut hello = Vec::new();
    Frame::Hello(Hello { version: 1, cluster: "footlight".into(), node: "raw".into(), run: 1, max_frame: 1 << 20 })
        .encode(&mut hello, 1 << 20)
        .unwrap();
    conn.send.write_all(&hello).await.unwrap();
    conn.send.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    // The node answers with its Hello and then a Close; then the stream ends.
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(Some(n)) = conn.recv.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(ended.is_ok(), "the node must close the offending connection");
    let mut reader = footlight::remote::proto::FrameReader::new(1 << 20);
    reader.extend(&received);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = reader.next_frame() {
        frames.push(f);
    }
    let close = frames.iter().find_map(|f| match f {
        Frame::Close(c) => Some(c.code),
        _ => None,
    });
    assert_eq!(close, Some(footlight::remote::proto::CloseCode::FrameTooLarge.to_u16()), "{frames:?}");

    // The node is up and serves others.
    let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.wait_for_peer("a").await.unwrap();
    let echo: ActorRef<Echo> = b.lookup("echo").await.unwrap();
    assert_eq!(echo.ask(Shout("still up".into())).await.unwrap(), "STILL UP");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_vanished_peer_is_declared_lost_within_the_budget() {
    let ca = DevCa::generate("test").unwrap();
    let survivor_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let doomed_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    let a = doomed_rt.block_on(async {
        let a = node("a", ca.issue("a").unwrap(), &[]).await;
        a.spawn_named("echo", Echo).unwrap();
        a
    });
    let addr = a.addr().to_owned();
    let (b, echo) = survivor_rt.block_on(async {
        let b = node("b", ca.issue("b").unwrap(), &[addr]).await;
        b.wait_for_peer("a").await.unwrap();
        let echo: ActorRef<Echo> = b.lookup("echo").await.unwrap();
        assert_eq!(echo.ask(Shout("x".into())).await.unwrap(), "X");
        (b, echo)
    });
    let pending = {
        let echo = echo.clone();
        survivor_rt.spawn(async move { echo.ask(Hang).timeout(Duration::from_secs(60)).await })
    };
    survivor_rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });

    // Kill node a without goodbye: its runtime, tasks and socket vanish.
    let killed = Instant::now();
    drop(a);
    doomed_rt.shutdown_background();

    let outcome = survivor_rt.block_on(pending).unwrap();
    let detected = killed.elapsed();
    assert!(matches!(outcome, Err(AskError::NodeDown)), "{outcome:?}");
    assert!(detected <= Duration::from_secs(7), "detected after {detected:?} (budget 5 s + heartbeat)");
    assert_eq!(survivor_rt.block_on(echo.wait_for_stop()), ExitReason::NodeDown);
    survivor_rt.block_on(b.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_connections_are_limited() {
    let ca = DevCa::generate("test").unwrap();
    let a = Cluster::builder(
        Node::builder("a").transport(Quic::new(ca.issue("a").unwrap()).max_incoming(2)).listen("127.0.0.1:0"),
    )
    .start()
    .await
    .unwrap();
    // The second client has to validate its address first (retry), then gets in.
    let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.wait_for_peer("a").await.unwrap();
    let c = node("c", ca.issue("c").unwrap(), &[a.addr().to_owned()]).await;
    c.wait_for_peer("a").await.unwrap();
    // A third is refused while two are open.
    let d = node("d", ca.issue("d").unwrap(), &[a.addr().to_owned()]).await;
    let refused = tokio::time::timeout(Duration::from_secs(2), d.wait_for_peer("a")).await;
    assert!(refused.is_err(), "a third connection must be refused");
    assert_eq!(a.peers(), ["b", "c"]);
    assert!(d.peers().is_empty());
    for n in [a, b, c, d] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_ca_saved_as_pem_issues_certificates_the_cluster_trusts() {
    let ca = DevCa::generate("test").unwrap();
    let reloaded = DevCa::from_pem("test", &ca.ca_pem(), &ca.key_pem()).unwrap();
    let a = node("a", ca.issue("a").unwrap(), &[]).await;
    let b = node("b", reloaded.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.wait_for_peer("a").await.unwrap();
    a.spawn_named("echo", Echo).unwrap();
    let echo: ActorRef<Echo> = b.lookup("echo").await.unwrap();
    assert_eq!(echo.ask(Shout("same ca".into())).await.unwrap(), "SAME CA");
    // Another CA's key does not make a trusted certificate.
    let other = DevCa::generate("test").unwrap();
    let forged = DevCa::from_pem("test", &ca.ca_pem(), &other.key_pem()).unwrap();
    let mallory = node("c", forged.issue("c").unwrap(), &[a.addr().to_owned()]).await;
    assert!(mallory.wait_for_peer("a").await.is_err());
    a.shutdown().await;
    b.shutdown().await;
    mallory.shutdown().await;
}

/// A node given a certificate for another node id refuses to start with
/// an error that says so (its peers would refuse every connection; before,
/// it started and logged a refused handshake every half second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_id_fails_the_start() {
    let ca = DevCa::generate("test").unwrap();
    let started = Node::builder("a").transport(Quic::new(ca.issue("b").unwrap())).listen("127.0.0.1:0").start().await;
    match started {
        Err(footlight::NodeError::IdentityMismatch { node, certified }) => {
            assert_eq!((node.as_str(), certified.as_str()), ("a", "b"));
        }
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_shut_down_node_frees_its_listen_address_even_while_clones_of_it_live() {
    let ca = DevCa::generate("test").unwrap();
    let a = node("a", ca.issue("a").unwrap(), &[]).await;
    let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
    b.joined().await.unwrap();
    let addr = b.addr().to_owned();
    // Something of the application still holds the node (an actor, a task).
    let clone = b.clone();
    b.shutdown().await;
    // A new run of b, on the same address, at once.
    let again = Cluster::builder(Node::builder("b").transport(Quic::new(ca.issue("b").unwrap())).listen(addr.clone()))
        .seeds([a.addr().to_owned()])
        .start()
        .await
        .expect("the address is free again");
    assert_eq!(again.addr(), addr);
    again.joined().await.unwrap();
    drop(clone);
    again.shutdown().await;
    a.shutdown().await;
}

/// Two members that shut down at the same moment (both downed themselves,
/// say) free their addresses at once: each starts again on its own address
/// right away. A node shutting down does not wait for its peers' word on
/// the connections it closes (seen between hosts: a node downed with its
/// partner could not start again, "Address already in use").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_shutting_down_together_free_their_addresses_at_once() {
    let ca = DevCa::generate("test").unwrap();
    for _ in 0..3 {
        let a = node("a", ca.issue("a").unwrap(), &[]).await;
        let b = node("b", ca.issue("b").unwrap(), &[a.addr().to_owned()]).await;
        b.joined().await.unwrap();
        let (a_addr, b_addr) = (a.addr().to_owned(), b.addr().to_owned());
        tokio::join!(a.shutdown(), b.shutdown());
        for (id, addr) in [("a", &a_addr), ("b", &b_addr)] {
            let again =
                Cluster::builder(Node::builder(id).transport(Quic::new(ca.issue(id).unwrap())).listen(addr.clone()))
                    .start()
                    .await
                    .unwrap_or_else(|e| panic!("{id}'s address {addr} is not free again: {e}"));
            again.shutdown().await;
        }
    }
}
