//! What members tell each other of their views: which members count in
//! the split-brain resolver's decisions, and whether a node was admitted.
//!
//! Two nodes may hold different views for a moment: a member that has just
//! joined is known to the node it joined through before the others hear of
//! it. A partition at that moment leaves one side counting the newcomer
//! and the other not, and each may then find itself the majority (the
//! simulation found a new run joining at the instant a node was cut off:
//! the cut-off node, on a tie it won by the lowest address, and the others,
//! two of three with the newcomer, both carried on).
//!
//! So every node tells its peers a digest of its view ([`VIEW_DIGEST`])
//! whenever the view changes, to a peer that connects, and every second
//! (asking for theirs) while some member has not told it the same view. A
//! member *counts* once every member has told one view holding it. A
//! resolver leaves out the members that do not count yet (as Akka leaves
//! out joining members), and counts on the other side those that began to
//! count about when the unreachability began (the other side may not have
//! heard every digest yet): two sides then never both survive, whatever
//! each has not heard of yet.
//!
//! The digests also admit nodes: a node that did not found the cluster is
//! admitted once a member that was admitted tells it the same view (not
//! merely by meeting another node: two nodes restarted while the cluster's
//! survivors are cut off would otherwise found a second cluster).

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hasher as _;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::sbr::Counts;

/// A system message: `{"digest": u64}`, the sender's view digest.
pub(crate) const VIEW_DIGEST: &str = "footlight.ViewDigest";

/// How often a node whose view differs from some member's tells its
/// digest again (besides at once on every change, and to every peer that
/// connects).
pub(crate) const RETELL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The least time between two tells of a node's digest: changes in between
/// (members joining one after another) are told together, once.
pub(crate) const TELL_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// The payload of [`VIEW_DIGEST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ViewDigest {
    /// [`digest`] of the sender's view.
    pub(crate) digest: u64,
    /// Whether the cluster has admitted the sender (it founded the
    /// cluster, or a member that was admitted and holds its view told it
    /// so): a node is admitted only through an admitted member.
    #[serde(default)]
    pub(crate) joined: bool,
    /// The sender has not heard every member tell its view and say it
    /// heard all the others tell it: answer with this node's digest.
    #[serde(default)]
    pub(crate) ask: bool,
    /// The sender heard every member of its view tell this digest.
    #[serde(default)]
    pub(crate) converged: bool,
}

/// What a peer told last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Told {
    run: u64,
    digest: u64,
    joined: bool,
    converged: bool,
}

/// The most digests kept from peers outside this node's view (a peer
/// may tell before the view holds it).
const MAX_OUTSIDE: usize = 256;

/// How many of its latest views a node remembers: the members may all
/// tell one of them while this node has moved on to the next.
const RECENT_VIEWS: usize = 8;

/// The digest of a view: SipHash-1-3 with zero keys (the same on every
/// node, build and machine) over each member's id, a zero byte and its run
/// (8 bytes, little-endian), in id order.
pub(crate) fn digest(members: &BTreeMap<String, u64>) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new();
    for (id, run) in members {
        h.write(id.as_bytes());
        h.write(&[0]);
        h.write(&run.to_le_bytes());
    }
    h.finish()
}

/// What this node knows of the others' views.
#[derive(Debug, Default)]
pub(crate) struct Convergence {
    /// This node's latest views (itself included, id → run) with their
    /// digests, the current one last.
    recent: VecDeque<(u64, BTreeMap<String, u64>)>,
    /// What each peer told last (members, and a few others: a digest may
    /// arrive before the view holds its sender).
    told: BTreeMap<String, Told>,
    /// The members that count: id → (run, whether every member is known
    /// to count it too).
    counted: BTreeMap<String, (u64, bool)>,
    /// When this node last told its digest, and whether it was admitted
    /// and converged then.
    told_at: Option<(Instant, bool, bool)>,
    /// Whether the cluster admitted this node: only then do its views
    /// count (before, its view of itself alone would).
    admitted: bool,
    /// A change not told yet (told within [`TELL_GAP`] of the last tell).
    pending: bool,
}

impl Convergence {
    fn members(&self) -> Option<&BTreeMap<String, u64>> {
        self.recent.back().map(|(_, members)| members)
    }

    /// This node's digest.
    pub(crate) fn mine(&self) -> u64 {
        self.recent.back().map_or(0, |(digest, _)| *digest)
    }

