//! Split-brain resolution: when members become unreachable, which side of
//! the cut carries on and which downs itself (as Akka's split-brain
//! resolver).
//!
//! Failure detection cannot tell a crashed member from one behind a
//! network partition, so without a rule each side of a partition declares
//! the other down and carries on as a cluster of its own, and the writes
//! both sides acknowledged conflict when it heals. A resolver makes every
//! node take the same decision from the same view: once the set of
//! unreachable members has stayed the same for `stable_after`, the
//! strategy says whether this node's side keeps going (and downs the
//! unreachable members) or downs itself
//! ([`ClusterEvent::SelfDowned`](crate::ClusterEvent::SelfDowned)).
//!
//! | strategy | this side survives when |
//! |---|---|
//! | [`KeepMajority`](Strategy::KeepMajority) (default) | it holds more than half of the members; with exactly half, it holds the member with the lowest address |
//! | [`StaticQuorum`](Strategy::StaticQuorum) | it holds at least the quorum |
//! | [`KeepOldest`](Strategy::KeepOldest) | it holds the oldest member (the smallest run); with `down_if_alone`, the oldest cut off alone downs itself instead and the others survive |
//! | [`DownAll`](Strategy::DownAll) | never: every node downs itself when any member is unreachable |
//! | [`LeaseMajority`](Strategy::LeaseMajority) | it takes the [lease](crate::lease) (the majority side asks first; the minority side waits `acquire_delay_for_minority`) |
//!
//! Lease-majority is for when the members alone cannot decide well: equal
//! halves, or a majority cut off from the clients. The lease is held in a
//! coordination service both sides ask (etcd, say): the side that reaches
//! it and takes the lease carries on, the other downs itself, and a side
//! that cannot reach the service downs itself too, as does one whose
//! lease service has not answered within 10 s. The winner holds the lease
//! until the other side has surely asked and given up (`stable_after +
//! down_all_when_unstable + acquire_delay_for_minority` + 10 s + the
//! suspicion timeout, 22.5 s with the defaults), then releases it; a side
//! whose view kept changing for longer downs itself rather than ask.
//!
//! When the set of unreachable members keeps changing (flapping links,
//! members coming and going), no decision is taken; once that has gone on
//! for `stable_after` plus `down_all_when_unstable`, every node downs
//! itself (down-all), as Akka does.
//!
//! Only members the views have converged on count (see
//! [`Cluster::is_converged`](crate::Cluster::is_converged)): a member that
//! has just joined is left out on both sides until every member has told a
//! view holding it, and counted on the other side until every member has
//! also said it heard all the others tell it (the other side may not count
//! it yet). A node that joins at the instant a partition begins then cannot
//! make both sides a majority.
//!
//! The decision is a pure function of the view (`decide`) and a small
//! state machine over time (`Resolver`); the membership task feeds both.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Which side of a partition survives (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// The side with more than half of the members; on a tie, the side
    /// with the lowest address.
    KeepMajority,
    /// The side with at least this many members. Choose more than half of
    /// the cluster's size: with less, both sides of a cut may carry on.
    StaticQuorum(usize),
    /// The side with the oldest member. With `down_if_alone`, an oldest
    /// member cut off alone downs itself and the others survive.
    KeepOldest {
        /// Whether an oldest member alone on its side gives way.
        down_if_alone: bool,
    },
    /// Every node downs itself.
    DownAll,
    /// The side that takes the resolver's lease
    /// ([`SplitBrainResolver::lease_majority`]); the side without a
    /// majority (as keep-majority counts) asks this much later, so the
    /// majority wins when both reach the lease service.
    LeaseMajority {
        /// How long the minority side waits before asking for the lease.
        acquire_delay_for_minority: Duration,
    },
}

