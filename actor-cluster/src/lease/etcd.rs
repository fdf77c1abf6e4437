//! A [`Lease`] held in etcd (feature `etcd`): the key
//! `footlight/leases/<name>`, bound to an etcd lease with the time to live,
//! created only if absent (a transaction), renewed by keep-alives, and
//! deleted by etcd when the renewals stop.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::time::Instant;

use super::{Lease, LeaseError};

/// The key prefix of every lease.
pub const ETCD_KEY_PREFIX: &str = "footlight/leases/";

/// How long one request to etcd may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One owner's handle on a lease held in etcd.
///
/// The owner trusts its lease ([`Lease::check`]) only while at least a
/// quarter of the time to live remains since the last renewal etcd
/// confirmed (counted from when the renewal was sent, so never later than
/// etcd's own count): an owner cut off from etcd stops trusting it before
/// etcd can hand it to another. etcd rounds the time to live to whole
/// seconds and enforces a minimum of its own (about 1.5 s with default
/// settings); use at least 2 s.
///
/// ```no_run
/// use std::time::Duration;
/// use actor_cluster::lease::{EtcdLease, Lease};
/// # async fn run() -> Result<(), actor_cluster::lease::LeaseError> {
/// let lease = EtcdLease::connect(&["http://127.0.0.1:2379"], "scheduler", "node-a", Duration::from_secs(5)).await?;
/// if lease.acquire().await? {
///     // this node holds "scheduler" while lease.check() says so
/// }
/// # Ok(()) }
/// ```
pub struct EtcdLease {
    client: Client,
    name: String,
    owner: String,
    key: String,
    ttl: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The etcd lease this owner holds the key with.
    held: Option<i64>,
    /// Until when the owner may trust it.
    trusted_until: Option<Instant>,
    /// The keep-alive task.
    renewing: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for EtcdLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLease").field("name", &self.name).field("owner", &self.owner).finish()
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        if let Some(task) = self.lock().renewing.take() {
            task.abort();
        }
    }
}

fn service(e: etcd_client::Error) -> LeaseError {
    LeaseError::Service(e.to_string())
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, LeaseError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(result) => result.map_err(service),
        Err(_) => Err(LeaseError::Timeout(REQUEST_TIMEOUT)),
    }
}

impl EtcdLease {
    /// Connects to etcd at `endpoints` (`http://host:port`) for lease
    /// `name` held by `owner`, expiring `ttl` after its last renewal
    /// (renewed every third of it while held).
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Arc<EtcdLease>, LeaseError> {
        let client = timed(Client::connect(endpoints, None)).await?;
        Ok(Arc::new(EtcdLease {
            client,
            name: name.to_owned(),
            owner: owner.to_owned(),
            key: format!("{ETCD_KEY_PREFIX}{name}"),
            // etcd counts whole seconds: round up.
            ttl: Duration::from_secs(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(Duration::from_secs(1)),
            state: Arc::default(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Keeps `lease` alive every third of `ttl`; stops once a renewal fails
/// (the owner then stops trusting the lease when `trusted_until` passes).
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, state: std::sync::Weak<Mutex<State>>) {
    let every = ttl / 3;
    let Ok(Ok((mut keeper, mut stream))) = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease)).await
    else {
        tracing::warn!(lease, "etcd keep-alive stream not opened; the lease will lapse");
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let renewed = tokio::time::timeout(every, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        let Some(state) = state.upgrade() else { return };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        match renewed {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 && state.held == Some(lease) => {
                state.trusted_until = Some(sent + ttl - ttl / 4);
            }
            other => {
                tracing::warn!(lease, answer = ?other.map(|r| r.map(|m| m.map(|m| m.ttl()))), "etcd lease not renewed; it is lost");
                if state.held == Some(lease) {
                    state.trusted_until = None;
                    state.held = None;
                }
                return;
            }
        }
    }
}

#[async_trait]
impl Lease for EtcdLease {
    fn name(&self) -> &str {
        &self.name
    }

    fn owner(&self) -> &str {
        &self.owner
    }

    async fn acquire(&self) -> Result<bool, LeaseError> {
        if self.check() {
            return Ok(true);
        }
        let mut client = self.client.clone();
        let sent = Instant::now();
        let granted = timed(client.lease_grant(self.ttl_secs(), None)).await?;
        let lease = granted.id();
        // Trust what etcd granted (it may round or raise the ttl), never more
        // than asked.
        let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(0)).min(self.ttl);
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(self.key.as_str(), self.owner.as_str(), Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let answer = match timed(client.txn(txn)).await {
            Ok(answer) => answer,
            Err(e) => {
                let _ = timed(client.lease_revoke(lease)).await;
                return Err(e);
            }
        };
        if !answer.succeeded() {
            let holder = answer.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            });
            tracing::debug!(lease = %self.name, holder = ?holder, "etcd lease held by another owner");
            let _ = timed(client.lease_revoke(lease)).await;
            return Ok(false);
        }
        let mut state = self.lock();
        state.held = Some(lease);
        state.trusted_until = Some(sent + ttl - ttl / 4);
        if let Some(old) = state.renewing.take() {
            old.abort();
        }
        state.renewing = Some(tokio::spawn(keep_alive(client, lease, ttl, Arc::downgrade(&self.state))));
        Ok(true)
    }

    async fn release(&self) -> Result<bool, LeaseError> {
        let lease = {
            let mut state = self.lock();
            if let Some(task) = state.renewing.take() {
                task.abort();
            }
            state.trusted_until = None;
            state.held.take()
        };
        let Some(lease) = lease else { return Ok(false) };
        let mut client = self.client.clone();
        timed(client.lease_revoke(lease)).await?;
        Ok(true)
    }

    async fn holder(&self) -> Result<Option<String>, LeaseError> {
        let mut client = self.client.clone();
        let answer = timed(client.get(self.key.as_str(), None)).await?;
        Ok(answer.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    fn check(&self) -> bool {
        let state = self.lock();
        state.held.is_some() && state.trusted_until.is_some_and(|until| Instant::now() < until)
    }
}
