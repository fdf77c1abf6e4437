//! Holds a trace to the runtime's guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::faults::{Fault, FaultKind};
use crate::trace::{Entry, Event, Outcome, Seen, Trace};

/// A guarantee a trace broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee (a short name).
    pub rule: &'static str,
    /// When (virtual time).
    pub at: Duration,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at {:.3}s: {}", self.rule, self.at.as_secs_f64(), self.detail)
    }
}

/// How long after a fault ends a node may still rightly be found
/// unreachable or declared down because of it: the failure-detection
/// budget (5 s), the resolver's stable-after (2 s), gossip, with room.
pub const AFTERMATH: Duration = Duration::from_secs(30);

/// Checks `trace` against the guarantees the README makes, as far as the
/// trace shows them:
///
/// - **at-most-once**: no message is handled twice;
/// - **right run**: a message is handled only by the run it was sent to,
///   never by a later run of a restarted node;
/// - **FIFO**: per (sender run, receiver run), messages are handled in the
///   order sent (gaps allowed: delivery is at most once);
/// - **asks**: every ask resolves exactly once; a reply means it was
///   handled once; a message that came back was not handled; `NodeDown`,
///   a timeout or another failure only when a fault, a kill or a reset
///   touched the two nodes around that time;
/// - **down**: a member is declared down only if its run was killed or
///   downed, or a fault cut it (or the observer) off shortly before;
/// - **watches**: a watch fires at most once per watch made, with
///   `NodeDown` only as above; a watch on a run that ended, held by a run
///   alive at the end, has fired by the end;
/// - **self-down**: a node downs itself only when a fault cut a member
///   off, slowed it or killed it shortly before (not necessarily this
///   node: the side that gives way is not always the one cut off);
/// - **stays down**: a run once seen down is never seen up (or reachable)
///   again by that observer, and is no member of anyone at the end;
/// - **re-formed**: at the end every node is up, admitted, and sees exactly
///   the live runs as members;
/// - **one instance**: a singleton, or a sharded entity id, never runs on
///   two nodes (or two runs) at once;
/// - **delivery**: a reliable consumer gets each producer's messages in
///   order, each once while it lives, with no gap (a consumer run may skip
///   only what another run handled; one that replaces a lost one starts no
///   later than where the lost one stopped); every message a producer saw
///   acknowledged was handled.
pub fn check(trace: &Trace) -> Vec<Violation> {
    Checker::new(trace.entries()).run()
}