/// A split-brain resolver's settings, for
/// [`ClusterBuilder::split_brain_resolver`](crate::ClusterBuilder::split_brain_resolver).
#[derive(Debug, Clone)]
pub struct SplitBrainResolver {
    /// The strategy.
    pub strategy: Strategy,
    /// How long the set of unreachable members must stay the same before a
    /// decision. Default: 2 s (with the default failure detection, a
    /// member silent since the partition is declared down by SWIM about
    /// 3.5 s in; the decision follows once the view has held still).
    pub stable_after: Duration,
    /// How much longer than `stable_after` the view may keep changing
    /// before every node downs itself. Default: 3 × `stable_after`.
    pub down_all_when_unstable: Duration,
    /// The lease of [`Strategy::LeaseMajority`] (this node as its owner).
    pub lease: Option<Arc<dyn crate::lease::Lease>>,
}

impl SplitBrainResolver {
    /// A resolver with `strategy` and the default timings.
    pub fn new(strategy: Strategy) -> Self {
        let stable_after = Duration::from_secs(2);
        Self { strategy, stable_after, down_all_when_unstable: stable_after * 3, lease: None }
    }

    /// Lease-majority with `lease` (one per node, this node its owner, the
    /// same lease name everywhere); the minority side asks 2 s later.
    pub fn lease_majority(lease: Arc<dyn crate::lease::Lease>) -> Self {
        let mut resolver = Self::new(Strategy::LeaseMajority { acquire_delay_for_minority: Duration::from_secs(2) });
        resolver.lease = Some(lease);
        resolver
    }

    /// How long after this side decided the losing side may still take to
    /// down itself (besides having seen the partition later): it may wait
    /// `down_all_when_unstable` when its view keeps changing; with
    /// lease-majority, also the minority's delay and the lease service's
    /// answer (at most [`LEASE_ANSWER`]).
    pub(crate) fn losing_side_within(&self) -> Duration {
        match self.strategy {
            Strategy::LeaseMajority { acquire_delay_for_minority } => {
                self.down_all_when_unstable + acquire_delay_for_minority + LEASE_ANSWER
            }
            _ => self.down_all_when_unstable,
        }
    }

    /// How long the winner of a lease-majority decision holds the lease:
    /// until the losing side has surely asked (it decided at most
    /// `suspicion` after this side, then waited its delay) and given up.
    pub(crate) fn lease_hold(&self, suspicion: Duration) -> Duration {
        self.stable_after + self.losing_side_within() + suspicion
    }

    /// Keep-majority, the default strategy.
    pub fn keep_majority() -> Self {
        Self::new(Strategy::KeepMajority)
    }

    /// Sets `stable_after` (and `down_all_when_unstable` to three times it).
    pub fn stable_after(mut self, stable_after: Duration) -> Self {
        self.stable_after = stable_after;
        self.down_all_when_unstable = stable_after * 3;
        self
    }
}

impl Default for SplitBrainResolver {
    fn default() -> Self {
        Self::keep_majority()
    }
}

/// The longest a lease-majority decision waits for the lease service to
/// answer; a node whose lease does not answer in time downs itself.
pub(crate) const LEASE_ANSWER: Duration = Duration::from_secs(10);

/// One member as the resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) run: u64,
    pub(crate) reachable: bool,
    /// Whether it counts (see [`Counts`]).
    pub(crate) counts: Counts,
}

/// Whether a member counts in a decision (see
/// [`convergence`](crate::convergence)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counts {
    /// Not yet: every member has not told a view holding it since it
    /// joined. Left out on both sides, as Akka leaves out joining members.
    No,
    /// Here, but not surely everywhere: every member told a view holding
    /// it, but this node has not heard every member say it heard all the
    /// others tell it, so the other side of a cut may not count it yet.
    /// Counted on the other side.
    Fresh,
    /// Yes.
    Yes,
}

impl Seen {
    /// Counted on this side.
    fn ours(&self) -> bool {
        self.reachable && self.counts == Counts::Yes
    }
}

/// What a node does about its unreachable members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This side survives: down these members.
    DownUnreachable(Vec<String>),
    /// This side gives way: down this node.
    DownSelf {
        /// Why, for the log and the event.
        why: String,
    },
    /// Lease-majority: ask for the lease (after `delay`); this side
    /// survives if it takes it.
    AskLease {
        /// How long to wait first (the minority's delay, or zero).
        delay: Duration,
        /// The members to down if the lease is taken.
        unreachable: Vec<String>,
    },
}

