//! The member view: which members are up and reachable, as a pure value.
//!
//! [`View::next`] turns a set of member states (what SWIM believes) into the
//! view they mean; [`View::apply`] replaces a view with the next one and
//! says what changed, as [`ClusterEvent`]s plus the members that went and
//! came. Neither does I/O, so both are tested as plain functions: a set of
//! states gives the same view in any order (the tie-break between two
//! identities of one node is a total order).

use actor_core::entropy::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::membership::{ClusterEvent, Ident};

/// A member's state as SWIM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Answers probes.
    Alive,
    /// Stopped answering; not down yet.
    Suspect,
    /// Declared down (or left).
    Down,
}

/// The active members by node id, and whether each is reachable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) members: BTreeMap<String, (Ident, bool)>,
    /// Members that said they are leaving, by id and run.
    pub(crate) leaving: HashMap<String, u64>,
    /// Why this node downed itself, once it has.
    pub(crate) self_downed: Option<String>,
}

/// What [`View::apply`] found changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// The events, in the order subscribers see them.
    pub(crate) events: Vec<ClusterEvent>,
    /// Members (identities) that are gone: down, left, or replaced by a
    /// newer run.
    pub(crate) gone: Vec<Ident>,
    /// Members that came up (new, or a newer run).
    pub(crate) up: Vec<Ident>,
}

impl View {
    /// The view of `me` alone.
    pub(crate) fn of(me: &Ident) -> View {
        let mut view = View::default();
        view.members.insert(me.id.clone(), (me.clone(), true));
        view
    }

    /// The members that `states` make active, with `me` always in: of two
    /// identities of one node the winning one counts, whatever the order.
    pub(crate) fn next<'a>(
        me: &Ident,
        states: impl IntoIterator<Item = (&'a Ident, Liveness)>,
    ) -> BTreeMap<String, (Ident, bool)> {
        use foca::Identity;
        let mut next: BTreeMap<String, (Ident, bool)> = BTreeMap::new();
        for (id, liveness) in states {
            let reachable = match liveness {
                Liveness::Alive => true,
                Liveness::Suspect => false,
                Liveness::Down => continue,
            };
            if id.id == me.id {
                continue;
            }
            match next.get(&id.id) {
                Some((known, _)) if !id.win_addr_conflict(known) => {}
                _ => {
                    next.insert(id.id.clone(), (id.clone(), reachable));
                }
            }
        }
        next.insert(me.id.clone(), (me.clone(), true));
        next
    }

    /// Replaces the members with `next` and says what changed.
    pub(crate) fn apply(&mut self, next: BTreeMap<String, (Ident, bool)>) -> Changes {
        let mut changes = Changes::default();
        for (id, (old, _)) in &self.members {
            let replaced = next.get(id).is_some_and(|(new, _)| new.run != old.run);
            if !next.contains_key(id) || replaced {
                let left = self.leaving.get(id) == Some(&old.run);
                changes.events.push(if left {
                    ClusterEvent::MemberLeft(old.member())
                } else {
                    ClusterEvent::MemberDown(old.member())
                });
                changes.gone.push(old.clone());
            }
        }
        for (id, (new, reachable)) in &next {
            match self.members.get(id) {
                Some((old, was)) if old.run == new.run => {
                    if *was && !reachable {
                        changes.events.push(ClusterEvent::MemberUnreachable(new.member()));
                    } else if !was && *reachable {
                        changes.events.push(ClusterEvent::MemberReachable(new.member()));
                    }
                }
                _ => {
                    changes.events.push(ClusterEvent::MemberUp(new.member()));
                    if !reachable {
                        changes.events.push(ClusterEvent::MemberUnreachable(new.member()));
                    }
                    changes.up.push(new.clone());
                }
            }
        }
        for old in &changes.gone {
            if self.leaving.get(&old.id) == Some(&old.run) {
                self.leaving.remove(&old.id);
            }
        }
        self.members = next;
        changes
    }

    /// The events that describe this view to a new subscriber.
    fn snapshot(&self) -> VecDeque<ClusterEvent> {
        let mut snapshot = VecDeque::new();
        for (m, reachable) in self.members.values() {
            snapshot.push_back(ClusterEvent::MemberUp(m.member()));
            if !reachable {
                snapshot.push_back(ClusterEvent::MemberUnreachable(m.member()));
            }
        }
        if let Some(reason) = &self.self_downed {
            snapshot.push_back(ClusterEvent::SelfDowned { reason: reason.clone() });
        }
        snapshot
    }
}

