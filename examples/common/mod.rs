//! Shared by the multi-node examples: the command-line flags every node
//! takes, TLS set-up (real certificates, or a development CA shared by the
//! nodes of one machine), logging, and starting a node over QUIC.
#![allow(dead_code, unreachable_pub)]

use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Args;
use footlight::Cluster;
use footlight::Node;
use footlight::cluster::SplitBrainResolver;
use footlight::cluster::sbr::Strategy;
use footlight::remote::transport::quic::Quic;
use footlight::remote::transport::tls::{DevCa, Tls};

/// The flags of a node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id: unique in the cluster, and the DNS name in its certificate.
    #[arg(long)]
    pub node: String,
    /// The UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Nodes to join through, comma-separated: `ip:port`, or `name:port` for a
    /// DNS name that resolves to several nodes.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// The address other nodes dial to reach this one, if not `--listen`
    /// (for example when listening on 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The cluster name; nodes of other clusters are refused.
    #[arg(long, default_value = "footlight")]
    pub cluster: String,
    /// This node's certificate (PEM), issued by the cluster CA for `--node`.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// The private key of `--cert` (PEM).
    #[arg(long, requires_all = ["cert", "ca"])]
    pub key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM).
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    /// Without `--cert`: where the development CA shared by the nodes of this
    /// machine is kept (created on first use).
    #[arg(long)]
    pub dev_ca_dir: Option<PathBuf>,
    /// How log events are written to stderr (`RUST_LOG` sets which).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How a partition is decided: `keep-majority`, `keep-oldest`,
    /// `down-all`, `static-quorum=N`, or `off` (each side then carries on
    /// alone). Every node of a cluster must use the same.
    #[arg(long, default_value = "keep-majority", value_parser = parse_split_brain)]
    pub split_brain: SplitBrain,
    /// Serve the operations endpoint (health and readiness probes,
    /// `/metrics`, a JSON API) over HTTP on this address, e.g.
    /// `0.0.0.0:9100`. Unauthenticated and read-only: bind it where only
    /// the platform reaches.
    #[arg(long)]
    pub ops: Option<std::net::SocketAddr>,
}

/// A `--split-brain` choice.
#[derive(Debug, Clone)]
pub struct SplitBrain(pub Option<SplitBrainResolver>);

impl Default for SplitBrain {
    fn default() -> Self {
        SplitBrain(Some(SplitBrainResolver::keep_majority()))
    }
}

fn parse_split_brain(text: &str) -> Result<SplitBrain, String> {
    let strategy = match text {
        "off" => return Ok(SplitBrain(None)),
        "keep-majority" => Strategy::KeepMajority,
        "keep-oldest" => Strategy::KeepOldest { down_if_alone: true },
        "down-all" => Strategy::DownAll,
        other => match other.strip_prefix("static-quorum=").map(str::parse::<usize>) {
            Some(Ok(quorum)) if quorum > 0 => Strategy::StaticQuorum(quorum),
            _ => {
                return Err(format!(
                    "{other:?}: expected keep-majority, keep-oldest, down-all, static-quorum=N or off"
                ));
            }
        },
    };
    Ok(SplitBrain(Some(SplitBrainResolver::new(strategy))))
}

/// Logs to stderr; `RUST_LOG` overrides the default level (`warn`).
pub fn init_logging(args: &NodeArgs) {
    init_logging_as("warn", args.log_format);
}

/// How log events are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event, with a timestamp; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line (for a log collector).
    Json,
}

/// Logs to stderr as text; `RUST_LOG` overrides the default filter `default`.
pub fn init_logging_default(default: &str) {
    init_logging_as(default, LogFormat::Text);
}

/// Logs to stderr in `format`, with timestamps; `RUST_LOG` overrides the
/// default filter `default`. Colours only when stderr is a terminal.
pub fn init_logging_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Keeps the panics the examples provoke on purpose (their message holds
/// `marker`) out of stderr: the runtime catches and logs them anyway. Any
/// other panic is printed as usual.
pub fn quiet_expected_panics(marker: &'static str) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if !text.contains(marker) {
            default(info);
        }
    }));
}