    /// This node's view is now `members` (`me` among them). True if its
    /// digest changed: tell every member.
    pub(crate) fn view(&mut self, me: &str, members: BTreeMap<String, u64>) -> bool {
        let digest = digest(&members);
        let changed = self.recent.back().is_none_or(|(d, _)| *d != digest);
        self.counted.retain(|id, (run, _)| members.get(id) == Some(run));
        if changed {
            self.recent.retain(|(d, _)| *d != digest);
            if self.recent.len() == RECENT_VIEWS {
                self.recent.pop_front();
            }
            self.recent.push_back((digest, members));
        }
        self.bound();
        self.check(me);
        changed
    }

    /// Peer `peer` (run `run`) told its digest.
    pub(crate) fn told(&mut self, me: &str, peer: &str, run: u64, told: ViewDigest) {
        let (digest, joined, converged) = (told.digest, told.joined, told.converged);
        self.told.insert(peer.to_owned(), Told { run, digest, joined, converged });
        self.bound();
        self.check(me);
    }

    /// Keeps what non-members told within [`MAX_OUTSIDE`].
    fn bound(&mut self) {
        let Some(members) = self.recent.back().map(|(_, m)| m) else { return };
        if self.told.len() > members.len() + MAX_OUTSIDE {
            self.told.retain(|id, t| members.get(id) == Some(&t.run));
        }
    }

    /// Whether every other member of `view` told `digest` last (and, if
    /// `converged`, that it heard every member tell it).
    fn all_told(&self, me: &str, digest: u64, view: &BTreeMap<String, u64>, converged: bool) -> bool {
        view.iter().filter(|(id, _)| *id != me).all(|(id, run)| {
            self.told.get(id).is_some_and(|t| t.run == *run && t.digest == digest && (t.converged || !converged))
        })
    }

    /// The cluster admitted this node.
    pub(crate) fn admit(&mut self, me: &str) {
        // The views before this one were not the cluster's (at first, this
        // node alone).
        let keep = self.recent.len().saturating_sub(1);
        self.recent.drain(..keep);
        self.admitted = true;
        self.check(me);
    }

    /// Counts the members of the latest view every member told (those
    /// still in the current view), and counts for sure those of the latest
    /// view every member told having heard every member tell it, once this
    /// node is admitted.
    fn check(&mut self, me: &str) {
        if !self.admitted {
            return;
        }
        let Some(current) = self.recent.back().map(|(_, m)| m) else { return };
        for sure in [false, true] {
            let Some((_, view)) =
                self.recent.iter().rev().find(|(digest, view)| self.all_told(me, *digest, view, sure))
            else {
                continue;
            };
            for (id, run) in view {
                if current.get(id) != Some(run) {
                    continue;
                }
                let entry = self.counted.entry(id.clone()).or_insert((*run, sure));
                entry.1 |= sure;
            }
        }
    }

    /// Whether every other member's last digest is this node's own.
    pub(crate) fn converged(&self, me: &str) -> bool {
        self.recent.back().is_some_and(|(digest, view)| self.all_told(me, *digest, view, false))
    }

    /// Whether every other member's last digest is this node's own, told
    /// having heard every member tell it.
    pub(crate) fn settled(&self, me: &str) -> bool {
        self.recent.back().is_some_and(|(digest, view)| self.all_told(me, *digest, view, true))
    }

    /// Whether another member of the view told that it was admitted, and
    /// holds this very view: this node knows the members it does (a
    /// newcomer admitted earlier would place singletons and shards on a
    /// partial view).
    pub(crate) fn admitted_member(&self, me: &str) -> bool {
        let mine = self.mine();
        self.members().is_some_and(|members| {
            members.iter().any(|(id, run)| {
                id != me && self.told.get(id).is_some_and(|t| t.run == *run && t.joined && t.digest == mine)
            })
        })
    }

    /// Whether some member of the view told that it was admitted.
    pub(crate) fn admitted_told(&self) -> bool {
        self.members()
            .is_some_and(|members| self.told.iter().any(|(id, t)| t.joined && members.get(id) == Some(&t.run)))
    }

    /// How run `run` of `id` counts in the resolver's decisions: not yet;
    /// here, but perhaps not yet on another member (counted on the other
    /// side of a cut); or here and on every member.
    pub(crate) fn standing(&self, id: &str, run: u64) -> Counts {
        match self.counted.get(id) {
            Some((r, true)) if *r == run => Counts::Yes,
            Some((r, false)) if *r == run => Counts::Fresh,
            _ => Counts::No,
        }
    }

