//! The seam a remoting layer plugs into: a ref built from a `RemoteEndpoint`
//! sends encoded messages through it, refuses local-only messages with
//! `NotRemote` (handing them back), maps node loss to `NodeDown`, and its
//! stand-in makes watch and `wait_for_stop` work for remote actors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actor_core::remote::{BoxFuture, ImportedRef, RefCodec, RemoteEndpoint, RemoteError, Told, remote_ref};
use actor_core::{
    Actor, ActorRef, ActorSystem, AskError, CodecError, Context, ExitReason, Handler, Message, RefAddr, RegisterError,
    SendError, Terminated, TrySendError, Wire,
};
use tokio::sync::mpsc;

struct Counter(u64);
impl Actor for Counter {}

/// Crosses the wire as 8 big-endian bytes.
struct Add(u64);
impl Message for Add {
    type Reply = u64;
    fn wire() -> Option<Wire<Self>> {
        fn enc(m: &Add) -> Result<Vec<u8>, CodecError> {
            Ok(m.0.to_be_bytes().to_vec())
        }
        fn dec(b: &[u8]) -> Result<Add, CodecError> {
            Ok(Add(u64::from_be_bytes(b.try_into().map_err(|_| CodecError("len".into()))?)))
        }
        fn enc_r(r: &u64) -> Result<Vec<u8>, CodecError> {
            Ok(r.to_be_bytes().to_vec())
        }
        fn dec_r(b: &[u8]) -> Result<u64, CodecError> {
            Ok(u64::from_be_bytes(b.try_into().map_err(|_| CodecError("len".into()))?))
        }
        Some(Wire { name: "test.Add", encode: enc, decode: dec, encode_reply: enc_r, decode_reply: dec_r })
    }
}
impl Handler<Add> for Counter {
    async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

/// Local only.
#[derive(Debug, PartialEq)]
struct Secret(u8);
impl Message for Secret {
    type Reply = ();
}
impl Handler<Secret> for Counter {
    async fn handle(&mut self, _: Secret, _ctx: &mut Context<Self>) {}
}

/// A "network" that delivers to a local actor, and can go down.
struct Loopback {
    target: ActorRef<Counter>,
    down: AtomicBool,
}

impl RemoteEndpoint for Loopback {
    /// Never has room at once: a tell either waits (and is delivered) or
    /// is refused as `Full`.
    fn tell<'a>(&'a self, wire_name: &'static str, payload: &'a [u8], wait: bool) -> Told<'a> {
        if self.down.load(Ordering::SeqCst) {
            return Told::Done(Err(RemoteError::NodeDown));
        }
        if !wait {
            return Told::Done(Err(RemoteError::Full));
        }
        Told::Waiting(Box::pin(async move {
            assert_eq!(wire_name, "test.Add");
            let msg = (Add::wire().unwrap().decode)(payload).map_err(|e| RemoteError::Rejected(e.0))?;
            self.target.tell(msg).await.map_err(|_| RemoteError::ActorNotFound)
        }))
    }

    fn ask(
        &self,
        _wire_name: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, RemoteError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(RemoteError::NodeDown);
            }
            let wire = Add::wire().unwrap();
            let msg = (wire.decode)(&payload).map_err(|e| RemoteError::Rejected(e.0))?;
            let reply = self.target.ask(msg).timeout(timeout).await.map_err(|_| RemoteError::NoReply)?;
            (wire.encode_reply)(&reply).map_err(|e| RemoteError::Rejected(e.0))
        })
    }

    fn describe(&self) -> String {
        "counter@far".into()
    }

    fn address(&self) -> RefAddr {
        RefAddr { node: "far".into(), run: 1, id: 1 }
    }

    fn ref_codec(&self) -> Arc<dyn RefCodec> {
        Arc::new(NoRefs)
    }
}

/// These test messages carry no refs.
struct NoRefs;

impl RefCodec for NoRefs {
    fn export_local(
        &self,
        _: std::any::TypeId,
        _: actor_core::ActorId,
        _: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<RefAddr, String> {
        Err("no refs here".into())
    }

    fn import(&self, _: &RefAddr, _: std::any::TypeId, _: &'static str) -> Result<ImportedRef, String> {
        Err("no refs here".into())
    }
}

struct Watcher(mpsc::UnboundedSender<Terminated>);
impl Actor for Watcher {
    async fn on_terminated(&mut self, _ctx: &mut Context<Self>, t: Terminated) {
        self.0.send(t).unwrap();
    }
}
struct WatchIt(ActorRef<Counter>);
impl Message for WatchIt {
    type Reply = ();
}
impl Handler<WatchIt> for Watcher {
    async fn handle(&mut self, WatchIt(r): WatchIt, ctx: &mut Context<Self>) {
        ctx.watch(&r);
    }
}

#[tokio::test]
async fn remote_refs_send_through_the_endpoint() {
    let system = ActorSystem::new("t");
    let real = system.spawn(Counter(0));
    let endpoint = Arc::new(Loopback { target: real.clone(), down: AtomicBool::new(false) });
    let (remote, handle): (ActorRef<Counter>, _) = remote_ref(endpoint.clone());
    assert!(remote.is_remote() && !real.is_remote());
    assert_eq!(remote.to_string(), format!("counter@far{}", remote.id()));

    remote.tell(Add(2)).await.unwrap();
    assert_eq!(remote.ask(Add(3)).await.unwrap(), 5);
    assert_eq!(real.ask(Add(0)).await.unwrap(), 5, "it reached the real actor");

    // A local-only message is refused and handed back.
    assert!(matches!(remote.tell(Secret(1)).await, Err(SendError::NotRemote(Secret(1)))));
    assert!(matches!(remote.try_tell(Secret(2)), Err(TrySendError::NotRemote(Secret(2)))));
    assert!(matches!(remote.ask(Secret(3)).await, Err(AskError::NotRemote(Secret(3)))));
    assert_eq!(system.register("x", &remote), Err(RegisterError::NotLocal));

    // The node is unreachable but the end is not known yet: the endpoint
    // says so, and the message comes back.
    endpoint.down.store(true, Ordering::SeqCst);
    match remote.tell(Add(1)).await {
        Err(SendError::NodeDown(Add(1))) => {}
        other => panic!("expected NodeDown with the message, got {:?}", other.map_err(|e| e.to_string())),
    }
    assert!(matches!(remote.ask(Add(1)).await, Err(AskError::NodeDown)));
    assert!(matches!(remote.try_tell(Add(1)), Err(TrySendError::NodeDown(Add(1)))));

    // Watchers of the stand-in learn of the remote actor's end.
    let (seen, mut events) = common::events();
    let watcher = system.spawn(Watcher(seen));
    watcher.ask(WatchIt(remote.clone())).await.unwrap();
    handle.terminate(ExitReason::Failed("node lost".into()));
    assert_eq!(events.next().await, Terminated { id: remote.id(), reason: ExitReason::Failed("node lost".into()) });
    assert_eq!(remote.wait_for_stop().await, ExitReason::Failed("node lost".into()));
    assert!(!remote.is_alive() && handle.is_terminated());

    // Once the end is known, sends fail here, as for a local actor.
    assert!(matches!(remote.tell(Add(1)).await, Err(SendError::Closed(Add(1)))));
    assert!(matches!(remote.ask(Add(1)).await, Err(AskError::Closed(Add(1)))));
    system.shutdown().await;
}