struct Checker<'a> {
    entries: &'a [Entry],
    /// Index of `Ending`, or the end.
    ending: usize,
    /// (node, run) → when that run ended (killed, or downed itself).
    ended: BTreeMap<(&'a str, u64), Duration>,
    /// (start, end, fault); end is `None` if it never ended.
    faults: Vec<(Duration, Option<Duration>, &'a Fault)>,
    out: Vec<Violation>,
}

type Key<'a> = (&'a str, u64, &'a str, u64, u64);

impl<'a> Checker<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let ending = entries.iter().position(|e| e.event == Event::Ending).unwrap_or(entries.len());
        let mut ended = BTreeMap::new();
        let mut faults: Vec<(Duration, Option<Duration>, &Fault)> = Vec::new();
        for e in entries {
            match &e.event {
                Event::Killed { node, run } | Event::SelfDowned { node, run } => {
                    ended.entry((node.as_str(), *run)).or_insert(e.at);
                }
                Event::Fault(f) => faults.push((e.at, None, f)),
                Event::FaultEnded(f) => {
                    if let Some(open) = faults.iter_mut().rev().find(|(_, end, g)| end.is_none() && *g == f) {
                        open.1 = Some(e.at);
                    }
                }
                _ => {}
            }
        }
        Checker { entries, ending, ended, faults, out: Vec::new() }
    }

    fn violation(&mut self, rule: &'static str, at: Duration, detail: String) {
        self.out.push(Violation { rule, at, detail });
    }

    /// Whether `observer` may rightly have lost `member`'s run `run` by
    /// `at`, having noticed something since `since`: the run ended, or a
    /// fault touching them was on in [since, at] or ended within
    /// [`AFTERMATH`] of it. `resets` also counts a reset of the pair.
    fn disturbed(&self, observer: &str, member: &str, run: u64, since: Duration, at: Duration, resets: bool) -> bool {
        if self.ended.get(&(member, run)).is_some_and(|t| *t <= at) {
            return true;
        }
        self.faults.iter().any(|(start, end, fault)| {
            let on = *start <= at && end.is_none_or(|end| end + AFTERMATH >= since);
            let touches = fault.may_cut_off(observer, member)
                || (resets
                    && matches!(fault, Fault::Reset { a, b } if (a == observer && b == member) || (a == member && b == observer)));
            on && touches
        })
    }

    fn run_ended_by(&self, node: &str, run: u64, at: Duration) -> bool {
        self.ended.get(&(node, run)).is_some_and(|t| *t <= at)
    }

    fn run(mut self) -> Vec<Violation> {
        self.messages();
        self.asks();
        self.downs();
        self.self_downs();
        self.stays_down();
        self.watches();
        self.reformed();
        self.instances();
        self.deliveries();
        self.out
    }

    fn messages(&mut self) {
        let mut handled: BTreeMap<(&str, &str, u64, u64, u64), Duration> = BTreeMap::new();
        let mut last: BTreeMap<(&str, u64, &str, u64), u64> = BTreeMap::new();
        for e in self.entries {
            let Event::Handled { node, run, from, from_run, to_run, seq, .. } = &e.event else { continue };
            if to_run != run {
                self.violation(
                    "right run",
                    e.at,
                    format!("{node} run {run} handled message {seq} from {from}/{from_run} sent to run {to_run}"),
                );
            }
            if handled.insert((node, from, *from_run, *to_run, *seq), e.at).is_some() {
                self.violation(
                    "at-most-once",
                    e.at,
                    format!("{node}/{run} handled {from}/{from_run}'s message {seq} twice"),
                );
            }
            let prev = last.insert((node, *run, from, *from_run), *seq);
            if let Some(prev) = prev.filter(|p| *p >= *seq) {
                self.violation(
                    "FIFO",
                    e.at,
                    format!("{node}/{run} handled {from}/{from_run}'s message {seq} after its message {prev}"),
                );
            }
        }
    }

    fn asks(&mut self) {
        let mut handled: BTreeMap<Key<'_>, usize> = BTreeMap::new();
        for e in self.entries {
            if let Event::Handled { node, from, from_run, to_run, seq, ask: true, .. } = &e.event {
                *handled.entry((from, *from_run, node, *to_run, *seq)).or_default() += 1;
            }
        }
        let mut open: BTreeMap<Key<'_>, Duration> = BTreeMap::new();
        for e in self.entries {
            match &e.event {
                Event::Asked { from, from_run, to, to_run, seq } => {
                    open.insert((from, *from_run, to, *to_run, *seq), e.at);
                }
                Event::Answered { from, from_run, to, to_run, seq, outcome } => {
                    let key = (from.as_str(), *from_run, to.as_str(), *to_run, *seq);
                    let Some(asked) = open.remove(&key) else {
                        self.violation(
                            "asks",
                            e.at,
                            format!("{from}/{from_run}'s ask {seq} to {to} resolved again, or unasked"),
                        );
                        continue;
                    };
                    let times = handled.get(&key).copied().unwrap_or(0);
                    let justified = |c: &Self| {
                        c.disturbed(from, to, *to_run, asked, e.at, true) || c.run_ended_by(from, *from_run, e.at)
                    };
                    match outcome {
                        Outcome::Replied(n) if *n != *seq || times != 1 => self.violation(
                            "asks",
                            e.at,
                            format!("{from}/{from_run}'s ask {seq} to {to}/{to_run} got reply {n}, handled {times} times"),
                        ),
                        Outcome::CameBack if times != 0 => self.violation(
                            "asks",
                            e.at,
                            format!("{from}/{from_run}'s ask {seq} to {to}/{to_run} came back, but was handled"),
                        ),
                        Outcome::NodeDown | Outcome::Timeout | Outcome::Failed(_) if !justified(self) => {
                            self.violation(
                                "asks",
                                e.at,
                                format!(
                                    "{from}/{from_run}'s ask {seq} to {to}/{to_run} failed with {outcome:?} with nothing wrong between them"
                                ),
                            )
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        for ((from, from_run, to, to_run, seq), at) in open {
            self.violation("asks", at, format!("{from}/{from_run}'s ask {seq} to {to}/{to_run} never resolved"));
        }
    }

    fn downs(&mut self) {
        for e in &self.entries[..self.ending] {
            let Event::Saw { node, run, member, member_run, what: Seen::Down } = &e.event else { continue };
            if self.run_ended_by(node, *run, e.at) {
                continue;
            }
            if !self.disturbed(node, member, *member_run, e.at, e.at, false) {
                self.violation(
                    "down",
                    e.at,
                    format!("{node}/{run} saw {member}/{member_run} down, which was up and reachable"),
                );
            }
        }
    }

    fn self_downs(&mut self) {
        for e in &self.entries[..self.ending] {
            let Event::SelfDowned { node, run } = &e.event else { continue };
            // Any cut or kill will do, not only a cut of this node: the
            // side that gives way is not always the one a fault cut off (a
            // tie; or a member the views had not converged on yet, which
            // counts on the other side, also when a member is killed
            // before they converge).
            let caused = self.faults.iter().any(|(start, end, fault)| {
                *start <= e.at
                    && end.is_none_or(|end| end + AFTERMATH >= e.at)
                    && (fault.cuts() || fault.kind() == FaultKind::Kill)
            });
            if !caused {
                self.violation(
                    "self-down",
                    e.at,
                    format!("{node}/{run} downed itself with no member cut off or killed"),
                );
            }
        }
    }

    fn stays_down(&mut self) {
        let mut down: BTreeSet<(&str, &str, u64)> = BTreeSet::new();
        let mut anyone: BTreeSet<(&str, u64)> = BTreeSet::new();
        for e in &self.entries[..self.ending] {
            let Event::Saw { node, run, member, member_run, what } = &e.event else { continue };
            match what {
                Seen::Down => {
                    down.insert((node, member, *member_run));
                    anyone.insert((member, *member_run));
                }
                Seen::Up | Seen::Reachable if down.contains(&(node.as_str(), member.as_str(), *member_run)) => {
                    self.violation(
                        "stays down",
                        e.at,
                        format!("{node}/{run} saw {member}/{member_run} {what:?} after it saw it down"),
                    );
                }
                _ => {}
            }
        }
        let at = self.entries.get(self.ending).map_or(Duration::ZERO, |e| e.at);
        let mut found = Vec::new();
        for (node, run, members) in self.views() {
            for (member, member_run) in members {
                if anyone.contains(&(member.as_str(), *member_run)) {
                    found.push(format!(
                        "{node}/{run} has {member}/{member_run} as a member at the end, which was downed"
                    ));
                }
            }
        }
        for detail in found {
            self.violation("stays down", at, detail);
        }
    }

    fn watches(&mut self) {
        let mut made: BTreeMap<(&str, u64, &str, u64), usize> = BTreeMap::new();
        let mut fired: BTreeMap<(&str, u64, &str, u64), usize> = BTreeMap::new();
        for e in &self.entries[..self.ending] {
            match &e.event {
                Event::Watching { from, from_run, to, to_run } => {
                    *made.entry((from, *from_run, to, *to_run)).or_default() += 1;
                }
                Event::WatchFired { from, from_run, to, to_run, reason } => {
                    let n = fired.entry((from, *from_run, to, *to_run)).or_default();
                    *n += 1;
                    let n = *n;
                    let watches = made.get(&(from.as_str(), *from_run, to.as_str(), *to_run)).copied().unwrap_or(0);
                    if n > watches {
                        self.violation(
                            "watches",
                            e.at,
                            format!("{from}/{from_run}'s watch of {to}/{to_run} fired {n} times for {watches} watches"),
                        );
                    }
                    let watcher_gone = self.run_ended_by(from, *from_run, e.at);
                    let ok = match reason.as_str() {
                        "NodeDown" => watcher_gone || self.disturbed(from, to, *to_run, e.at, e.at, true),
                        _ => watcher_gone || self.run_ended_by(to, *to_run, e.at),
                    };
                    if !ok {
                        self.violation(
                            "watches",
                            e.at,
                            format!("{from}/{from_run}'s watch of {to}/{to_run} fired ({reason}), which was up and reachable"),
                        );
                    }
                }
                _ => {}
            }
        }
        let live: BTreeSet<(&str, u64)> = self.views().map(|(node, run, _)| (node, run)).collect();
        let at = self.entries.get(self.ending).map_or(Duration::ZERO, |e| e.at);
        for ((from, from_run, to, to_run), _) in made {
            let target_ended = self.ended.get(&(to, to_run)).is_some_and(|t| *t + AFTERMATH <= at);
            if target_ended && live.contains(&(from, from_run)) && !fired.contains_key(&(from, from_run, to, to_run)) {
                self.violation(
                    "watches",
                    at,
                    format!("{from}/{from_run}'s watch of {to}/{to_run}, which ended, never fired"),
                );
            }
        }
    }

    fn views(&self) -> impl Iterator<Item = (&'a str, u64, &'a [(String, u64)])> {
        self.entries.iter().filter_map(|e| match &e.event {
            Event::View { node, run, members } => Some((node.as_str(), *run, members.as_slice())),
            _ => None,
        })
    }

    fn reformed(&mut self) {
        let Some(end) = self.entries.get(self.ending) else {
            return self.violation("re-formed", Duration::ZERO, "the run has no end".to_owned());
        };
        let at = end.at;
        let live: Vec<(String, u64)> = self.views().map(|(node, run, _)| (node.to_owned(), run)).collect();
        let ids: BTreeSet<&str> = self
            .entries
            .iter()
            .filter_map(|e| match &e.event {
                Event::Started { node, .. } => Some(node.as_str()),
                _ => None,
            })
            .collect();
        for id in ids {
            if !live.iter().any(|(node, _)| node == id) {
                self.violation("re-formed", at, format!("{id} is not up at the end"));
            }
        }
        let admitted: BTreeSet<(&str, u64)> = self.entries[..self.ending]
            .iter()
            .filter_map(|e| match &e.event {
                Event::Admitted { node, run } => Some((node.as_str(), *run)),
                _ => None,
            })
            .collect();
        for (node, run) in &live {
            if !admitted.contains(&(node.as_str(), *run)) {
                self.violation("re-formed", at, format!("{node}/{run} was never admitted to the cluster"));
            }
        }
        let wrong: Vec<String> = self
            .views()
            .filter(|(_, _, members)| *members != live.as_slice())
            .map(|(node, run, members)| format!("{node}/{run} sees {members:?}, the live runs are {live:?}"))
            .collect();
        for detail in wrong {
            self.violation("re-formed", at, detail);
        }
    }

    fn instances(&mut self) {
        let mut running: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for e in self.entries {
            match &e.event {
                Event::InstanceStarted { of, node, run } => {
                    let on = running.entry(of).or_default();
                    if !on.is_empty() {
                        let detail = format!("{of} started on {node}/{run} while it ran on {on:?}");
                        self.violation("one instance", e.at, detail);
                    }
                    on.push((node, *run));
                }
                Event::InstanceStopped { of, node, run } => {
                    let on = running.entry(of).or_default();
                    match on.iter().position(|r| *r == (node.as_str(), *run)) {
                        Some(i) => {
                            on.remove(i);
                        }
                        None => self.violation(
                            "one instance",
                            e.at,
                            format!("{of} stopped on {node}/{run}, where it never ran"),
                        ),
                    }
                }
                _ => {}
            }
        }
    }

    fn deliveries(&mut self) {
        // (producer, consumer node) → the highest sequence number handled.
        let mut highest: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        // (producer, consumer node, consumer run) → the last one handled.
        let mut last: BTreeMap<(&str, &str, u64), u64> = BTreeMap::new();
        for e in self.entries {
            match &e.event {
                Event::Delivered { node, run, producer, seq } => {
                    let high = highest.entry((producer, node)).or_default();
                    // Within a run, each message once and in order; a run may
                    // skip what another run of the consumer handled (it
                    // follows the producer's acknowledgements), never past
                    // what any run handled.
                    match last.get(&(producer.as_str(), node.as_str(), *run)) {
                        Some(prev) if seq <= prev => self.violation(
                            "delivery",
                            e.at,
                            format!("the consumer on {node}/{run} got {seq} from {producer} after {prev}"),
                        ),
                        _ if *seq > *high + 1 => self.violation(
                            "delivery",
                            e.at,
                            format!("the consumer on {node}/{run} got {seq} from {producer}; only up to {high} was handled before"),
                        ),
                        _ => {}
                    }
                    *high = (*high).max(*seq);
                    last.insert((producer, node, *run), *seq);
                }
                Event::Confirmed { producer, consumer, upto, .. } => {
                    let high = highest.get(&(producer.as_str(), consumer.as_str())).copied().unwrap_or(0);
                    if *upto > high {
                        self.violation(
                            "delivery",
                            e.at,
                            format!(
                                "{producer} saw up to {upto} acknowledged; {consumer}'s consumers handled up to {high}"
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(at: u64, node: &str, run: u64, from: &str, seq: u64) -> (u64, Event) {
        (at, Event::Handled { node: node.into(), run, from: from.into(), from_run: 1, to_run: run, seq, ask: false })
    }

    fn trace(events: Vec<(u64, Event)>) -> Trace {
        let mut t = Trace::default();
        for (at, e) in events {
            t.push(Duration::from_millis(at), e);
        }
        t
    }

    fn ending(mut events: Vec<(u64, Event)>) -> Vec<(u64, Event)> {
        events.insert(0, (0, Event::Started { node: "a".into(), run: 1 }));
        events.insert(1, (0, Event::Started { node: "b".into(), run: 2 }));
        events.insert(2, (0, Event::Admitted { node: "a".into(), run: 1 }));
        events.insert(3, (0, Event::Admitted { node: "b".into(), run: 2 }));
        let members = vec![("a".to_owned(), 1), ("b".to_owned(), 2)];
        events.push((90_000, Event::View { node: "a".into(), run: 1, members: members.clone() }));
        events.push((90_000, Event::View { node: "b".into(), run: 2, members }));
        events.push((90_000, Event::Ending));
        events
    }

    fn rules(events: Vec<(u64, Event)>) -> Vec<&'static str> {
        check(&trace(ending(events))).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_clean_trace_passes() {
        assert_eq!(rules(vec![handled(1, "b", 2, "a", 1), handled(2, "b", 2, "a", 3)]), Vec::<&str>::new());
    }

    #[test]
    fn reordering_duplicates_and_a_later_run_are_caught() {
        assert_eq!(rules(vec![handled(1, "b", 2, "a", 2), handled(2, "b", 2, "a", 1)]), ["FIFO"]);
        assert_eq!(rules(vec![handled(1, "b", 2, "a", 1), handled(2, "b", 2, "a", 1)]), ["at-most-once", "FIFO"]);
        let wrong =
            Event::Handled { node: "b".into(), run: 2, from: "a".into(), from_run: 1, to_run: 1, seq: 1, ask: false };
        assert_eq!(rules(vec![(1, wrong)]), ["right run"]);
    }

    /// The rules found, but for `stays down` (b is seen down, yet in the
    /// views at the end: tested on its own below).
    fn down_rules(events: Vec<(u64, Event)>) -> Vec<&'static str> {
        rules(events).into_iter().filter(|r| *r != "stays down").collect()
    }

    #[test]
    fn a_down_needs_a_cause() {
        let saw =
            |at| (at, Event::Saw { node: "a".into(), run: 1, member: "b".into(), member_run: 2, what: Seen::Down });
        assert_eq!(down_rules(vec![saw(10_000)]), ["down"]);
        let cut = Fault::Isolate { node: "b".into() };
        let with_fault = vec![(1_000, Event::Fault(cut.clone())), (9_000, Event::FaultEnded(cut)), saw(10_000)];
        assert_eq!(down_rules(with_fault), Vec::<&str>::new());
        let other = Fault::Isolate { node: "c".into() };
        let unrelated = vec![(1_000, Event::Fault(other.clone())), (9_000, Event::FaultEnded(other)), saw(10_000)];
        assert_eq!(down_rules(unrelated), ["down"], "another node's isolation does not excuse it");
    }

    #[test]
    fn a_self_down_needs_a_cut() {
        let downed = (5_000, Event::SelfDowned { node: "b".into(), run: 2 });
        assert_eq!(down_rules(vec![downed.clone()]), ["self-down"]);
        let cut = Fault::Partition { a: "a".into(), b: "b".into() };
        let events = vec![(1_000, Event::Fault(cut.clone())), (3_000, Event::FaultEnded(cut)), downed.clone()];
        assert_eq!(down_rules(events), Vec::<&str>::new());
        // The side that gives way need not be the one cut off.
        let isolated = Fault::Isolate { node: "a".into() };
        let events =
            vec![(1_000, Event::Fault(isolated.clone())), (3_000, Event::FaultEnded(isolated)), downed.clone()];
        assert_eq!(down_rules(events), Vec::<&str>::new());
        let reset = Fault::Reset { a: "a".into(), b: "b".into() };
        let events = vec![(1_000, Event::Fault(reset.clone())), (3_000, Event::FaultEnded(reset)), downed];
        assert_eq!(down_rules(events), ["self-down"], "a connection reset is no reason");
    }

    #[test]
    fn a_downed_run_must_stay_out() {
        let cut = Fault::Isolate { node: "b".into() };
        let saw = |at, what| (at, Event::Saw { node: "a".into(), run: 1, member: "b".into(), member_run: 2, what });
        let mut events =
            vec![(1_000, Event::Fault(cut.clone())), saw(5_000, Seen::Down), (6_000, Event::FaultEnded(cut))];
        events.push(saw(7_000, Seen::Up));
        // Seen up again, and a member of both views at the end.
        assert_eq!(rules(events), ["stays down", "stays down", "stays down"]);
    }

    #[test]
    fn asks_must_agree_with_what_was_handled_and_resolve() {
        let asked = |seq| (5, Event::Asked { from: "a".into(), from_run: 1, to: "b".into(), to_run: 2, seq });
        let answered = |seq, outcome| {
            (6, Event::Answered { from: "a".into(), from_run: 1, to: "b".into(), to_run: 2, seq, outcome })
        };
        let handled_ask = (
            5,
            Event::Handled { node: "b".into(), run: 2, from: "a".into(), from_run: 1, to_run: 2, seq: 1, ask: true },
        );
        assert_eq!(rules(vec![asked(1), handled_ask.clone(), answered(1, Outcome::Replied(1))]), Vec::<&str>::new());
        assert_eq!(rules(vec![asked(1), handled_ask, answered(1, Outcome::CameBack)]), ["asks"]);
        assert_eq!(rules(vec![asked(1), answered(1, Outcome::NodeDown)]), ["asks"], "NodeDown with nothing wrong");
        assert_eq!(rules(vec![asked(1)]), ["asks"], "never resolved");
    }

    #[test]
    fn the_end_must_show_one_cluster_and_fired_watches() {
        let mut events = ending(vec![
            (1, Event::Watching { from: "a".into(), from_run: 1, to: "b".into(), to_run: 2 }),
            (2, Event::Killed { node: "b".into(), run: 2 }),
        ]);
        // b's view names a's run wrongly, and a's watch of b never fired.
        if let Some((_, Event::View { members, .. })) =
            events.iter_mut().find(|(_, e)| matches!(e, Event::View { node, .. } if node == "b"))
        {
            members[0].1 = 7;
        }
        let found: Vec<&str> = check(&trace(events)).into_iter().map(|v| v.rule).collect();
        assert_eq!(found, ["watches", "re-formed"]);
    }

    #[test]
    fn every_live_run_must_have_been_admitted() {
        let mut events = ending(Vec::new());
        events.retain(|(_, e)| !matches!(e, Event::Admitted { node, .. } if node == "b"));
        let found: Vec<String> = check(&trace(events)).into_iter().map(|v| v.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("b/2 was never admitted"), "{found:?}");
    }

    fn started(at: u64, of: &str, node: &str, run: u64) -> (u64, Event) {
        (at, Event::InstanceStarted { of: of.into(), node: node.into(), run })
    }

    fn stopped(at: u64, of: &str, node: &str, run: u64) -> (u64, Event) {
        (at, Event::InstanceStopped { of: of.into(), node: node.into(), run })
    }

    #[test]
    fn two_instances_at_once_are_caught_and_a_hand_over_is_not() {
        let handed_over =
            vec![started(1, "singleton", "a", 1), stopped(5, "singleton", "a", 1), started(6, "singleton", "b", 2)];
        assert_eq!(rules(handed_over), Vec::<&str>::new());
        let overlap = vec![
            started(1, "entity e1", "a", 1),
            started(2, "entity e2", "b", 2),
            started(3, "entity e1", "b", 2),
            stopped(4, "entity e1", "a", 1),
            stopped(5, "entity e1", "b", 2),
        ];
        assert_eq!(rules(overlap), ["one instance"]);
        // A later run of the same node counts as another instance.
        let runs = vec![started(1, "singleton", "a", 1), started(2, "singleton", "a", 3)];
        assert_eq!(rules(runs), ["one instance"]);
    }

    fn delivered(at: u64, node: &str, run: u64, seq: u64) -> (u64, Event) {
        (at, Event::Delivered { node: node.into(), run, producer: "p".into(), seq })
    }

    fn confirmed(at: u64, upto: u64) -> (u64, Event) {
        (at, Event::Confirmed { producer: "p".into(), consumer: "b".into(), upto, sent: upto })
    }

    #[test]
    fn deliveries_must_be_in_order_once_without_gaps_and_cover_what_was_acknowledged() {
        // A replacement consumer (run 5) may get again what the lost one handled.
        let clean = vec![
            delivered(1, "b", 2, 1),
            delivered(2, "b", 2, 2),
            delivered(3, "b", 5, 2),
            delivered(4, "b", 5, 3),
            confirmed(5, 3),
        ];
        assert_eq!(rules(clean), Vec::<&str>::new());
        assert_eq!(rules(vec![delivered(1, "b", 2, 1), delivered(2, "b", 2, 1)]), ["delivery"], "twice");
        assert_eq!(rules(vec![delivered(1, "b", 2, 1), delivered(2, "b", 2, 3)]), ["delivery"], "a gap");
        assert_eq!(
            rules(vec![delivered(1, "b", 2, 2), delivered(2, "b", 2, 1)]).len(),
            2,
            "the first missed, then back"
        );
        // Run 2 skips what run 1 handled (a late acknowledgement moved the producer on).
        let skip =
            vec![delivered(1, "b", 2, 1), delivered(2, "b", 1, 2), delivered(3, "b", 1, 3), delivered(4, "b", 2, 4)];
        assert_eq!(rules(skip), Vec::<&str>::new());
        assert_eq!(rules(vec![delivered(1, "b", 2, 1), delivered(2, "b", 5, 3)]), ["delivery"], "a replacement's gap");
        assert_eq!(rules(vec![delivered(1, "b", 2, 2)]), ["delivery"], "the first missed");
        assert_eq!(rules(vec![delivered(1, "b", 2, 1), confirmed(2, 2)]), ["delivery"], "acknowledged, never handled");
    }
}
