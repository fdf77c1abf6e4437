//! Stand-ins: the local representatives of peers' actors.
//!
//! A ref to a remote actor is bound to a connection (the one it was looked
//! up or received through). Its stand-in is kept here per connection and
//! remote actor handle, so that the actor's end (reported by its node, or
//! the loss of the node) reaches every ref, watcher and link. When a
//! connection is replaced by another to the same run of the peer (crossed
//! dials, a reconnect), its stand-ins move over; when it closed as a
//! duplicate before this side has the connection that replaces it, they wait
//! (up to [`SUCCESSOR_GRACE`]) for it.

use actor_core::entropy::HashMap;
use std::any::Any;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use actor_core::remote::StandIn;
use actor_core::{Actor, ActorId, ActorRef, ExitReason, WeakActorRef};

use super::outbox::{Command, Outbox, Refused};

/// How long stand-ins of a connection closed as a duplicate wait for the
/// connection that replaces it (the other side keeps it and is completing
/// it).
pub(crate) const SUCCESSOR_GRACE: Duration = Duration::from_secs(2);

/// Stand-ins one connection may hold: past this, refs in messages are
/// refused.
pub(crate) const MAX_STAND_INS_PER_CONNECTION: usize = 100_000;

/// The stand-ins of one remote actor on one connection.
pub(crate) struct Entry {
    /// Kept while anything may need them: a stand-in that is watched must
    /// hear of its actor's end even after every ref to it was dropped.
    stand_ins: Vec<StandIn>,
    /// The latest ref handed out (a `WeakActorRef<A>`), reused by lookups.
    latest: Box<dyn Any + Send + Sync>,
}

/// The stand-ins of one connection, by remote actor handle.
#[derive(Default)]
pub(crate) struct ConnStandIns(HashMap<u64, Entry>);

impl ConnStandIns {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reports the end of every remote actor here: `reason` to all who
    /// hold, watch or link to it.
    pub(crate) fn terminate_all(&self, reason: &ExitReason) {
        for stand_in in self.0.values().flat_map(|e| &e.stand_ins) {
            stand_in.terminate(reason.clone());
        }
    }

    /// Moves `other` in, joining the stand-ins of an actor in both; returns
    /// the actors that were not here yet.
    fn merge(&mut self, other: ConnStandIns) -> Vec<u64> {
        let mut added = Vec::new();
        for (id, mut entry) in other.0 {
            match self.0.get_mut(&id) {
                Some(existing) => existing.stand_ins.append(&mut entry.stand_ins),
                None => {
                    self.0.insert(id, entry);
                    added.push(id);
                }
            }
        }
        added
    }
}

/// Every stand-in of the node.
#[derive(Default)]
pub(crate) struct StandIns {
    /// By connection id.
    by_conn: Mutex<HashMap<u64, ConnStandIns>>,
    /// Of connections closed as duplicates, waiting for a successor, by
    /// peer node id and run.
    waiting: Mutex<HashMap<(String, u64), ConnStandIns>>,
}

impl StandIns {
    fn by_conn(&self) -> MutexGuard<'_, HashMap<u64, ConnStandIns>> {
        self.by_conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<(String, u64), ConnStandIns>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ref to remote actor `id` on connection `conn_id` handed out
    /// before, if it is still in use.
    pub(crate) fn reuse<A: Actor>(&self, conn_id: u64, id: u64) -> Option<ActorRef<A>> {
        let by_conn = self.by_conn();
        let entry = by_conn.get(&conn_id)?.0.get(&id)?;
        entry.latest.downcast_ref::<WeakActorRef<A>>()?.upgrade()
    }

    /// Keeps a stand-in of remote actor `id` on connection `conn_id`;
    /// `latest` (a `WeakActorRef<A>`) is the ref later lookups may reuse.
    /// True if it is the first stand-in of that actor there (its end must
    /// be subscribed to).
    pub(crate) fn adopt(
        &self,
        conn_id: u64,
        id: u64,
        stand_in: StandIn,
        latest: Option<Box<dyn Any + Send + Sync>>,
    ) -> bool {
        let mut by_conn = self.by_conn();
        let actors = &mut by_conn.entry(conn_id).or_default().0;
        let first = !actors.contains_key(&id);
        let entry = actors.entry(id).or_insert_with(|| Entry { stand_ins: Vec::new(), latest: Box::new(()) });
        entry.stand_ins.retain(|s| !s.is_unused());
        entry.stand_ins.push(stand_in);
        if let Some(latest) = latest {
            entry.latest = latest;
        }
        first
    }