    /// Whether run `run` of `id` counts in the resolver's decisions.
    #[cfg(test)]
    fn counts(&self, id: &str, run: u64) -> bool {
        self.standing(id, run) != Counts::No
    }

    /// The digest to tell now and to whom, if it is time: every member
    /// after a change of the view, of `joined` or of whether this node
    /// heard every member tell its view (at most once per [`TELL_GAP`]:
    /// changes in between are told together); or, asking for theirs, those
    /// that have not told it and said they heard the others, every
    /// [`RETELL_EVERY`] while there are any.
    pub(crate) fn due_tell(
        &mut self,
        me: &str,
        changed: bool,
        joined: bool,
        now: Instant,
    ) -> Option<(ViewDigest, Vec<actor_remote::PeerRun>)> {
        let converged = self.converged(me);
        let settled = self.settled(me);
        let since = self.told_at.map(|(at, _, _)| now.duration_since(at));
        let news = match self.told_at {
            Some((_, was_joined, was_converged)) => joined != was_joined || converged != was_converged,
            None => true,
        };
        self.pending |= changed || news;
        let gap_over = since.is_none_or(|d| d >= TELL_GAP);
        let retell = since.is_none_or(|d| d >= RETELL_EVERY) && !settled;
        let to_all = self.pending && gap_over;
        if to_all || retell {
            self.told_at = Some((now, joined, converged));
            self.pending = false;
            let told = ViewDigest { digest: self.mine(), joined, ask: !settled, converged };
            let to = if to_all { self.others(me) } else { self.lagging(me) };
            Some((told, to))
        } else {
            None
        }
    }

    /// The other members whose last digest is not this node's, told having
    /// heard every member tell it: those a retell is for.
    fn lagging(&self, me: &str) -> Vec<actor_remote::PeerRun> {
        let mine = self.mine();
        self.members()
            .into_iter()
            .flatten()
            .filter(|(id, run)| {
                *id != me && !self.told.get(*id).is_some_and(|t| t.run == **run && t.digest == mine && t.converged)
            })
            .map(|(id, run)| actor_remote::PeerRun { node: id.clone(), run: *run })
            .collect()
    }

    /// When [`due_tell`](Self::due_tell) will next have something to tell
    /// without a new change.
    pub(crate) fn next_tell(&self, me: &str) -> Option<Instant> {
        let (at, _, _) = self.told_at?;
        if self.pending {
            Some(at + TELL_GAP)
        } else if !self.settled(me) {
            Some(at + RETELL_EVERY)
        } else {
            None
        }
    }

    /// What to answer a peer that asks.
    pub(crate) fn answer(&self, me: &str, joined: bool) -> ViewDigest {
        ViewDigest { digest: self.mine(), joined, ask: false, converged: self.converged(me) }
    }

    /// The other members of the view.
    pub(crate) fn others(&self, me: &str) -> Vec<actor_remote::PeerRun> {
        self.members()
            .into_iter()
            .flatten()
            .filter(|(id, _)| *id != me)
            .map(|(id, run)| actor_remote::PeerRun { node: id.clone(), run: *run })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[(&str, u64)]) -> BTreeMap<String, u64> {
        members.iter().map(|(id, run)| ((*id).to_owned(), *run)).collect()
    }

    impl Convergence {
        /// The digest `due_tell` tells, whomever to.
        fn due_tell_(&mut self, me: &str, changed: bool, joined: bool, now: Instant) -> Option<ViewDigest> {
            self.due_tell(me, changed, joined, now).map(|(told, _)| told)
        }
    }

    fn vd(digest: u64) -> ViewDigest {
        ViewDigest { digest, joined: true, ask: false, converged: true }
    }

