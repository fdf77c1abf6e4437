//! Footlight's operations surface: an HTTP endpoint per node with
//! liveness and readiness probes, Prometheus metrics and a read-only JSON
//! API, for Kubernetes probes, scrapers and operators.
//!
//! It is off unless started ([`OpsServer::start`]), on an address the user
//! chooses, and compiled only with the facade's `ops` feature: library
//! users who do not enable it build none of its dependencies (axum, hyper,
//! the metrics exporter).
//!
//! | path | answers |
//! |---|---|
//! | `GET /` | the live view: one page (HTML and JavaScript shipped in this crate, no build step) showing this node's readiness, the members and their reachability, the connected peers and gossip counters, refreshed every second |
//! | `GET /health/alive` | 200 while the node runs (liveness) |
//! | `GET /health/ready` | 200 once [`Cluster::readiness`] says so: admitted to the cluster, not downed, and the services started on the node have what they need (sharding: the shards it owns are taken); 503 with the reason otherwise (readiness: gates a rolling update) |
//! | `GET /metrics` | Prometheus text: membership, gossip and connection gauges of this node, membership events, and whatever else is recorded through the [`metrics`] facade (see below) |
//! | `GET /api/node` | JSON: this node's id, run, admission, downed reason, connected peers, gossip counters |
//! | `GET /api/actors` | JSON: the node's top-level and named actors ([`ActorSystem::actors`](actor_core::ActorSystem::actors)): id, type, names, mailbox depth and capacity, messages handled |
//! | `GET /api/tree` | JSON: the supervision tree ([`ActorSystem::tree`](actor_core::ActorSystem::tree)): each top-level actor with its children, down to the leaves, as `/api/actors` describes them; an actor busy for longer than [`TREE_PATIENCE`] is listed without its children (`children: null`) |
//! | `GET /api/peers` | JSON: the connected peers with their connection's counters ([`Node::peer_stats`](actor_cluster::Cluster::node)): run, heartbeat round trip, bytes both ways, outbound queue, connections opened |
//! | `GET /api/registry` | JSON: the cluster-wide names and group memberships this node knows (name, group or not, node, run, type), at most [`MAX_REGISTRY_ENTRIES`] |
//! | `GET /api/members` | JSON: the members as this node sees them (id, address, run, roles, reachable) |
//!
//! **Access.** Every path is read-only and **unauthenticated**: anyone who
//! can reach the address can read the cluster's shape (ids, addresses,
//! roles). Bind it to an address only the platform reaches (the pod's own
//! address for the kubelet's probes and the scraper, or 127.0.0.1), or put
//! it behind the platform's authenticating proxy; the node's peer port, with
//! mutual TLS, is separate and unaffected.
//!
//! **Metrics.** The endpoint keeps its own series (read at scrape time,
//! each with a `node` label, so several nodes in one process do not mix) in
//! a recorder of its own, where a gauge no longer set (an actor type, a
//! name or a peer gone) is dropped after [`STALE_AFTER`]. The first
//! endpoint started in a process also installs a Prometheus recorder as
//! the process's [`metrics`] recorder and shows it after its own, so that
//! what the runtime and the application record through the facade appears
//! too; if another recorder is installed already (the application chose
//! its own exporter), the endpoint says so in the log and shows its own
//! series only.
//!
//! ```no_run
//! # async fn run(cluster: actor_cluster::Cluster) -> Result<(), actor_ops::OpsError> {
//! let ops = actor_ops::OpsServer::start(&cluster, "0.0.0.0:9100".parse().unwrap()).await?;
//! println!("probes on http://{}/health/ready", ops.local_addr());
//! # Ok(()) }
//! ```

#[cfg(feature = "otel")]
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;

use actor_cluster::{Cluster, ClusterEvent};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use tokio::sync::oneshot;

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen for the operations endpoint on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A running operations endpoint. It stops when [`shutdown`](Self::shutdown)
/// is called or the value is dropped.
#[derive(Debug)]
pub struct OpsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How long a series of the endpoint's own that is no longer set (an actor
/// type, a name or a peer gone) stays on `/metrics`.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