/// The decision `strategy` takes on `members` (this node included, as
/// reachable), given that some are unreachable. Members that do not count
/// yet are left out ([`Counts::No`]); those not surely counted by every
/// member yet are counted on the other side ([`Counts::Fresh`]): the two sides then
/// never both survive, whatever each has not heard of yet.
pub(crate) fn decide(strategy: Strategy, members: &[Seen]) -> Decision {
    let unreachable: Vec<String> = members.iter().filter(|m| !m.reachable).map(|m| m.id.clone()).collect();
    let left_out = members.iter().filter(|m| m.counts == Counts::No).count();
    let members: Vec<&Seen> = members.iter().filter(|m| m.counts != Counts::No).collect();
    let (total, up) = (members.len(), members.iter().filter(|m| m.ours()).count());
    let survive = |yes: bool, why: String| {
        if yes { Decision::DownUnreachable(unreachable.clone()) } else { Decision::DownSelf { why } }
    };
    let fresh = members.iter().filter(|m| m.reachable && m.counts == Counts::Fresh).count();
    let mut pending = String::new();
    if left_out > 0 {
        pending.push_str(&format!(" ({left_out} left out: the views have not converged on them since they joined)"));
    }
    if fresh > 0 {
        pending.push_str(&format!(" ({fresh} counted on the other side: not surely counted there yet)"));
    }
    // Keep-majority's rule (lease-majority's too, for whom asks first).
    let lowest_ours =
        || members.iter().min_by(|a, b| (&a.addr, &a.id).cmp(&(&b.addr, &b.id))).is_some_and(|m| m.ours());
    let majority = up * 2 > total || (up * 2 == total && lowest_ours());
    match strategy {
        Strategy::KeepMajority => {
            if up * 2 == total {
                survive(
                    majority,
                    format!("keep-majority: {up} of {total}, and the lowest address is on the other side{pending}"),
                )
            } else {
                survive(majority, format!("keep-majority: {up} of {total} is not a majority{pending}"))
            }
        }
        Strategy::StaticQuorum(quorum) => {
            survive(up >= quorum, format!("static-quorum: {up} reachable, below the quorum of {quorum}{pending}"))
        }
        Strategy::KeepOldest { down_if_alone } => {
            let oldest = members.iter().min_by(|a, b| (a.run, &a.id).cmp(&(b.run, &b.id)));
            let ours = oldest.is_some_and(|m| m.ours());
            if down_if_alone && total > 2 && ours && up == 1 {
                survive(false, "keep-oldest: the oldest member is cut off alone".into())
            } else if down_if_alone && total > 2 && !ours && total - up == 1 {
                // The oldest is the one cut off alone: the rest survive.
                survive(true, String::new())
            } else {
                survive(ours, format!("keep-oldest: the oldest member is on the other side{pending}"))
            }
        }
        Strategy::DownAll => survive(false, "down-all: members are unreachable".into()),
        Strategy::LeaseMajority { acquire_delay_for_minority } => {
            let delay = if majority { Duration::ZERO } else { acquire_delay_for_minority };
            Decision::AskLease { delay, unreachable }
        }
    }
}

/// The resolver over time: it watches the set of unreachable members and
/// says when to decide.
#[derive(Debug)]
pub(crate) struct Resolver {
    settings: SplitBrainResolver,
    unreachable: BTreeSet<String>,
    /// When `unreachable` last changed.
    stable_since: Instant,
    /// Since when some member has been unreachable without a decision.
    unstable_since: Option<Instant>,
    /// A lease-majority decision is being asked of the lease.
    asking: bool,
}

/// What the resolver says after an observation or a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do yet.
    Wait,
    /// Decide now with the strategy.
    Decide,
    /// The view kept changing for too long: down this node.
    DownAll,
}

impl Resolver {
    pub(crate) fn new(settings: SplitBrainResolver, now: Instant) -> Self {
        Resolver { settings, unreachable: BTreeSet::new(), stable_since: now, unstable_since: None, asking: false }
    }

    pub(crate) fn strategy(&self) -> Strategy {
        self.settings.strategy
    }

    pub(crate) fn settings(&self) -> &SplitBrainResolver {
        &self.settings
    }

