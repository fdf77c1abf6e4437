//! Leases: a lock with a time limit, held in a coordination service outside
//! the cluster, that fences what must never run twice (as Akka's `Lease`).
//!
//! Membership alone cannot tell a crashed member from one behind a
//! partition; a lease can, because the service that grants it is one
//! authority both sides ask. A [`ClusterSingleton`](crate::singleton) with
//! a lease starts its instance only once this node holds the lease, and
//! stops it as soon as the lease may have gone; the
//! [lease-majority](crate::sbr::Strategy::LeaseMajority) strategy of the
//! split-brain resolver lets the side that takes the lease survive.
//!
//! A lease has a name (what it guards, the same on every node), an owner
//! (this node: one per node) and a time to live: the holder renews it in
//! the background; when renewals stop (the process died, or it cannot reach
//! the service) the service lets it go after the time to live, and only
//! then can another owner take it. The holder's own view,
//! [`Lease::check`], turns false *before* the service can have let the
//! lease go: an owner that cannot renew stops trusting its lease at once.
//!
//! Two implementations:
//! - [`MemoryLeases`]: leases in this process, on tokio's clock (paused in
//!   tests): for tests and simulations;
//! - `EtcdLease` (feature `etcd`): a key bound to an etcd lease, for
//!   production clusters that already run etcd.

use actor_core::entropy::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub use etcd::{ETCD_KEY_PREFIX, EtcdLease};

/// A lease failed to reach its coordination service (or was misconfigured).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The coordination service did not answer or refused.
    #[error("lease service: {0}")]
    Service(String),
    /// The service did not answer in time.
    #[error("lease service did not answer within {0:?}")]
    Timeout(Duration),
}

/// A lease: one owner at a time, for at most its time to live after the
/// owner's last renewal. One value per (lease name, owner); cheap to share
/// behind an `Arc`.
#[async_trait]
pub trait Lease: fmt::Debug + Send + Sync + 'static {
    /// The lease's name (what it guards).
    fn name(&self) -> &str;

    /// This owner's name.
    fn owner(&self) -> &str;

    /// Tries to take the lease for this owner, and keeps renewing it while
    /// held. `Ok(true)`: held now (taken, or held already); `Ok(false)`:
    /// another owner holds it.
    async fn acquire(&self) -> Result<bool, LeaseError>;

    /// Gives the lease up (renewals stop). `Ok(true)`: it was held and is
    /// free now; `Ok(false)`: this owner did not hold it.
    async fn release(&self) -> Result<bool, LeaseError>;

    /// Who holds the lease now, as the service says (`None`: nobody). The
    /// lease-majority strategy uses it: a node whose own acquire failed
    /// still survives when a member of its side holds the lease.
    async fn holder(&self) -> Result<Option<String>, LeaseError>;

    /// Whether this owner may still act as the holder, from what it knows
    /// without asking the service: false once it was released, lost to
    /// another owner, or not renewed for long enough that the service may
    /// have let it go.
    fn check(&self) -> bool;
}

/// A store of in-memory leases shared by the nodes of one process (as
/// [`MemoryNetwork`](actor_remote::transport::mem::MemoryNetwork) is for
/// connections). Times are tokio's, so a paused test clock drives expiry.
///
/// ```
/// use std::time::Duration;
/// use actor_cluster::lease::{Lease, MemoryLeases};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let leases = MemoryLeases::new();
/// let a = leases.lease("scheduler", "node-a", Duration::from_secs(5));
/// let b = leases.lease("scheduler", "node-b", Duration::from_secs(5));
/// assert!(a.acquire().await.unwrap());
/// assert!(!b.acquire().await.unwrap());
/// leases.freeze("node-a"); // node-a's process stops renewing
/// tokio::time::sleep(Duration::from_secs(6)).await;
/// assert!(!a.check());
/// assert!(b.acquire().await.unwrap());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryLeases {
    inner: Arc<Store>,
}

#[derive(Default)]
struct Store {
    /// By lease name: the holder and until when.
    held: Mutex<HashMap<String, (String, Instant)>>,
    /// Owners whose renewals stopped (as if their process had died).
    frozen: Mutex<actor_core::entropy::HashSet<String>>,
}

impl Store {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_frozen(&self, owner: &str) -> bool {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).contains(owner)
    }

    /// Extends `name` for `owner` if it holds it; whether it does.
    fn renew(&self, name: &str, owner: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut held = self.held();
        match held.get_mut(name) {
            Some((holder, until)) if holder == owner && *until > now => {
                *until = now + ttl;
                true
            }
            _ => false,
        }
    }
}

impl fmt::Debug for MemoryLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLeases").field("held", &self.inner.held().len()).finish()
    }
}