struct Ops {
    cluster: Cluster,
    node: String,
    /// The endpoint's own series (read at scrape time, and membership
    /// events): its gauges are dropped once not set for [`STALE_AFTER`].
    own: PrometheusRecorder,
    /// The process's recorder, if this endpoint installed it: what the
    /// runtime and the application record through the facade.
    process: Option<PrometheusHandle>,
}

impl Ops {
    /// Records into the endpoint's own recorder.
    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.own, f)
    }
}

impl OpsServer {
    /// Serves the operations endpoint of `cluster`'s node on `addr` (port 0
    /// picks a free port: see [`local_addr`](Self::local_addr)).
    pub async fn start(cluster: &Cluster, addr: SocketAddr) -> Result<OpsServer, OpsError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| OpsError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| OpsError::Bind { addr, source })?;
        let own = PrometheusBuilder::new()
            .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(STALE_AFTER))
            .build_recorder();
        let built = PrometheusBuilder::new().build_recorder();
        let handle = built.handle();
        let process = match metrics::set_global_recorder(built) {
            Ok(()) => {
                describe_process();
                Some(handle)
            }
            Err(_) => {
                tracing::info!(node = %cluster.id(), "a metrics recorder is installed already: this endpoint's /metrics shows its own series only");
                None
            }
        };
        let ops = Arc::new(Ops { cluster: cluster.clone(), node: cluster.id().to_owned(), own, process });
        describe(&ops);
        let app = Router::new()
            .route("/", get(view))
            .route("/health/alive", get(alive))
            .route("/health/ready", get(ready))
            .route("/metrics", get(render))
            .route("/api/node", get(node))
            .route("/api/members", get(members))
            .route("/api/actors", get(actors))
            .route("/api/tree", get(tree))
            .route("/api/peers", get(peers))
            .route("/api/registry", get(registry))
            .with_state(ops.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let events = tokio::spawn(count_events(ops.clone()));
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "the operations endpoint stopped");
            }
            events.abort();
        });
        tracing::info!(node = %cluster.id(), addr = %local, "operations endpoint listening");
        Ok(OpsServer { addr: local, stop: Some(stop), task: Some(task) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits for the requests in progress to finish.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        // Dropping the sender stops the server (graceful).
        self.stop.take();
    }
}

/// Gives the facade's series (the process's recorder) their help text.
fn describe_process() {
    metrics::describe_counter!("footlight_actor_panics_total", "Handler or hook panics, by actor type (process-wide).");
    metrics::describe_counter!("footlight_actor_restarts_total", "Supervisor restarts, by child type (process-wide).");
    metrics::describe_counter!("footlight_ask_failures_total", "Asks that failed, by reason (process-wide).");
    metrics::describe_histogram!(
        "footlight_actor_handler_seconds",
        "Time in a handler, by actor type (process-wide; only once actor_core::stats::set_handler_times(true))."
    );
}

/// Gives the endpoint's own series their help text.
fn describe(ops: &Ops) {
    ops.record(|| {
        metrics::describe_gauge!("footlight_cluster_members", "Members as this node sees them, by reachability.");
        metrics::describe_gauge!(
            "footlight_cluster_ready",
            "1 once the node is admitted to the cluster and not downed."
        );
        metrics::describe_gauge!("footlight_node_peers", "Peers this node is connected to.");
        metrics::describe_counter!("footlight_gossip_packets_sent_total", "SWIM packets sent.");
        metrics::describe_counter!("footlight_gossip_bytes_sent_total", "SWIM payload bytes sent.");
        metrics::describe_counter!("footlight_gossip_packets_received_total", "SWIM packets received.");
        metrics::describe_counter!("footlight_gossip_bytes_received_total", "SWIM payload bytes received.");
        metrics::describe_counter!(
            "footlight_membership_events_total",
            "Membership events seen by this node, by kind."
        );
        metrics::describe_gauge!("footlight_actors", "Top-level and named actors alive, by type.");
        metrics::describe_gauge!(
            "footlight_actor_mailbox_depth",
            "Messages waiting in the mailboxes of the top-level and named actors, by type (bounded mailboxes)."
        );
        metrics::describe_gauge!(
            "footlight_actor_messages_handled",
            "Messages taken by the live top-level and named actors since they were spawned, by type."
        );
        metrics::describe_gauge!("footlight_named_actor_mailbox_depth", "Messages waiting in a named actor's mailbox.");
        metrics::describe_counter!("footlight_asks_started_total", "Asks started, local and remote (process-wide).");
        metrics::describe_gauge!("footlight_peer_rtt_seconds", "Round trip of the connection's last heartbeat.");
        metrics::describe_gauge!(
            "footlight_peer_connection_bytes_sent",
            "Bytes written on the peer's current connection."
        );
        metrics::describe_gauge!(
            "footlight_peer_connection_bytes_received",
            "Bytes read on the peer's current connection."
        );
        metrics::describe_gauge!("footlight_peer_queued_bytes", "Encoded tells waiting in the connection's queue.");
        metrics::describe_gauge!(
            "footlight_peer_connection_frames_sent",
            "Frames queued on the peer's current connection."
        );
        metrics::describe_gauge!(
            "footlight_peer_connection_frames_received",
            "Whole frames read on the peer's current connection."
        );
        metrics::describe_counter!(
            "footlight_peer_connections_opened_total",
            "Connections opened to the peer since this node started."
        );
    });
}