    /// How many remote actors connection `conn_id` holds stand-ins of.
    pub(crate) fn count_on(&self, conn_id: u64) -> usize {
        self.by_conn().get(&conn_id).map_or(0, |m| m.0.len())
    }

    /// Takes the stand-ins of connection `conn_id`.
    pub(crate) fn take(&self, conn_id: u64) -> ConnStandIns {
        self.by_conn().remove(&conn_id).unwrap_or_default()
    }

    /// Takes the stand-ins of remote actor `id` on connection `conn_id` (it
    /// ended).
    pub(crate) fn take_actor(&self, conn_id: u64, id: u64) -> ConnStandIns {
        let entry = self.by_conn().get_mut(&conn_id).and_then(|m| m.0.remove(&id));
        ConnStandIns(entry.into_iter().map(|e| (id, e)).collect())
    }

    /// Moves stand-ins to connection `conn_id` and renews their watches
    /// there (through `outbox`).
    pub(crate) fn rehome(&self, moved: ConnStandIns, conn_id: u64, outbox: &Outbox) {
        let renew = self.by_conn().entry(conn_id).or_default().merge(moved);
        for id in renew {
            send_watch(outbox, id);
        }
    }

    /// Parks the stand-ins of a connection to run `run` of `peer` that
    /// closed as a duplicate, until a successor connection comes.
    pub(crate) fn park(&self, peer: &str, run: u64, moved: ConnStandIns) {
        self.waiting().entry((peer.to_owned(), run)).or_default().merge(moved);
    }

    /// Takes the stand-ins parked for run `run` of `peer`.
    pub(crate) fn unpark(&self, peer: &str, run: u64) -> Option<ConnStandIns> {
        self.waiting().remove(&(peer.to_owned(), run))
    }

    /// Whether stand-ins of run `run` of `peer` wait for a successor.
    pub(crate) fn is_parked(&self, peer: &str, run: u64) -> bool {
        self.waiting().contains_key(&(peer.to_owned(), run))
    }

    /// Takes every parked stand-in (the node is shutting down).
    pub(crate) fn unpark_all(&self) -> Vec<ConnStandIns> {
        self.waiting().drain().map(|(_, m)| m).collect()
    }

    /// Drops the stand-ins on connection `conn_id` that nothing uses any
    /// more (no ref to them is left, no live actor watches or links to
    /// them); for a remote actor that has none left, `unwatch` tells the
    /// peer its end need not be reported any more. It runs under the lock,
    /// so an adoption that follows sends its `Watch` after the `Unwatch`;
    /// an actor whose `unwatch` found no room is kept for the next sweep.
    pub(crate) fn sweep(&self, conn_id: u64, mut unwatch: impl FnMut(u64) -> bool) {
        let mut by_conn = self.by_conn();
        let Some(actors) = by_conn.get_mut(&conn_id) else { return };
        actors.0.retain(|id, entry| {
            entry.stand_ins.retain(|s| !s.is_unused());
            !entry.stand_ins.is_empty() || !unwatch(*id)
        });
    }

    /// The id local actors know remote actor `id` on connection `conn_id`
    /// by: its stand-in's, if there is one.
    pub(crate) fn local_id(&self, conn_id: u64, id: u64) -> Option<ActorId> {
        let by_conn = self.by_conn();
        by_conn.get(&conn_id)?.0.get(&id)?.stand_ins.first().map(StandIn::id)
    }
}

/// Asks the peer behind `outbox` to report the end of its actor `id`.
pub(crate) fn send_watch(outbox: &Outbox, id: u64) {
    if let Err(Refused::Full(cmd)) = outbox.try_send(Command::Watch { id }) {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let _ = outbox.send(cmd).await;
        });
    }
}
