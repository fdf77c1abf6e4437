//! Refs travel inside messages: a node sends a ref to one of its actors to a
//! peer, which can then message it; a ref sent back arrives as the local ref
//! it was; an actor type that was not exposed cannot be sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use footlight::SendError;
use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use tokio::sync::mpsc;

/// On node b: receives notifications.
struct Listener(mpsc::UnboundedSender<String>);
impl Actor for Listener {}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Notify")]
struct Notify(String);

impl Handler<Notify> for Listener {
    async fn handle(&mut self, Notify(text): Notify, _ctx: &mut Context<Self>) {
        let _ = self.0.send(text);
    }
}

impl RemoteActor for Listener {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Notify>();
    }
}

/// On node a: keeps subscribers and publishes to them.
#[derive(Actor, Default)]
struct Hub {
    subscribers: Vec<ActorRef<Listener>>,
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = ActorRef<Listener>, remote = "test.Subscribe")]
struct Subscribe(ActorRef<Listener>);

impl Handler<Subscribe> for Hub {
    async fn handle(&mut self, Subscribe(who): Subscribe, _ctx: &mut Context<Self>) -> ActorRef<Listener> {
        assert!(who.is_remote(), "a ref from another node arrives as a remote ref");
        self.subscribers.push(who.clone());
        who
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(remote = "test.Publish")]
struct Publish(String);

impl Handler<Publish> for Hub {
    async fn handle(&mut self, Publish(text): Publish, _ctx: &mut Context<Self>) {
        for s in &self.subscribers {
            let _ = s.tell(Notify(text.clone())).await;
        }
    }
}

#[derive(Message, Serialize, Deserialize)]
#[message(reply = Vec<ActorRef<Listener>>, remote = "test.Subscribers")]
struct Subscribers;

impl Handler<Subscribers> for Hub {
    async fn handle(&mut self, _: Subscribers, _ctx: &mut Context<Self>) -> Vec<ActorRef<Listener>> {
        self.subscribers.clone()
    }
}

impl RemoteActor for Hub {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Subscribe>().add::<Publish>().add::<Subscribers>();
    }
}

async fn pair() -> (Cluster, Cluster) {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    let b =
        Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await.unwrap();
    b.wait_for_peer("a").await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_sent_to_a_peer_reaches_its_actor_and_comes_back_local() {
    let (a, b) = pair().await;
    a.spawn_named("hub", Hub::default()).unwrap();
    b.expose::<Listener>().unwrap();
    let (tx, mut notes) = mpsc::unbounded_channel();
    let listener = b.system().spawn(Listener(tx));
    let hub: ActorRef<Hub> = b.lookup("hub").await.unwrap();

    let echoed = hub.ask(Subscribe(listener.clone())).await.unwrap();
    assert!(!echoed.is_remote(), "a ref to b's own actor comes back as the local ref");
    assert_eq!(echoed, listener);

    hub.tell(Publish("hello".into())).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await.unwrap().unwrap();
    assert_eq!(note, "hello", "a reached b's listener through the ref it was sent");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_to_unexposed_actor_types_cannot_be_sent() {
    let (a, b) = pair().await;
    a.spawn_named("hub", Hub::default()).unwrap();
    let (tx, _notes) = mpsc::unbounded_channel();
    let listener = b.system().spawn(Listener(tx));
    let hub: ActorRef<Hub> = b.lookup("hub").await.unwrap();
    match hub.tell(Subscribe(listener)).await {
        Err(SendError::Rejected(_, why)) => assert!(why.contains("not exposed"), "{why}"),
        other => panic!("expected Rejected, got {:?}", other.map_err(|e| e.to_string())),
    }
    // Once exposed, the same send goes through.
    b.expose::<Listener>().unwrap();
    let (tx, _notes) = mpsc::unbounded_channel();
    let listener = b.system().spawn(Listener(tx));
    hub.ask(Subscribe(listener)).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_ref_outside_a_remote_message_does_not_encode() {
    let system = ActorSystem::new("t");
    let (tx, _notes) = mpsc::unbounded_channel();
    let listener = system.spawn(Listener(tx));
    let err = footlight::remote::codec::encode(&listener).unwrap_err();
    assert!(err.0.contains("only be encoded inside a message"), "{}", err.0);
    system.shutdown().await;
}

/// A ref travels on: b sends its listener's ref to a, a hands it to c, and c
/// reaches the listener on b directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_forwarded_to_a_third_node_still_works() {
    let net = MemoryNetwork::new();
    let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await.unwrap();
    let b =
        Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await.unwrap();
    let c = Cluster::builder(Node::builder("c").transport(net.transport()).listen("c"))
        .seeds(["a", "b"])
        .start()
        .await
        .unwrap();
    for (node, peer) in [(&b, "a"), (&c, "a"), (&c, "b")] {
        node.wait_for_peer(peer).await.unwrap();
    }
    a.spawn_named("hub", Hub::default()).unwrap();
    b.expose::<Listener>().unwrap();
    let (tx, mut notes) = mpsc::unbounded_channel();
    let listener = b.system().spawn(Listener(tx));
    let hub_from_b: ActorRef<Hub> = b.lookup("hub").await.unwrap();
    hub_from_b.ask(Subscribe(listener.clone())).await.unwrap();

    let hub_from_c: ActorRef<Hub> = c.lookup("hub").await.unwrap();
    let subscribers = hub_from_c.ask(Subscribers).await.unwrap();
    assert_eq!(subscribers.len(), 1);
    subscribers[0].tell(Notify("from c".into())).await.unwrap();
    let note = tokio::time::timeout(Duration::from_secs(10), notes.recv()).await.unwrap().unwrap();
    assert_eq!(note, "from c");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
