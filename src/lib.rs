//! # Footlight
//!
//! An actor runtime for distributed Rust applications. Services are actors:
//! state plus `async fn` handlers, one message at a time; supervision trees
//! restart what fails; death watch and links tell actors when others stop;
//! the same [`ActorRef`] reaches an actor on another node; nodes form a
//! cluster with cluster-wide names and groups. Start with the [`prelude`]:
//!
//! ```
//! use footlight::prelude::*;
//!
//! #[derive(Actor)]
//! struct Counter {
//!     n: u64,
//! }
//!
//! #[derive(Message)]
//! #[message(reply = u64)]
//! struct Add(u64);
//!
//! impl Handler<Add> for Counter {
//!     async fn handle(&mut self, Add(k): Add, _ctx: &mut Context<Self>) -> u64 {
//!         self.n += k;
//!         self.n
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), footlight::Error> {
//! let system = ActorSystem::new("demo");
//! let counter = system.spawn(Counter { n: 0 });
//! counter.tell(Add(1)).await?;
//! assert_eq!(counter.ask(Add(2)).await?, 3);
//! system.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # A map
//!
//! | you want | look at |
//! |---|---|
//! | **local actors** | [`Actor`] (state and lifecycle hooks), [`Message`] and [`Handler`], [`ActorRef`] (`tell`, `try_tell`, `ask`), [`ActorSystem`] (spawn, registry, shutdown), [`Context`] (children, watch, links, timers), [`Mailbox`] (bounded by default), the derives [`macro@Actor`] and [`macro@Message`] |
//! | **supervision** | [`Supervisor`] (one-for-one, one-for-all, rest-for-one; restart types and intensity; backoff; children started while it runs; shutdown timeouts and kill; events) and its [module docs](supervisor), which compare it with OTP; [`ExitReason`], [`Terminated`], [`FailureDecision`] |
//! | **remoting** (feature `remote`) | [`Node`] and [`NodeBuilder`]: expose actors ([`RemoteActor`], [`Node::spawn_named`]), [`Node::lookup`] gives a remote [`ActorRef`]; messages cross with `#[message(remote = "wire.Name")]`; transports in [`remote::transport`]: QUIC with mutual TLS (feature `quic`) and [`MemoryNetwork`](remote::transport::mem::MemoryNetwork) for tests |
//! | **a cluster** (feature `cluster`) | [`Cluster`] ([`cluster::ClusterBuilder`]): membership and [`ClusterEvent`]s, cluster-wide names ([`Cluster::register`], [`Cluster::lookup`]), process groups ([`Cluster::join`], [`Cluster::group`], [`Cluster::broadcast`]), split-brain resolution ([`cluster::sbr`]), singletons ([`Cluster::singleton`]), leases ([`cluster::lease`]) |
//! | **testing** | [`MemoryNetwork`](remote::transport::mem::MemoryNetwork) (several nodes in one process, with partitions, isolation and delays) on Tokio's paused clock: seconds of failure detection take milliseconds |
//! | **errors** | one enum per operation ([`SendError`], [`TrySendError`], [`AskError`], [`SpawnError`], [`LookupError`], [`RegisterError`], [`NodeError`], [`ClusterError`]); send errors hand the message back; [`Error`] gathers the local runtime's for `?` (with `Box<dyn Error>`, all of them) |
//!
//! # Features
//!
//! All on by default. `default-features = false` gives local actors only and
//! compiles none of the network crates.
//!
//! - `remote`: nodes, remote refs, the in-memory transport.
//! - `quic`: the QUIC transport with mutual TLS (quinn, rustls, rcgen).
//! - `cluster`: membership (foca), cluster-wide names and groups.
//!
//! `ARCHITECTURE.md` shows how the pieces fit; `examples/` has runnable
//! programs, among them a three-node cluster demo.

/// Cluster services: membership, names, groups (feature `cluster`).
#[cfg(feature = "cluster")]
pub use actor_cluster as cluster;
#[cfg(feature = "cluster")]
pub use actor_cluster::{Cluster, ClusterError, ClusterEvent, FailureDetection, Member};
/// Where randomness and ids come from: the OS, or a simulation's seed.
pub use actor_core::entropy;
/// The runtime's own counters: asks started, handler times (opt-in).
pub use actor_core::stats;
pub use actor_core::{
    Actor, ActorError, ActorId, ActorRef, ActorSystem, Ask, AskError, Backoff, ChildCounts, ChildError, ChildInfo,
    ChildSpec, ChildState, CodecError, Context, DEFAULT_ASK_TIMEOUT, Down, Error, ExitReason, Failure, FailureDecision,
    Handler, LinkDecision, LookupError, Mailbox, Message, Monitor, MonitorId, NotSent, OnStartFailure, Recipient,
    RefAddr, RegisterError, Restart, SendError, Shutdown, SpawnError, SpawnOptions, Strategy, Supervisor,
    SupervisorEvent, Terminated, Timer, TrySendError, WeakActorRef, Wire, mailbox, monitor, quiet_actor_panics,
    supervisor,
};
pub use actor_macros::{Actor, Message};
/// The operations endpoint (feature `ops`): probes, metrics, a JSON API.
#[cfg(feature = "ops")]
pub use actor_ops as ops;
/// Remoting: nodes, transports, the wire protocol (feature `remote`).
#[cfg(feature = "remote")]
pub use actor_remote as remote;
#[cfg(feature = "remote")]
pub use actor_remote::{Node, NodeBuilder, NodeError, RemoteActor, RemoteMessages};

/// Used by the code the derives generate; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use actor_remote::codec::wire;
}

/// Everything a typical actor program uses.
pub mod prelude {
    #[cfg(feature = "cluster")]
    pub use actor_cluster::{Cluster, ClusterError};
    pub use actor_core::{
        Actor, ActorError, ActorId, ActorRef, ActorSystem, AskError, Backoff, ChildError, ChildSpec, Context,
        ExitReason, Failure, FailureDecision, Handler, LinkDecision, LookupError, Mailbox, Message, Recipient,
        RegisterError, Restart, SendError, Shutdown, SpawnError, SpawnOptions, Supervisor, SupervisorEvent, Terminated,
        TrySendError, WeakActorRef,
    };
    pub use actor_macros::{Actor, Message};
    #[cfg(feature = "remote")]
    pub use actor_remote::{Node, RemoteActor, RemoteMessages};
    pub use serde::{Deserialize, Serialize};
    pub use std::time::Duration;
}

/// The README's code blocks, compiled and run as doctests so the README stays
/// true.
#[cfg(all(doctest, feature = "quic", feature = "cluster"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