/// Counts this node's membership events, by kind.
async fn count_events(ops: Arc<Ops>) {
    let mut events = ops.cluster.subscribe();
    while let Some(event) = events.recv().await {
        let kind = event_kind(&event);
        ops.record(|| {
            metrics::counter!("footlight_membership_events_total", "node" => ops.node.clone(), "event" => kind)
                .increment(1);
        });
    }
}

fn event_kind(event: &ClusterEvent) -> &'static str {
    match event {
        ClusterEvent::MemberUp(_) => "member_up",
        ClusterEvent::MemberUnreachable(_) => "member_unreachable",
        ClusterEvent::MemberReachable(_) => "member_reachable",
        ClusterEvent::MemberDown(_) => "member_down",
        ClusterEvent::MemberLeft(_) => "member_left",
        ClusterEvent::SelfDowned { .. } => "self_downed",
        ClusterEvent::NameLost { .. } => "name_lost",
        _ => "other",
    }
}

/// The live view: one page, plain HTML and JavaScript shipped in the
/// crate, that polls the JSON API every second.
const VIEW: &str = include_str!("view.html");

async fn view() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], VIEW).into_response()
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn alive(State(ops): State<Arc<Ops>>) -> Response {
    Json(Health { status: "alive", node: &ops.node, reason: None }).into_response()
}

/// Ready: [`Cluster::readiness`] (admitted, not downed, shards taken).
fn readiness(cluster: &Cluster) -> Result<(), (&'static str, String)> {
    cluster.readiness().map_err(|why| {
        let status = if cluster.is_downed() {
            "downed"
        } else if !cluster.is_joined() {
            "joining"
        } else {
            "starting"
        };
        (status, why)
    })
}

async fn ready(State(ops): State<Arc<Ops>>) -> Response {
    match readiness(&ops.cluster) {
        Ok(()) => Json(Health { status: "ready", node: &ops.node, reason: None }).into_response(),
        Err((status, reason)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status, node: &ops.node, reason: Some(reason) }))
                .into_response()
        }
    }
}

