//! Footlight's local actor runtime.
//!
//! Most users depend on the `footlight` facade crate and write
//! `use footlight::prelude::*;`. This crate holds the machinery:
//!
//! - [`Actor`], [`Message`], [`Handler`]: state, messages and behaviour, with
//!   native `async fn` handlers (no boxing forced by the trait);
//! - [`ActorRef`] (`tell`, `try_tell`, `ask`), [`Recipient`], [`WeakActorRef`];
//! - [`Mailbox`]: bounded by default with backpressure, unbounded by choice;
//!   system signals overtake user messages;
//! - [`ActorSystem`]: spawning, the name registry, graceful shutdown;
//! - [`Context`]: children, death watch ([`Context::watch`]), Erlang links
//!   ([`Context::link`]), timers ([`Context::send_after`],
//!   [`Context::send_interval`]);
//! - [`Supervisor`]: one-for-one, one-for-all and rest-for-one supervision
//!   with OTP restart types and intensity, and optional backoff.
//!
//! # Guarantees
//! - An actor handles one message at a time (`&mut self`), never concurrently
//!   with itself.
//! - Delivery is at-most-once; messages from one sender to one actor keep
//!   their order.
//! - Every `ask` resolves exactly once: reply, [`AskError::Timeout`],
//!   [`AskError::NoReply`] or [`AskError::Closed`].
//! - A panic in a handler or hook is caught, logged with `tracing` (actor and
//!   message type) and becomes the actor's failure; it never takes down the
//!   runtime.
//! - Each watch yields exactly one [`Terminated`].
//!
//! # Example
//! ```
//! use actor_core::{Actor, ActorSystem, Context, Handler, Message};
//!
//! struct Counter(u64);
//! impl Actor for Counter {}
//!
//! struct Add(u64);
//! impl Message for Add {
//!     type Reply = u64;
//! }
//! impl Handler<Add> for Counter {
//!     async fn handle(&mut self, Add(n): Add, _ctx: &mut Context<Self>) -> u64 {
//!         self.0 += n;
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), actor_core::Error> {
//! let system = ActorSystem::new("demo");
//! let counter = system.spawn(Counter(0));
//! counter.tell(Add(1)).await?;
//! assert_eq!(counter.ask(Add(2)).await?, 3);
//! system.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod actor;
mod actor_ref;
mod cell;
mod context;
pub mod deadline;
pub mod entropy;
mod error;
mod id;
pub mod mailbox;
mod message;
pub mod monitor;
pub mod remote;
mod runtime;
pub mod stats;
pub mod supervisor;
mod system;

pub use actor::{Actor, ActorError, ExitReason, Failure, FailureDecision, LinkDecision, Shutdown, Terminated};
pub use actor_ref::{ActorRef, Ask, DEFAULT_ASK_TIMEOUT, Recipient, WeakActorRef};
pub use context::{Context, Timer};
pub use error::{AskError, Error, LookupError, NotSent, RegisterError, SendError, SpawnError, TrySendError};
pub use id::ActorId;
pub use mailbox::Mailbox;
pub use message::{Handler, Message};
pub use monitor::{Down, Monitor, MonitorId};
pub use remote::{CodecError, RefAddr, Wire};
pub use runtime::quiet_actor_panics;
pub use supervisor::{
    Backoff, ChildCounts, ChildError, ChildInfo, ChildSpec, ChildState, OnStartFailure, Restart, Strategy, Supervisor,
    SupervisorEvent,
};
pub use system::{ActorInfo, ActorNode, ActorSystem, MAX_TREE_ACTORS, SpawnOptions};