    /// The lease is being asked: no other verdict until the answer.
    pub(crate) fn asking(&mut self) {
        self.asking = true;
    }

    /// The unreachable members now.
    pub(crate) fn observe(&mut self, now: Instant, unreachable: BTreeSet<String>) {
        if unreachable != self.unreachable {
            self.unreachable = unreachable;
            self.stable_since = now;
        }
        if self.unreachable.is_empty() {
            self.unstable_since = None;
        } else if self.unstable_since.is_none() {
            self.unstable_since = Some(now);
        }
    }

    /// A decision was taken (or the unreachable members came back).
    pub(crate) fn decided(&mut self, now: Instant) {
        self.asking = false;
        self.unreachable.clear();
        self.stable_since = now;
        self.unstable_since = None;
    }

    pub(crate) fn verdict(&self, now: Instant) -> Verdict {
        if self.asking {
            return Verdict::Wait;
        }
        let Some(unstable_since) = self.unstable_since else { return Verdict::Wait };
        if now.duration_since(self.stable_since) >= self.settings.stable_after {
            Verdict::Decide
        } else if now.duration_since(unstable_since)
            >= self.settings.stable_after + self.settings.down_all_when_unstable
        {
            Verdict::DownAll
        } else {
            Verdict::Wait
        }
    }