async fn render(State(ops): State<Arc<Ops>>) -> Response {
    let cluster = &ops.cluster;
    let members = cluster.members();
    let reachable = members.iter().filter(|m| cluster.is_reachable(&m.id)).count();
    let gossip = cluster.gossip_stats();
    let node = ops.node.clone();
    ops.record(|| {
        let n = || node.clone();
        metrics::gauge!("footlight_cluster_members", "node" => n(), "reachable" => "true").set(reachable as f64);
        metrics::gauge!("footlight_cluster_members", "node" => n(), "reachable" => "false")
            .set((members.len() - reachable) as f64);
        let ready = if readiness(cluster).is_ok() { 1.0 } else { 0.0 };
        metrics::gauge!("footlight_cluster_ready", "node" => n()).set(ready);
        metrics::gauge!("footlight_node_peers", "node" => n()).set(cluster.node().peers().len() as f64);
        metrics::counter!("footlight_gossip_packets_sent_total", "node" => n()).absolute(gossip.packets_sent);
        metrics::counter!("footlight_gossip_bytes_sent_total", "node" => n()).absolute(gossip.bytes_sent);
        metrics::counter!("footlight_gossip_packets_received_total", "node" => n()).absolute(gossip.packets_received);
        metrics::counter!("footlight_gossip_bytes_received_total", "node" => n()).absolute(gossip.bytes_received);
    });
    record_actors(&ops);
    record_peers(&ops);
    ops.record(|| {
        metrics::counter!("footlight_asks_started_total").absolute(actor_core::stats::asks_started());
    });
    let mut text = ops.own.handle().render();
    if let Some(process) = &ops.process {
        text.push_str(&process.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The most named actors given a series of their own on `/metrics` (the
/// rest still count in their type's series).
pub const MAX_NAMED_SERIES: usize = 1000;

/// Per actor type, and per named actor: counts, mailbox depths, messages
/// handled, read from the node's actor system at scrape time.
fn record_actors(ops: &Ops) {
    #[derive(Default)]
    struct ByType {
        actors: usize,
        depth: usize,
        handled: u64,
    }
    let mut by_type: std::collections::BTreeMap<String, ByType> = std::collections::BTreeMap::new();
    let mut named = Vec::new();
    for actor in ops.cluster.system().actors() {
        let t = by_type.entry(short_type(actor.type_name)).or_default();
        t.actors += 1;
        t.depth += actor.mailbox_depth.unwrap_or(0);
        t.handled += actor.handled;
        if let (Some(name), Some(depth)) = (actor.names.first(), actor.mailbox_depth)
            && named.len() < MAX_NAMED_SERIES
        {
            named.push((name.clone(), depth));
        }
    }
    ops.record(|| {
        for (actor_type, t) in by_type {
            let labels = [("node", ops.node.clone()), ("actor_type", actor_type)];
            metrics::gauge!("footlight_actors", &labels).set(t.actors as f64);
            metrics::gauge!("footlight_actor_mailbox_depth", &labels).set(t.depth as f64);
            metrics::gauge!("footlight_actor_messages_handled", &labels).set(t.handled as f64);
        }
        for (name, depth) in named {
            let labels = [("node", ops.node.clone()), ("name", name)];
            metrics::gauge!("footlight_named_actor_mailbox_depth", &labels).set(depth as f64);
        }
    });
}

/// Per connected peer: round trip, bytes, outbound queue, connections
/// opened.
fn record_peers(ops: &Ops) {
    let stats = ops.cluster.node().peer_stats();
    ops.record(|| {
        for p in stats {
            let labels = [("node", ops.node.clone()), ("peer", p.id.clone())];
            if let Some(rtt) = p.rtt {
                metrics::gauge!("footlight_peer_rtt_seconds", &labels).set(rtt.as_secs_f64());
            }
            // The current connection's: a new connection starts from 0.
            metrics::gauge!("footlight_peer_connection_bytes_sent", &labels).set(p.bytes_sent as f64);
            metrics::gauge!("footlight_peer_connection_bytes_received", &labels).set(p.bytes_received as f64);
            metrics::gauge!("footlight_peer_connection_frames_sent", &labels).set(p.frames_sent as f64);
            metrics::gauge!("footlight_peer_connection_frames_received", &labels).set(p.frames_received as f64);
            metrics::gauge!("footlight_peer_queued_bytes", &labels).set(p.queued_bytes as f64);
            metrics::counter!("footlight_peer_connections_opened_total", &labels).absolute(p.connections_opened);
        }
    });
}

#[derive(Serialize)]
struct PeerView {
    id: String,
    run: String,
    rtt_ms: Option<f64>,
    bytes_sent: u64,
    bytes_received: u64,
    frames_sent: u64,
    frames_received: u64,
    queued_bytes: usize,
    queued_other: usize,
    connected_for_s: f64,
    connections_opened: u64,
}

async fn peers(State(ops): State<Arc<Ops>>) -> Response {
    let list: Vec<PeerView> = ops
        .cluster
        .node()
        .peer_stats()
        .into_iter()
        .map(|p| PeerView {
            run: p.run.to_string(),
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            frames_sent: p.frames_sent,
            frames_received: p.frames_received,
            queued_bytes: p.queued_bytes,
            queued_other: p.queued_other,
            connected_for_s: p.connected_for.as_secs_f64(),
            connections_opened: p.connections_opened,
            id: p.id,
        })
        .collect();
    Json(list).into_response()
}

/// The most registry entries `/api/registry` lists (it says when it cut).
pub const MAX_REGISTRY_ENTRIES: usize = 10_000;

#[derive(Serialize)]
struct RegistryView {
    entries: Vec<EntryView>,
    /// More entries than listed exist.
    truncated: bool,
}

#[derive(Serialize)]
struct EntryView {
    name: String,
    group: bool,
    node: String,
    run: String,
    #[serde(rename = "type")]
    type_name: String,
}

async fn registry(State(ops): State<Arc<Ops>>) -> Response {
    let all = ops.cluster.registry_entries();
    let truncated = all.len() > MAX_REGISTRY_ENTRIES;
    let entries = all
        .into_iter()
        .take(MAX_REGISTRY_ENTRIES)
        .map(|e| EntryView {
            name: e.name,
            group: e.group,
            node: e.node,
            run: e.run.to_string(),
            type_name: short_type(&e.type_name),
        })
        .collect();
    Json(RegistryView { entries, truncated }).into_response()
}

/// A type's name without its module paths (`kv::app::Store` → `Store`).
fn short_type(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

#[derive(Serialize)]
struct ActorView {
    id: String,
    #[serde(rename = "type")]
    type_name: String,
    names: Vec<String>,
    top_level: bool,
    mailbox_depth: Option<usize>,
    mailbox_capacity: Option<usize>,
    handled: u64,
}

/// How long `/api/tree` waits for each generation of actors to say who
/// their children are.
pub const TREE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Serialize)]
struct TreeView {
    #[serde(flatten)]
    actor: ActorView,
    children: Option<Vec<TreeView>>,
}

fn actor_view(a: actor_core::ActorInfo) -> ActorView {
    ActorView {
        id: a.id.to_string(),
        type_name: short_type(a.type_name),
        names: a.names,
        top_level: a.top_level,
        mailbox_depth: a.mailbox_depth,
        mailbox_capacity: a.mailbox_capacity,
        handled: a.handled,
    }
}

fn tree_view(node: actor_core::ActorNode) -> TreeView {
    TreeView { actor: actor_view(node.info), children: node.children.map(|c| c.into_iter().map(tree_view).collect()) }
}

async fn tree(State(ops): State<Arc<Ops>>) -> Response {
    let roots = ops.cluster.system().tree(TREE_PATIENCE).await;
    Json(roots.into_iter().map(tree_view).collect::<Vec<_>>()).into_response()
}

async fn actors(State(ops): State<Arc<Ops>>) -> Response {
    let list: Vec<ActorView> = ops.cluster.system().actors().into_iter().map(actor_view).collect();
    Json(list).into_response()
}

#[derive(Serialize)]
struct MemberView {
    id: String,
    addr: String,
    /// As a string: a run is a 64-bit number, beyond what JavaScript's
    /// numbers hold exactly.
    run: String,
    roles: Vec<String>,
    reachable: bool,
}

async fn members(State(ops): State<Arc<Ops>>) -> Response {
    let list: Vec<MemberView> = ops
        .cluster
        .members()
        .into_iter()
        .map(|m| MemberView {
            reachable: ops.cluster.is_reachable(&m.id),
            id: m.id,
            addr: m.addr,
            run: m.run.to_string(),
            roles: m.roles,
        })
        .collect();
    Json(list).into_response()
}

#[derive(Serialize)]
struct NodeView {
    id: String,
    /// As a string (see [`MemberView::run`]).
    run: String,
    joined: bool,
    downed: Option<String>,
    peers: Vec<String>,
    gossip: GossipView,
}

#[derive(Serialize)]
struct GossipView {
    packets_sent: u64,
    bytes_sent: u64,
    packets_received: u64,
    bytes_received: u64,
}

async fn node(State(ops): State<Arc<Ops>>) -> Response {
    let c = &ops.cluster;
    let g = c.gossip_stats();
    let downed = c.is_downed().then(|| c.downed_reason().unwrap_or_else(|| "downed".to_owned()));
    Json(NodeView {
        id: ops.node.clone(),
        run: c.run().to_string(),
        joined: c.is_joined(),
        downed,
        peers: c.node().peers(),
        gossip: GossipView {
            packets_sent: g.packets_sent,
            bytes_sent: g.bytes_sent,
            packets_received: g.packets_received,
            bytes_received: g.bytes_received,
        },
    })
    .into_response()
}