/// Cluster events kept for a subscriber that falls behind.
const EVENT_BUFFER: usize = 1024;

/// The view shared by the membership task and readers, with its
/// subscribers.
pub(crate) struct SharedView {
    view: Mutex<View>,
    events: broadcast::Sender<ClusterEvent>,
    /// Whether the cluster has admitted this node (see `Cluster::joined`).
    joined: tokio::sync::watch::Sender<bool>,
}

impl Default for SharedView {
    fn default() -> Self {
        SharedView {
            view: Mutex::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            joined: tokio::sync::watch::channel(false).0,
        }
    }
}

impl SharedView {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `next` and emits the events under the view's lock, so a
    /// subscription's snapshot and its events never overlap or miss one.
    pub(crate) fn apply(&self, me: &str, next: BTreeMap<String, (Ident, bool)>) -> Changes {
        let mut view = self.lock();
        let changes = view.apply(next);
        for event in &changes.events {
            match event {
                ClusterEvent::MemberUp(m) => tracing::info!(node = %me, member = %m.id, "member up"),
                ClusterEvent::MemberDown(m) => tracing::warn!(node = %me, member = %m.id, "member down"),
                ClusterEvent::MemberLeft(m) => tracing::info!(node = %me, member = %m.id, "member left"),
                ClusterEvent::MemberUnreachable(m) => tracing::warn!(node = %me, member = %m.id, "member unreachable"),
                ClusterEvent::MemberReachable(m) => tracing::info!(node = %me, member = %m.id, "member reachable"),
                ClusterEvent::NameLost { .. } | ClusterEvent::SelfDowned { .. } => {}
            }
            let _ = self.events.send(event.clone());
        }
        drop(view);
        changes
    }

    /// This node is admitted (once for good).
    pub(crate) fn mark_joined(&self) {
        self.joined.send_if_modified(|joined| !std::mem::replace(joined, true));
    }

    pub(crate) fn is_joined(&self) -> bool {
        *self.joined.borrow()
    }

    pub(crate) fn joined_rx(&self) -> tokio::sync::watch::Receiver<bool> {
        self.joined.subscribe()
    }

    /// This node downed itself: the view keeps only this node (the others
    /// are no longer its members; no event for each), it is no longer
    /// joined, and `SelfDowned` goes to subscribers now and to later ones in
    /// their snapshot. Returns the members dropped.
    pub(crate) fn down_self(&self, me: &str, reason: &str) -> Vec<Ident> {
        let mut view = self.lock();
        let others: Vec<Ident> = view.members.iter().filter(|(id, _)| *id != me).map(|(_, (m, _))| m.clone()).collect();
        view.members.retain(|id, _| id == me);
        view.self_downed = Some(reason.to_owned());
        self.joined.send_replace(false);
        let _ = self.events.send(ClusterEvent::SelfDowned { reason: reason.to_owned() });
        others
    }

    /// Announces an event that is not a view change (say, a lost name).
    pub(crate) fn emit(&self, event: ClusterEvent) {
        let _ = self.events.send(event);
    }

    /// Events from now on, after one `MemberUp` per current member (and a
    /// `MemberUnreachable` after it for a suspected one). The subscription
    /// ends when `stopped` turns true.
    pub(crate) fn subscribe(&self, stopped: tokio::sync::watch::Receiver<bool>) -> Subscription {
        let view = self.lock();
        Subscription { snapshot: view.snapshot(), events: self.events.subscribe(), stopped }
    }
}

/// Cluster events for one subscriber: first a `MemberUp` per member already
/// in the view, then every change as it happens.
#[derive(Debug)]
pub struct Subscription {
    snapshot: VecDeque<ClusterEvent>,
    events: broadcast::Receiver<ClusterEvent>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Subscription {
    /// The next event; `None` once the node has shut down (or is gone) and
    /// every event from before is delivered. A subscriber that falls more
    /// than 1024 events behind skips the oldest (logged).
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        if let Some(event) = self.snapshot.pop_front() {
            return Some(event);
        }
        loop {
            if *self.stopped.borrow() {
                // Events sent before the node stopped still arrive.
                return loop {
                    match self.events.try_recv() {
                        Ok(event) => break Some(event),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "cluster event subscriber fell behind");
                        }
                        Err(_) => break None,
                    }
                };
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) => return Some(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "cluster event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.stopped.changed() => if changed.is_err() { return None },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    fn ident(id: u8, run: u64, generation: u32) -> Ident {
        Ident { id: format!("n{id}"), addr: format!("n{id}:1"), run, generation, roles: Vec::new() }
    }

