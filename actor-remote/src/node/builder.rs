//! [`NodeBuilder`]: a node's configuration, and starting it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actor_core::ActorSystem;
use tokio::sync::watch;

use super::exports::Exports;
use super::links::Links;
use super::peers::Peers;
use super::standins::StandIns;
use super::{Node, NodeError, NodeInner, NodeService, conn, dial};
use crate::proto::SessionConfig;
use crate::transport::Transport;

/// Builds a [`Node`]: its id, transport and listen address (required), and
/// the limits of its connections.
///
/// ```
/// # use std::time::Duration;
/// # use actor_remote::{Node, transport::mem::MemoryNetwork};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = MemoryNetwork::new();
/// let node = Node::builder("billing-1")
///     .cluster("shop")                          // peers of another cluster are refused
///     .transport(net.transport())               // or `Quic::new(tls)`
///     .listen("billing-1")                      // over QUIC: "0.0.0.0:7000"
///     .idle_timeout(Duration::from_secs(5))     // silence before a peer is declared lost
///     .max_frame(4 * 1024 * 1024)               // the largest frame accepted from peers
///     .max_pending_asks(10_000)
///     .start()
///     .await?;
/// assert_eq!(node.id(), "billing-1");
/// # node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct NodeBuilder {
    pub(super) id: String,
    pub(super) cluster: String,
    pub(super) transport: Option<Arc<dyn Transport>>,
    pub(super) listen: Option<String>,
    pub(super) session: SessionConfig,
    pub(super) system: Option<ActorSystem>,
    pub(super) advertise: Option<String>,
    pub(super) services: Vec<Arc<dyn NodeService>>,
}

impl NodeBuilder {
    /// The cluster name (default `"footlight"`); nodes of other clusters are
    /// refused during the handshake.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// The transport (required).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Where to listen for peers (required: peers dial this address).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The address other members dial to reach this node, if not the one
    /// it listens on (say, behind NAT, or listening on `0.0.0.0`).
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// Attaches a service (membership and the cluster registry are one:
    /// `actor-cluster`); see [`NodeService`].
    pub fn service(mut self, service: Arc<dyn NodeService>) -> Self {
        self.services.push(service);
        self
    }

    /// The actor system to run on (default: a new one named after the node).
    pub fn system(mut self, system: ActorSystem) -> Self {
        self.system = Some(system);
        self
    }

    /// Silence after which a peer is declared lost (default 5 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.session.idle_timeout = timeout;
        self
    }

    /// Interval of heartbeats on quiet connections (default 1 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.session.heartbeat_interval = interval;
        self
    }

    /// The largest frame accepted from peers (default 1 MiB; at least
    /// 64 KiB, which membership and registry frames need; at most 16 MiB).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.session.max_frame = bytes.clamp(64 * 1024, 16 * 1024 * 1024);
        self
    }

    /// Encoded bytes buffered per connection before senders wait (default
    /// 4 MiB; with the bounded outbound queue in front of it, 1024 commands
    /// and 256 KiB of encoded tells, this is what holds memory per peer in
    /// check).
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.session.max_outbound_bytes = bytes.max(1);
        self
    }

    /// Asks pending to one peer before more are refused (default 10 000).
    pub fn max_pending_asks(mut self, asks: usize) -> Self {
        self.session.max_pending_asks = asks;
        self
    }

    /// Starts listening.
    pub async fn start(self) -> Result<Node, NodeError> {
        let transport = self.transport.ok_or(NodeError::NoTransport)?;
        let listen = self.listen.ok_or(NodeError::NoListenAddress)?;
        if let Some(certified) = transport.local_identity()
            && certified != self.id
        {
            return Err(NodeError::IdentityMismatch { node: self.id, certified });
        }
        let mut listener = transport.listen(&listen).await?;
        let addr = listener.local_addr();
        let run = new_run();
        let mut session = self.session;
        session.cluster = self.cluster.clone();
        session.node = self.id.clone();
        session.run = run;
        let inner = Arc::new(NodeInner {
            id: self.id.clone(),
            advertised: self.advertise.unwrap_or(addr.clone()),
            addr,
            run,
            system: self.system.unwrap_or_else(|| ActorSystem::new(self.id.clone())),
            transport,
            session,
            peers: Peers::default(),
            dialing: dial::Dialing::default(),
            exports: Exports::default(),
            stand_ins: StandIns::default(),
            links: Links::default(),
            watches: Default::default(),
            shutdown: watch::channel(false).0,
            services: self.services,
            gone_runs: Mutex::new(Default::default()),
            accepting: Mutex::new(None),
        });
        for service in &inner.services {
            service.started(super::NodeContext::new(&inner));
        }
        let node = inner.clone();
        let accepting = tokio::spawn(async move {
            let mut stop = node.shutdown.subscribe();
            loop {
                tokio::select! {
                    conn = listener.accept() => match conn {
                        Ok(conn) => {
                            tokio::spawn(conn::run(node.clone(), conn, false, None));
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.id, error = %e, "listener stopped");
                            break;
                        }
                    },
                    _ = stop.wait_for(|stopping| *stopping) => break,
                }
            }
        });
        *inner.accepting.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepting);
        Ok(Node { inner })
    }
}

/// A node's run: different at every start (time-based, made unique within
/// the process; numbered in order inside a seeded simulation, see
/// [`actor_core::entropy`]).
fn new_run() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    if actor_core::entropy::seed().is_some() {
        return actor_core::entropy::number(&LAST);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
