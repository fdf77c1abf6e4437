//! # Footlight
//!
//! An actor runtime for distributed Rust applications. Services are actors:
//! state plus `async fn` handlers, one message at a time; supervision trees
//! restart what fails; death watch and links tell actors when others stop.
//!
//! This facade re-exports the runtime ([`actor_core`]) and the derives
//! ([`actor_macros`]). Start with the [`prelude`]:
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
//! See `ARCHITECTURE.md` for how the pieces fit and `examples/` for runnable
//! programs.

/// Cluster services: membership, names, groups (feature `cluster`).
#[cfg(feature = "cluster")]
pub use actor_cluster as cluster;
#[cfg(feature = "cluster")]
pub use actor_cluster::{Cluster, ClusterError, ClusterEvent, FailureDetection, Member};
pub use actor_core::{
    Actor, ActorError, ActorId, ActorRef, ActorSystem, Ask, AskError, Backoff, CodecError, Context,
    DEFAULT_ASK_TIMEOUT, Error, ExitReason, Failure, FailureDecision, Handler, LinkDecision, LookupError, Mailbox,
    Message, Recipient, RefAddr, RegisterError, Restart, SendError, SpawnError, SpawnOptions, Strategy, Supervisor,
    Terminated, TimerHandle, TrySendError, WeakActorRef, Wire, mailbox, supervisor,
};
pub use actor_macros::{Actor, Message};
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
        Actor, ActorError, ActorId, ActorRef, ActorSystem, AskError, Backoff, Context, ExitReason, Failure,
        FailureDecision, Handler, LinkDecision, LookupError, Mailbox, Message, Recipient, RegisterError, Restart,
        SendError, SpawnError, SpawnOptions, Supervisor, Terminated, TrySendError, WeakActorRef,
    };
    pub use actor_macros::{Actor, Message};
    #[cfg(feature = "remote")]
    pub use actor_remote::{Node, RemoteActor, RemoteMessages};
    pub use serde::{Deserialize, Serialize};
    pub use std::time::Duration;
}

/// The README's code blocks, compiled and run as doctests so the README stays
/// true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