/// The node's TLS identity: the given files, else a certificate from the
/// shared development CA (said loudly: it is not for production).
pub fn tls(args: &NodeArgs) -> Result<Tls, Box<dyn Error>> {
    if let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) {
        return Ok(Tls::from_pem_files(cert, key, ca)?);
    }
    let dir = args.dev_ca_dir.clone().unwrap_or_else(default_dev_ca_dir);
    let ca = shared_dev_ca(&dir, &args.cluster)?;
    tracing::warn!(
        node = %args.node,
        ca = %dir.display(),
        "no --cert/--key/--ca given: using a DEVELOPMENT certificate from a local dev CA (not for production)"
    );
    Ok(ca.issue(&args.node)?)
}

fn default_dev_ca_dir() -> PathBuf {
    std::env::temp_dir().join("footlight-dev-ca")
}

/// The development CA of `cluster` kept in `dir`, created by whichever node
/// comes first (atomically: the others read that one).
pub fn shared_dev_ca(dir: &Path, cluster: &str) -> Result<DevCa, Box<dyn Error>> {
    const KEY_HEADER: &str = "-----BEGIN PRIVATE KEY-----";
    let path = dir.join(format!("{cluster}.dev-ca.pem"));
    if !path.exists() {
        std::fs::create_dir_all(dir)?;
        let ca = DevCa::generate(cluster)?;
        let tmp = dir.join(format!(".{cluster}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, format!("{}{}", ca.ca_pem(), ca.key_pem()))?;
        // A hard link fails if the file exists: the first writer wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    let both = std::fs::read_to_string(&path)?;
    let split = both.find(KEY_HEADER).ok_or("the dev CA file holds no key")?;
    Ok(DevCa::from_pem(cluster, &both[..split], &both[split..])?)
}

/// Starts the node the flags describe, over QUIC with mutual TLS, as a
/// member of the cluster its seeds lead to, and returns once the cluster has
/// admitted it (so nothing is registered or accepted before the join).
pub async fn start(args: &NodeArgs) -> Result<Cluster, Box<dyn Error>> {
    let mut builder = Node::builder(args.node.clone())
        .cluster(args.cluster.clone())
        .transport(Quic::new(tls(args)?))
        .listen(args.listen.clone());
    if let Some(addr) = &args.advertise {
        builder = builder.advertise(addr.clone());
    }
    let mut cluster = Cluster::builder(builder).seeds(args.seeds.clone());
    if let Some(resolver) = &args.split_brain.0 {
        cluster = cluster.split_brain_resolver(resolver.clone());
    }
    let cluster = cluster.start().await?;
    // Before the join: the readiness probe says "joining" meanwhile.
    if let Some(addr) = args.ops {
        serve_ops(&cluster, addr).await?;
    }
    if !cluster.is_joined() {
        tracing::info!(seeds = ?args.seeds, "waiting to join the cluster through the seeds");
        cluster.joined().await?;
    }
    Ok(cluster)
}

/// The node's operations endpoint, if it serves one: a node started again
/// (a new run after being downed) takes the address over.
static OPS: std::sync::Mutex<Option<actor_ops::OpsServer>> = std::sync::Mutex::new(None);

/// Serves `cluster`'s operations endpoint on `addr`, in place of the one
/// an earlier run of this node served.
async fn serve_ops(cluster: &Cluster, addr: std::net::SocketAddr) -> Result<(), Box<dyn Error>> {
    let earlier = OPS.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(earlier) = earlier {
        earlier.shutdown().await;
    }
    let server = actor_ops::OpsServer::start(cluster, addr).await?;
    tracing::info!(addr = %server.local_addr(), "operations endpoint: /health/alive, /health/ready, /metrics, /api/members, /api/node");
    *OPS.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
    Ok(())
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Waits (up to `within`) until `node` sees at least `n` members, itself
/// included; the error says whom it sees.
pub async fn wait_for_members(node: &Cluster, n: usize, within: std::time::Duration) -> Result<(), String> {
    let mut events = node.subscribe();
    let wait = async {
        while node.members().len() < n {
            if events.recv().await.is_none() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, wait).await;
    if node.members().len() >= n {
        return Ok(());
    }
    let ids: Vec<String> = node.members().into_iter().map(|m| m.id).collect();
    Err(format!("expected {n} members within {within:?}, {} sees {ids:?}", node.id()))
}

/// Prints cluster events as they come, prefixed with the node id.
pub fn log_cluster_events(node: &Cluster) {
    let mut events = node.subscribe();
    let me = node.id().to_owned();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            use footlight::ClusterEvent::*;
            match event {
                MemberUp(m) if m.id != me => eprintln!("[{me}] member up: {} ({})", m.id, m.addr),
                MemberUnreachable(m) => eprintln!("[{me}] member unreachable: {}", m.id),
                MemberReachable(m) => eprintln!("[{me}] member reachable again: {}", m.id),
                MemberDown(m) => eprintln!("[{me}] member down: {}", m.id),
                MemberLeft(m) => eprintln!("[{me}] member left: {}", m.id),
                NameLost { name, winner } => eprintln!("[{me}] name {name:?} lost to {winner}"),
                SelfDowned { reason } => eprintln!("[{me}] this node downed itself: {reason}"),
                _ => {}
            }
        }
    });
}

/// The members a node has seen, by id: their addresses and whether they
/// are reachable now. Once the node has downed itself its view is empty;
/// this says whom to rejoin through.
#[derive(Clone, Default)]
pub struct Known(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (String, bool)>>>);

impl Known {
    /// Follows `node`'s events.
    pub fn watch(node: &Cluster) -> Known {
        use footlight::ClusterEvent::*;
        let known = Known::default();
        let (mut events, me, map) = (node.subscribe(), node.id().to_owned(), known.0.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    MemberUp(m) if m.id != me => {
                        map.insert(m.id, (m.addr, true));
                    }
                    MemberUnreachable(m) => {
                        if let Some(entry) = map.get_mut(&m.id) {
                            entry.1 = false;
                        }
                    }
                    MemberReachable(m) => {
                        if let Some(entry) = map.get_mut(&m.id) {
                            entry.1 = true;
                        }
                    }
                    MemberDown(m) | MemberLeft(m) => {
                        map.remove(&m.id);
                    }
                    _ => {}
                }
            }
        });
        known
    }

    /// The addresses of the members this node could not reach (the side
    /// that won, once it has downed itself): its own side is downing itself
    /// too. All it knew if it could reach every one.
    pub fn other_side(&self) -> Vec<String> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let other: Vec<String> = known.values().filter(|(_, up)| !up).map(|(addr, _)| addr.clone()).collect();
        if other.is_empty() { known.values().map(|(addr, _)| addr.clone()).collect() } else { other }
    }
}

/// Shuts `old` (a node that downed itself) down and starts this node again
/// as a new member (a new run) on the address it had, joining through
/// `seeds` and its own seeds; returns once the cluster has admitted it
/// (after the partition heals).
pub async fn start_again(mut args: NodeArgs, old: Cluster, seeds: Vec<String>) -> Result<Cluster, Box<dyn Error>> {
    args.listen = old.addr().to_owned();
    args.seeds.extend(seeds);
    args.seeds.sort();
    args.seeds.dedup();
    old.shutdown().await;
    // The old endpoint may still hold the address for a while: QUIC keeps a
    // closed connection's state for a few round trips, and those to the
    // other side of a partition have had their retransmission timers backed
    // off. Try again until it is free.
    let patience = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match start(&args).await {
            Err(e) if address_in_use(e.as_ref()) && tokio::time::Instant::now() < patience => {
                println!("[{}] address {} still in use; trying again", args.node, args.listen);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            started => return started,
        }
    }
}

/// Whether `e`, or an error it came from, is an address already in use.
fn address_in_use(e: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            || e.to_string().contains("Address already in use")
        {
            return true;
        }
        cause = e.source();
    }
    false
}