    fn liveness(k: u8) -> Liveness {
        match k % 3 {
            0 => Liveness::Alive,
            1 => Liveness::Suspect,
            _ => Liveness::Down,
        }
    }

    proptest! {
        /// The same member states give the same view in any order; `me` is
        /// always in it, reachable.
        #[test]
        fn any_order_of_the_same_states_gives_the_same_view(
            states in proptest::collection::vec((0u8..6, 1u64..4, 0u32..3, 0u8..3), 0..24),
            seed in any::<u64>(),
        ) {
            let me = ident(0, 1, 0);
            // SWIM holds one state per identity.
            let mut seen = actor_core::entropy::HashSet::default();
            let states: Vec<(Ident, Liveness)> = states
                .into_iter()
                .filter(|(id, run, generation, _)| seen.insert((*id, *run, *generation)))
                .map(|(id, run, generation, k)| (ident(id, run, generation), liveness(k)))
                .collect();
            let mut shuffled = states.clone();
            // A seeded Fisher-Yates shuffle.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let a = View::next(&me, states.iter().map(|(i, l)| (i, *l)));
            let b = View::next(&me, shuffled.iter().map(|(i, l)| (i, *l)));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.get("n0"), Some(&(me.clone(), true)));
        }

        /// Applying views one after another reports each member's changes
        /// once: the final view is the last one applied, and a member is up
        /// in it exactly when its ups outnumber its downs by one.
        #[test]
        fn applied_changes_add_up_to_the_final_view(
            steps in proptest::collection::vec(proptest::collection::vec((1u8..5, 1u64..3, 0u8..3), 0..8), 1..8),
        ) {
            let me = ident(0, 1, 0);
            let mut view = View::of(&me);
            let mut balance: HashMap<String, i32> = HashMap::default();
            for step in steps {
                let mut seen = actor_core::entropy::HashSet::default();
                let states: Vec<(Ident, Liveness)> = step
                    .into_iter()
                    .filter(|(id, run, _)| seen.insert((*id, *run)))
                    .map(|(id, run, k)| (ident(id, run, 0), liveness(k)))
                    .collect();
                let next = View::next(&me, states.iter().map(|(i, l)| (i, *l)));
                let changes = view.apply(next.clone());
                for up in &changes.up {
                    *balance.entry(up.id.clone()).or_default() += 1;
                }
                for gone in &changes.gone {
                    *balance.entry(gone.id.clone()).or_default() -= 1;
                }
                prop_assert_eq!(&view.members, &next);
            }
            for (id, n) in balance {
                prop_assert_eq!(n, i32::from(view.members.contains_key(&id)), "member {}", id);
            }
        }
    }

    #[test]
    fn a_newer_run_replaces_the_old_one_as_down_then_up() {
        let me = ident(0, 1, 0);
        let mut view = View::of(&me);
        let old = ident(1, 1, 0);
        let changes = view.apply(View::next(&me, [(&old, Liveness::Alive)]));
        assert_eq!(changes.events, vec![ClusterEvent::MemberUp(old.member())]);
        let new = ident(1, 2, 0);
        let changes = view.apply(View::next(&me, [(&old, Liveness::Alive), (&new, Liveness::Alive)]));
        assert_eq!(changes.events, vec![ClusterEvent::MemberDown(old.member()), ClusterEvent::MemberUp(new.member())]);
        // A suspected member is reported unreachable, then reachable again.
        let changes = view.apply(View::next(&me, [(&new, Liveness::Suspect)]));
        assert_eq!(changes.events, vec![ClusterEvent::MemberUnreachable(new.member())]);
        let changes = view.apply(View::next(&me, [(&new, Liveness::Alive)]));
        assert_eq!(changes.events, vec![ClusterEvent::MemberReachable(new.member())]);
        // One that said it is leaving is reported as left.
        view.leaving.insert(new.id.clone(), new.run);
        let changes = view.apply(View::next(&me, [(&new, Liveness::Down)]));
        assert_eq!(changes.events, vec![ClusterEvent::MemberLeft(new.member())]);
        assert!(view.leaving.is_empty());
    }
}