    #[test]
    fn members_count_once_every_member_told_the_same_view() {
        let mut c = Convergence::default();
        c.admit("a");
        let counts = |c: &Convergence, id: &str, run| c.counts(id, run);
        let v = view(&[("a", 1), ("b", 2), ("c", 3)]);
        let d = digest(&v);
        assert!(c.view("a", v.clone()));
        assert!(!counts(&c, "a", 1), "nothing counts before the others told their views");
        c.told("a", "b", 2, vd(d));
        assert!(!counts(&c, "b", 2), "c has not told yet");
        c.told("a", "c", 3, vd(d ^ 1));
        assert!(!counts(&c, "c", 3), "c told another view");
        c.told("a", "c", 3, vd(d));
        assert!(counts(&c, "a", 1) && counts(&c, "b", 2) && counts(&c, "c", 3));
        // A newcomer does not count until the views converge again; those
        // that counted still do.
        let mut w = v.clone();
        w.insert("d".into(), 4);
        assert!(c.view("a", w.clone()));
        assert!(!counts(&c, "d", 4));
        // A digest from another run of a member does not count for it.
        c.told("a", "d", 5, vd(digest(&w)));
        c.told("a", "b", 2, vd(digest(&w)));
        c.told("a", "c", 3, vd(digest(&w)));
        assert!(!counts(&c, "d", 4));
        assert!(counts(&c, "b", 2));
        c.told("a", "d", 4, vd(digest(&w)));
        assert!(counts(&c, "d", 4));
        // A member gone and back under a new run counts afresh.
        let mut x = w.clone();
        x.insert("b".into(), 7);
        c.view("a", x);
        assert!(!counts(&c, "b", 7) && !counts(&c, "b", 2));
    }

    #[test]
    fn members_count_when_the_others_all_hold_a_view_this_node_has_moved_on_from() {
        let mut c = Convergence::default();
        c.admit("a");
        let v = view(&[("a", 1), ("b", 2), ("c", 3)]);
        c.view("a", v.clone());
        let mut w = v.clone();
        w.insert("d".into(), 4);
        c.view("a", w);
        // b and c told the view before d joined.
        c.told("a", "b", 2, vd(digest(&v)));
        c.told("a", "c", 3, vd(digest(&v)));
        assert!(c.counts("c", 3));
        assert!(!c.counts("d", 4), "d was not in that view");
        assert!(!c.converged("a"));
    }

    #[test]
    fn nothing_counts_before_this_node_is_admitted() {
        let mut c = Convergence::default();
        c.view("a", view(&[("a", 1)]));
        assert!(c.converged("a"));
        assert!(!c.counts("a", 1), "a node's view of itself alone is not the cluster's");
        let v = view(&[("a", 1), ("b", 2)]);
        c.view("a", v.clone());
        c.told("a", "b", 2, vd(digest(&v)));
        assert!(!c.counts("b", 2));
        c.admit("a");
        assert!(c.counts("a", 1) && c.counts("b", 2));
        // Admitted while a member has not told the view: the view of itself
        // alone, from before, does not count it.
        let mut c = Convergence::default();
        c.view("a", view(&[("a", 1)]));
        c.view("a", view(&[("a", 1), ("b", 2), ("c", 3)]));
        c.admit("a");
        assert!(!c.counts("a", 1));
    }

    #[test]
    fn the_digest_is_told_on_change_and_again_while_the_views_differ() {
        let t0 = Instant::now();
        let mut c = Convergence::default();
        let v = view(&[("a", 1), ("b", 2)]);
        let told = |joined, ask, converged| Some(ViewDigest { digest: digest(&v), joined, ask, converged });
        let changed = c.view("a", v.clone());
        assert_eq!(c.due_tell_("a", changed, false, t0), told(false, true, false));
        assert_eq!(c.next_tell("a"), Some(t0 + RETELL_EVERY), "not settled: asks again then");
        assert_eq!(c.due_tell_("a", false, false, t0 + RETELL_EVERY / 2), None);
        let t1 = t0 + RETELL_EVERY / 2;
        assert_eq!(c.due_tell_("a", false, true, t1), told(true, true, false), "admitted: told at once");
        let t2 = t1 + RETELL_EVERY;
        assert_eq!(c.due_tell_("a", false, true, t2), told(true, true, false), "b has not told: asks again");
        // b holds the view, but has not heard a tell it yet.
        c.told("a", "b", 2, ViewDigest { converged: false, ..vd(digest(&v)) });
        assert_eq!(c.due_tell_("a", false, true, t2), None, "within the gap: told together with what follows");
        assert_eq!(c.next_tell("a"), Some(t2 + TELL_GAP));
        assert_eq!(c.due_tell_("a", false, true, t2 + TELL_GAP), told(true, true, true), "converged: told");
        assert_eq!(c.due_tell_("a", false, true, t2 + TELL_GAP), None);
        let t3 = t2 + TELL_GAP + RETELL_EVERY;
        assert_eq!(c.due_tell_("a", false, true, t3), told(true, true, true), "not settled: asks again");
        c.told("a", "b", 2, vd(digest(&v)));
        assert_eq!(c.due_tell_("a", false, true, t3 + RETELL_EVERY * 9), None, "settled: nothing to tell");
        assert_eq!(c.next_tell("a"), None);
        assert!(!c.view("a", v), "the same view is no change");
    }

