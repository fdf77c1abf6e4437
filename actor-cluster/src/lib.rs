//! Footlight's cluster services, built on a [`Node`](actor_remote::Node):
//!
//! - **membership**: SWIM (the `foca` crate) over the node's own
//!   connections; failure detection with suspicion; a member view and its
//!   [`ClusterEvent`]s ([`Cluster::subscribe`]);
//! - **the registry**: cluster-wide names ([`Cluster::register`],
//!   [`Cluster::lookup`]) and process groups ([`Cluster::join`],
//!   [`Cluster::group`], [`Cluster::broadcast`]);
//! - **split-brain resolution** ([`sbr`]): which side of a partition
//!   carries on;
//! - **singletons** ([`singleton`]): one instance of an actor in the
//!   cluster, on the oldest member, with hand-over and a proxy;
//! - **sharding** ([`sharding`]): virtual actors addressed by id,
//!   activated on the member that owns their shard, moved with a hand-off,
//!   passivated when idle;
//! - **reliable delivery** ([`delivery`]): sequence numbers, acknowledgements,
//!   resends and a window between a producer and a consumer, deduplicated;
//! - **leases** ([`lease`]): fencing through a coordination service
//!   (in memory, or etcd with the `etcd` feature).
//!
//! A [`Cluster`] is started from a [`NodeBuilder`](actor_remote::NodeBuilder)
//! and derefs to the node, so one value does both jobs:
//!
//! ```
//! use actor_cluster::{Cluster, ClusterEvent};
//! use actor_remote::{Node, transport::mem::MemoryNetwork};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryNetwork::new();
//! let a = Cluster::builder(Node::builder("a").transport(net.transport()).listen("a")).start().await?;
//! let b = Cluster::builder(Node::builder("b").transport(net.transport()).listen("b")).seeds(["a"]).start().await?;
//! let mut events = a.subscribe();
//! loop {
//!     if let Some(ClusterEvent::MemberUp(m)) = events.recv().await && m.id == "b" {
//!         break;
//!     }
//! }
//! # a.shutdown().await; b.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The cluster talks to its node through the node's service seam
//! ([`NodeService`](actor_remote::NodeService)) only: it is told of peers
//! and of its system messages, and answers with "send this system message
//! to that peer", "close that peer" and "dial that address".

mod cluster;
mod convergence;
pub mod delivery;
pub mod lease;
mod membership;
mod registry;
pub mod sbr;
pub mod sharding;
pub mod singleton;
mod view;

pub use cluster::{Cluster, ClusterBuilder, ClusterError, FOUND_AFTER};
pub use membership::{ClusterEvent, FailureDetection, GossipStats, MAX_ROLES, Member};
pub use registry::{MAX_ENTRIES_PER_NODE, MAX_NAME_LEN, RegistryEntry};
pub use sbr::SplitBrainResolver;
pub use sharding::{EntityAskError, EntityError, EntityRef, Sharding, ShardingBuilder};
pub use singleton::{Singleton, SingletonAskError, SingletonBuilder, SingletonError};
pub use view::Subscription;