    /// When [`verdict`](Self::verdict) may change without a new observation.
    pub(crate) fn next_check(&self) -> Option<Instant> {
        if self.asking {
            return None;
        }
        let unstable_since = self.unstable_since?;
        let stable = self.stable_since + self.settings.stable_after;
        let all = unstable_since + self.settings.stable_after + self.settings.down_all_when_unstable;
        Some(stable.min(all))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::Strategy;
    use super::*;

    /// Members `n0..n{total}` (address order = id order, run order = id
    /// order), those in `cut` unreachable.
    fn view(total: usize, cut: &[usize]) -> Vec<Seen> {
        (0..total)
            .map(|i| Seen {
                id: format!("n{i}"),
                addr: format!("10.0.0.{i}:7000"),
                run: 100 + i as u64,
                reachable: !cut.contains(&i),
                counts: Counts::Yes,
            })
            .collect()
    }

    fn survives(d: &Decision) -> bool {
        matches!(d, Decision::DownUnreachable(_))
    }

    #[test]
    fn keep_majority_keeps_the_larger_side_and_breaks_ties_by_lowest_address() {
        // 3|2 as seen from each side.
        assert_eq!(
            decide(Strategy::KeepMajority, &view(5, &[3, 4])),
            Decision::DownUnreachable(vec!["n3".into(), "n4".into()])
        );
        assert!(!survives(&decide(Strategy::KeepMajority, &view(5, &[0, 1, 2]))));
        // 2|2: the side with n0 (lowest address) survives.
        assert!(survives(&decide(Strategy::KeepMajority, &view(4, &[2, 3]))));
        assert!(!survives(&decide(Strategy::KeepMajority, &view(4, &[0, 1]))));
        // A single isolated node of 5.
        assert!(!survives(&decide(Strategy::KeepMajority, &view(5, &[0, 1, 2, 3]))));
        assert!(survives(&decide(Strategy::KeepMajority, &view(5, &[4]))));
    }

    #[test]
    fn static_quorum_keep_oldest_and_down_all() {
        assert!(survives(&decide(Strategy::StaticQuorum(3), &view(5, &[3, 4]))));
        assert!(!survives(&decide(Strategy::StaticQuorum(3), &view(5, &[2, 3, 4]))));
        let oldest = Strategy::KeepOldest { down_if_alone: false };
        assert!(survives(&decide(oldest, &view(5, &[1, 2, 3, 4]))));
        assert!(!survives(&decide(oldest, &view(5, &[0]))));
        let alone = Strategy::KeepOldest { down_if_alone: true };
        assert!(!survives(&decide(alone, &view(5, &[1, 2, 3, 4]))), "the oldest alone gives way");
        assert!(survives(&decide(alone, &view(5, &[0]))), "the others survive the oldest alone");
        assert!(!survives(&decide(Strategy::DownAll, &view(5, &[4]))));
        // Lease-majority: both sides ask; the minority later.
        let lease = Strategy::LeaseMajority { acquire_delay_for_minority: Duration::from_secs(2) };
        assert_eq!(
            decide(lease, &view(5, &[3, 4])),
            Decision::AskLease { delay: Duration::ZERO, unreachable: vec!["n3".into(), "n4".into()] }
        );
        assert!(
            matches!(decide(lease, &view(5, &[0, 1, 2])), Decision::AskLease { delay, .. } if delay == Duration::from_secs(2))
        );
    }

    #[test]
    fn the_resolver_decides_once_the_view_held_still_and_downs_all_when_it_never_does() {
        let t0 = Instant::now();
        let settings = SplitBrainResolver::keep_majority().stable_after(Duration::from_secs(2));
        let mut r = Resolver::new(settings.clone(), t0);
        assert_eq!(r.verdict(t0), Verdict::Wait);
        let set = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        r.observe(t0, set(&["n4"]));
        assert_eq!(r.verdict(t0 + Duration::from_millis(1999)), Verdict::Wait);
        // Another member joins the unreachable set: the clock restarts.
        r.observe(t0 + Duration::from_secs(1), set(&["n3", "n4"]));
        assert_eq!(r.verdict(t0 + Duration::from_millis(2500)), Verdict::Wait);
        assert_eq!(r.verdict(t0 + Duration::from_secs(3)), Verdict::Decide);
        assert_eq!(r.next_check(), Some(t0 + Duration::from_secs(3)));
        // Flapping: the set changes every second; after stable_after +
        // 3 × stable_after of instability, down-all.
        let mut r = Resolver::new(settings, t0);
        for s in 0..8 {
            let ids: &[&str] = if s % 2 == 0 { &["n4"] } else { &["n3", "n4"] };
            r.observe(t0 + Duration::from_secs(s), set(ids));
            assert_eq!(r.verdict(t0 + Duration::from_secs(s)), Verdict::Wait, "at {s} s");
        }
        r.observe(t0 + Duration::from_secs(8), set(&["n4"]));
        assert_eq!(r.verdict(t0 + Duration::from_secs(8)), Verdict::DownAll);
        // Everyone back: nothing to decide.
        r.observe(t0 + Duration::from_secs(9), BTreeSet::new());
        assert_eq!(r.verdict(t0 + Duration::from_secs(20)), Verdict::Wait);
    }

    /// Member `i` as a node on one side sees it.
    fn member(i: usize, reachable: bool, counts: Counts) -> Seen {
        Seen { id: format!("n{i}"), addr: format!("10.0.0.{i}:7000"), run: 100 + i as u64, reachable, counts }
    }

    #[test]
    fn members_the_views_have_not_converged_on_are_left_out_and_fresh_ones_count_on_the_other_side() {
        use Counts::{Fresh, No, Yes};
        // The race the simulation found: n1's new run joins (through n3) at
        // the instant n2 is cut off. n2 never heard of n1: a tie it wins
        // by the lowest address. n3 must not count n1 as its side.
        let n2 = [member(2, true, Yes), member(3, false, Yes)];
        assert!(survives(&decide(Strategy::KeepMajority, &n2)));
        let n3 = [member(1, true, No), member(2, false, Yes), member(3, true, Yes)];
        assert_eq!(
            decide(Strategy::KeepMajority, &n3),
            Decision::DownSelf {
                why: "keep-majority: 1 of 2, and the lowest address is on the other side (1 left out: the views have not converged on them since they joined)".into()
            }
        );
        // Had n3 not heard every member say it counts n1, n2 might not.
        let n3 = [member(1, true, Fresh), member(2, false, Yes), member(3, true, Yes)];
        assert_eq!(
            decide(Strategy::KeepMajority, &n3),
            Decision::DownSelf {
                why: "keep-majority: 1 of 3 is not a majority (1 counted on the other side: not surely counted there yet)".into()
            }
        );
        // Counted for long, the newcomer is on its side.
        let n3 = [member(1, true, Yes), member(2, false, Yes), member(3, true, Yes)];
        assert!(survives(&decide(Strategy::KeepMajority, &n3)));
        // A newcomer the views never converged on (a dead member never told
        // a view with it) does not take the survivors down with it.
        let n1 = [member(1, true, Yes), member(2, true, No), member(3, false, Yes)];
        assert_eq!(decide(Strategy::KeepMajority, &n1), Decision::DownUnreachable(vec!["n3".into()]));
    }

    /// How a member counts at A and at B, drawn so that what convergence
    /// guarantees holds: one that has counted at one side for a while
    /// counts at the other too (if not surely).
    fn counts_on_both(a: u8, b: u8) -> (Counts, Counts) {
        let pick = |k: u8| match k % 3 {
            0 => Counts::No,
            1 => Counts::Fresh,
            _ => Counts::Yes,
        };
        let (mut ca, mut cb) = (pick(a), pick(b));
        if ca == Counts::Yes && cb == Counts::No {
            cb = Counts::Fresh;
        }
        if cb == Counts::Yes && ca == Counts::No {
            ca = Counts::Fresh;
        }
        (ca, cb)
    }

    proptest! {
        /// Whatever each side has not heard of yet, two sides never both
        /// survive, as long as what convergence guarantees holds (a member
        /// that counts on one side was seen by every member; one that has
        /// counted for a while on one side counts on the other too).
        #[test]
        fn two_sides_never_both_survive_views_that_differ(
            total in 2usize..8,
            side in any::<u8>(),
            known_a in any::<u8>(),
            known_b in any::<u8>(),
            counted in proptest::collection::vec((any::<u8>(), any::<u8>()), 8),
        ) {
            let bit = |mask: u8, i: usize| mask & (1 << i) != 0;
            let on_a = |i| bit(side, i);
            // The deciders: one node of each side, which knows itself.
            let Some(a) = (0..total).find(|&i| on_a(i)) else { return Ok(()) };
            let Some(b) = (0..total).find(|&i| !on_a(i)) else { return Ok(()) };
            let drawn = |i: usize| counts_on_both(counted[i].0, counted[i].1);
            let counts_somewhere = |i| drawn(i) != (Counts::No, Counts::No);
            let knows_a = |i| i == a || counts_somewhere(i) || bit(known_a, i);
            let knows_b = |i| i == b || counts_somewhere(i) || bit(known_b, i);
            let view_a: Vec<Seen> = (0..total).filter(|&i| knows_a(i)).map(|i| member(i, on_a(i), drawn(i).0)).collect();
            let view_b: Vec<Seen> = (0..total).filter(|&i| knows_b(i)).map(|i| member(i, !on_a(i), drawn(i).1)).collect();
            for strategy in [
                Strategy::KeepMajority,
                Strategy::StaticQuorum(total / 2 + 1),
                Strategy::KeepOldest { down_if_alone: false },
                Strategy::KeepOldest { down_if_alone: true },
            ] {
                let this_side = survives(&decide(strategy, &view_a));
                let that_side = survives(&decide(strategy, &view_b));
                prop_assert!(!(this_side && that_side), "{strategy:?}: both sides survive {view_a:?} and {view_b:?}");
            }
        }

        /// For any cut of any cluster, keep-majority and keep-oldest let
        /// exactly one side survive: the two sides never both carry on, and
        /// never both give way.
        #[test]
        fn exactly_one_side_survives_any_cut(total in 1usize..9, mask in any::<u16>()) {
            let cut: Vec<usize> = (0..total).filter(|i| mask & (1 << i) != 0).collect();
            let other: Vec<usize> = (0..total).filter(|i| !cut.contains(i)).collect();
            prop_assume!(!cut.is_empty() && !other.is_empty());
            for strategy in [Strategy::KeepMajority, Strategy::KeepOldest { down_if_alone: false }, Strategy::KeepOldest { down_if_alone: true }] {
                let this_side = survives(&decide(strategy, &view(total, &cut)));
                let that_side = survives(&decide(strategy, &view(total, &other)));
                prop_assert!(this_side != that_side, "{strategy:?} on {cut:?} of {total}: {this_side} and {that_side}");
            }
        }
    }
}