impl MemoryLeases {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lease `name` for `owner`, expiring `ttl` after its last renewal
    /// (renewed every third of `ttl` while held).
    pub fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Arc<MemoryLease> {
        Arc::new(MemoryLease {
            store: self.inner.clone(),
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
            renewing: Mutex::new(None),
        })
    }

    /// Stops `owner`'s renewals from now on, as if its process had died
    /// (for tests): its leases expire after their time to live.
    pub fn freeze(&self, owner: &str) {
        self.inner.frozen.lock().unwrap_or_else(|p| p.into_inner()).insert(owner.to_owned());
    }

    /// The holder of lease `name` now, if any.
    pub fn holder(&self, name: &str) -> Option<String> {
        let now = Instant::now();
        self.inner.held().get(name).filter(|(_, until)| *until > now).map(|(owner, _)| owner.clone())
    }
}

/// One owner's handle on an in-memory lease (see [`MemoryLeases`]).
pub struct MemoryLease {
    store: Arc<Store>,
    name: String,
    owner: String,
    ttl: Duration,
    /// The renewal task while held.
    renewing: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for MemoryLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLease").field("name", &self.name).field("owner", &self.owner).finish()
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        if let Some(task) = self.renewing.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Renews `name` for `owner` every third of `ttl` until it is no longer
/// held (or the owner is frozen).
async fn renew(store: Weak<Store>, name: String, owner: String, ttl: Duration) {
    let mut every = tokio::time::interval(ttl / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        if store.is_frozen(&owner) || !store.renew(&name, &owner, ttl) {
            return;
        }
    }
}

#[async_trait]
impl Lease for MemoryLease {
    fn name(&self) -> &str {
        &self.name
    }

    fn owner(&self) -> &str {
        &self.owner
    }

    async fn acquire(&self) -> Result<bool, LeaseError> {
        if self.store.is_frozen(&self.owner) {
            return Err(LeaseError::Service(format!("{} is frozen", self.owner)));
        }
        let now = Instant::now();
        {
            let mut held = self.store.held();
            match held.get(&self.name) {
                Some((holder, until)) if holder != &self.owner && *until > now => return Ok(false),
                _ => {
                    held.insert(self.name.clone(), (self.owner.clone(), now + self.ttl));
                }
            }
        }
        let mut renewing = self.renewing.lock().unwrap_or_else(|p| p.into_inner());
        if renewing.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
            let task = renew(Arc::downgrade(&self.store), self.name.clone(), self.owner.clone(), self.ttl);
            *renewing = Some(tokio::spawn(task));
        }
        Ok(true)
    }

    async fn release(&self) -> Result<bool, LeaseError> {
        if let Some(task) = self.renewing.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        let now = Instant::now();
        let mut held = self.store.held();
        match held.get(&self.name) {
            Some((holder, until)) if holder == &self.owner && *until > now => {
                held.remove(&self.name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn holder(&self) -> Result<Option<String>, LeaseError> {
        let now = Instant::now();
        Ok(self.store.held().get(&self.name).filter(|(_, until)| *until > now).map(|(owner, _)| owner.clone()))
    }

    /// Held, with at least a quarter of the time to live to spare (while
    /// renewals work, two thirds are): an owner whose renewals stopped
    /// gives up before another can take the lease.
    fn check(&self) -> bool {
        let spare = Instant::now() + self.ttl / 4;
        self.store.held().get(&self.name).is_some_and(|(holder, until)| holder == &self.owner && *until > spare)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_is_renewed_and_expires_only_after_its_holder_stops_renewing() {
        let leases = MemoryLeases::new();
        let ttl = Duration::from_secs(3);
        let a = leases.lease("s", "a", ttl);
        let b = leases.lease("s", "b", ttl);
        assert!(a.acquire().await.unwrap());
        assert!(a.acquire().await.unwrap(), "held already");
        // Renewed well past its first time to live.
        tokio::time::sleep(ttl * 5).await;
        assert!(a.check());
        assert!(!b.acquire().await.unwrap());
        assert!(!b.check());
        leases.freeze("a");
        let frozen_at = Instant::now();
        let mut a_gave_up = None;
        while !b.acquire().await.unwrap() {
            if !a.check() && a_gave_up.is_none() {
                a_gave_up = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The last renewal was at most a third of the ttl before the freeze.
        assert!(Instant::now() >= frozen_at + ttl - ttl / 3, "taken before the time to live ran out");
        // a stopped trusting its lease at least a quarter ttl before b took it.
        let gave_up = a_gave_up.expect("a stopped trusting the lease before it expired");
        assert!(Instant::now() >= gave_up + ttl / 4 - Duration::from_millis(100));
        assert!(!a.check());
        assert_eq!(leases.holder("s").as_deref(), Some("b"));
        assert!(!a.release().await.unwrap());
        assert!(b.release().await.unwrap());
        assert_eq!(leases.holder("s"), None);
    }
}