    #[test]
    fn a_retell_goes_only_to_the_members_that_lag() {
        let t0 = Instant::now();
        let mut c = Convergence::default();
        let v = view(&[("a", 1), ("b", 2), ("c", 3)]);
        let changed = c.view("a", v.clone());
        let to = |told: Option<(ViewDigest, Vec<actor_remote::PeerRun>)>| {
            told.map(|(_, to)| to.into_iter().map(|p| p.node).collect::<Vec<_>>())
        };
        assert_eq!(to(c.due_tell("a", changed, true, t0)), Some(vec!["b".to_owned(), "c".to_owned()]));
        c.told("a", "b", 2, vd(digest(&v)));
        assert_eq!(to(c.due_tell("a", false, true, t0 + RETELL_EVERY)), Some(vec!["c".to_owned()]));
    }

    #[test]
    fn a_member_counts_surely_once_every_member_said_it_heard_the_others() {
        let mut c = Convergence::default();
        c.admit("a");
        let v = view(&[("a", 1), ("b", 2), ("c", 3)]);
        c.view("a", v.clone());
        let unsure = ViewDigest { converged: false, ..vd(digest(&v)) };
        c.told("a", "b", 2, unsure);
        c.told("a", "c", 3, unsure);
        assert_eq!(c.standing("b", 2), Counts::Fresh, "b and c hold the view; this node cannot know they count b");
        assert!(c.converged("a") && !c.settled("a"));
        c.told("a", "b", 2, vd(digest(&v)));
        assert_eq!(c.standing("b", 2), Counts::Fresh);
        c.told("a", "c", 3, vd(digest(&v)));
        assert_eq!(c.standing("b", 2), Counts::Yes);
        assert_eq!(c.standing("a", 1), Counts::Yes);
        assert!(c.settled("a"));
        // A later view does not unsettle who counted surely.
        let mut w = v.clone();
        w.insert("d".into(), 4);
        c.view("a", w);
        assert_eq!(c.standing("b", 2), Counts::Yes);
        assert_eq!(c.standing("d", 4), Counts::No);
    }

    #[test]
    fn a_digest_told_before_the_view_holds_its_sender_is_kept() {
        let mut c = Convergence::default();
        c.admit("a");
        c.view("a", view(&[("a", 1)]));
        let v = view(&[("a", 1), ("b", 2)]);
        c.told("a", "b", 2, ViewDigest { joined: false, ..vd(digest(&v)) });
        assert!(!c.admitted_member("a"));
        c.view("a", v.clone());
        assert!(c.converged("a") && c.counts("b", 2));
        assert!(!c.admitted_member("a"), "b was not admitted");
        c.told("a", "b", 2, vd(digest(&v) ^ 1));
        assert!(!c.admitted_member("a"), "b was admitted, but holds another view");
        c.told("a", "b", 2, vd(digest(&v)));
        assert!(c.admitted_member("a"));
        // Only so many non-members are remembered.
        for i in 0..MAX_OUTSIDE as u64 + 10 {
            c.told("a", &format!("x{i}"), i, vd(0));
        }
        assert!(c.told.len() <= 2 + MAX_OUTSIDE);
        assert!(c.admitted_member("a"), "members' digests are kept");
    }

    #[test]
    fn the_digest_is_the_one_the_protocol_names() {
        // PROTOCOL.md: SipHash-1-3, zero keys, id bytes, 0, run as 8 bytes LE.
        let mut bytes = b"a".to_vec();
        bytes.push(0);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(b"b");
        bytes.push(0);
        bytes.extend_from_slice(&2u64.to_le_bytes());
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        h.write(&bytes);
        assert_eq!(digest(&view(&[("a", 1), ("b", 2)])), h.finish());
    }

    #[test]
    fn the_digest_is_the_same_for_the_same_view_and_differs_by_member_or_run() {
        let v = view(&[("a", 1), ("b", 2)]);
        assert_eq!(digest(&v), digest(&view(&[("b", 2), ("a", 1)])));
        assert_ne!(digest(&v), digest(&view(&[("a", 1), ("b", 3)])));
        assert_ne!(digest(&v), digest(&view(&[("a", 1)])));
        assert_ne!(digest(&view(&[("ab", 1)])), digest(&view(&[("a", 1), ("b", 1)])));
    }
}
