//! Faults and the plan of them drawn from a seed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// One fault of the in-memory network or of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `a` and `b` cannot talk, both ways.
    Partition {
        /// One side.
        a: String,
        /// The other.
        b: String,
    },
    /// What `from` sends does not reach `to`; the other way works.
    OneWay {
        /// The sender cut off.
        from: String,
        /// The receiver.
        to: String,
    },
    /// `node` is cut off from every other node.
    Isolate {
        /// The node.
        node: String,
    },
    /// Every connection between `a` and `b` breaks at once (bytes in flight
    /// are lost); new ones work.
    Reset {
        /// One side.
        a: String,
        /// The other.
        b: String,
    },
    /// `node` is killed; it starts again (a new run) when the fault ends.
    Kill {
        /// The node.
        node: String,
    },
    /// Every chunk `node` receives is held this long.
    Delay {
        /// The node.
        node: String,
        /// The delay.
        by: Duration,
    },
}

impl Fault {
    /// Whether, while this fault lasts (and for a while after), `observer`
    /// may rightly find `member` unreachable, and so, past the detection
    /// budget, down: the fault cuts `member` off from someone (any
    /// observer may then see the resolvers' verdict on it), or cuts the
    /// observer off from everyone.
    pub fn may_cut_off(&self, observer: &str, member: &str) -> bool {
        match self {
            Fault::Partition { a, b } => a == member || b == member,
            Fault::OneWay { from, to } => from == member || to == member,
            Fault::Isolate { node } | Fault::Delay { node, .. } => node == member || node == observer,
            Fault::Kill { node } => node == member,
            Fault::Reset { .. } => false,
        }
    }

    /// Whether the fault cuts `node` off from some other node, or slows
    /// what it receives: reason enough for `node` to down itself.
    pub fn touches(&self, node: &str) -> bool {
        match self {
            Fault::Partition { a, b } => a == node || b == node,
            Fault::OneWay { from, to } => from == node || to == node,
            Fault::Isolate { node: n } | Fault::Delay { node: n, .. } => n == node,
            Fault::Kill { .. } | Fault::Reset { .. } => false,
        }
    }

    /// Whether it cuts (or slows) the links of some member: a partition,
    /// a one-way cut, an isolation or a delay (not a kill or a reset).
    pub fn cuts(&self) -> bool {
        !matches!(self, Fault::Kill { .. } | Fault::Reset { .. })
    }

    /// The kind of fault.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Isolate { .. } => FaultKind::Isolate,
            Fault::Reset { .. } => FaultKind::Reset,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Delay { .. } => FaultKind::Delay,
        }
    }
}

/// The kinds of fault a plan may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// [`Fault::Partition`].
    Partition,
    /// [`Fault::OneWay`].
    OneWay,
    /// [`Fault::Isolate`].
    Isolate,
    /// [`Fault::Reset`].
    Reset,
    /// [`Fault::Kill`].
    Kill,
    /// [`Fault::Delay`].
    Delay,
}

impl FaultKind {
    const ALL: [FaultKind; 6] = [
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Isolate,
        FaultKind::Reset,
        FaultKind::Kill,
        FaultKind::Delay,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Isolate => "isolate",
            FaultKind::Reset => "reset",
            FaultKind::Kill => "kill",
            FaultKind::Delay => "delay",
        }
    }
}

/// A set of fault kinds: `Faults::all()`, `Faults::none()`, or parsed
/// from `"partition,kill"` (`"all"`, `"none"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    kinds: Vec<FaultKind>,
}

impl Faults {
    /// Every kind.
    pub fn all() -> Self {
        Faults { kinds: FaultKind::ALL.to_vec() }
    }

    /// No faults: the run only checks the fault-free behaviour.
    pub fn none() -> Self {
        Faults { kinds: Vec::new() }
    }

    /// Only `kinds`.
    pub fn only(kinds: &[FaultKind]) -> Self {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        Faults { kinds }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kinds.is_empty() {
            return f.write_str("none");
        }
        if self.kinds == FaultKind::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// A fault kind's name was not one of `partition`, `one-way`, `isolate`,
/// `reset`, `kill`, `delay`, `all`, `none`.
#[derive(Debug, thiserror::Error)]
#[error("unknown fault kind {0:?} (partition, one-way, isolate, reset, kill, delay, all, none)")]
pub struct UnknownFault(String);

impl FromStr for Faults {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => return Ok(Faults::all()),
            "none" | "" => return Ok(Faults::none()),
            _ => {}
        }
        let mut kinds = Vec::new();
        for name in s.split(',').map(str::trim) {
            let kind =
                FaultKind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| UnknownFault(name.to_owned()))?;
            kinds.push(kind);
        }
        Ok(Faults::only(&kinds))
    }
}

/// The faults of one run, each with when it starts and how long it lasts
/// (virtual time from the start of the fault phase). One fault at a time,
/// with a quiet gap between two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (start, length, fault), by start.
    pub steps: Vec<(Duration, Duration, Fault)>,
}

impl Plan {
    /// The plan for `seed`: faults of the allowed kinds among `nodes`, one
    /// after another within `duration`. Lengths range from well under the
    /// failure-detection budget (a blip nobody should be declared down
    /// for) to three times it.
    pub fn draw(seed: u64, nodes: &[String], duration: Duration, faults: &Faults) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
        let mut steps = Vec::new();
        if faults.kinds.is_empty() || nodes.len() < 2 {
            return Plan { steps };
        }
        let mut at = Duration::from_millis(rng.random_range(500..3_000));
        loop {
            let length = Duration::from_millis(match rng.random_range(0..3) {
                0 => rng.random_range(100..2_000),
                1 => rng.random_range(2_000..8_000),
                _ => rng.random_range(8_000..15_000),
            });
            if at + length > duration {
                break;
            }
            let kind = faults.kinds[rng.random_range(0..faults.kinds.len())];
            let pick = |rng: &mut StdRng| nodes[rng.random_range(0..nodes.len())].clone();
            let a = pick(&mut rng);
            let b = loop {
                let b = pick(&mut rng);
                if b != a {
                    break b;
                }
            };
            let fault = match kind {
                FaultKind::Partition => Fault::Partition { a, b },
                FaultKind::OneWay => Fault::OneWay { from: a, to: b },
                FaultKind::Isolate => Fault::Isolate { node: a },
                FaultKind::Reset => Fault::Reset { a, b },
                FaultKind::Kill => Fault::Kill { node: a },
                FaultKind::Delay => Fault::Delay { node: a, by: Duration::from_millis(rng.random_range(10..800)) },
            };
            steps.push((at, length, fault));
            at += length + Duration::from_millis(rng.random_range(500..10_000));
        }
        Plan { steps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_one_plan_and_kinds_parse_back() {
        let nodes: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
        let plan = Plan::draw(7, &nodes, Duration::from_secs(60), &Faults::all());
        assert!(!plan.steps.is_empty());
        assert_eq!(plan, Plan::draw(7, &nodes, Duration::from_secs(60), &Faults::all()));
        assert_ne!(plan, Plan::draw(8, &nodes, Duration::from_secs(60), &Faults::all()));
        let only: Faults = "kill,one-way".parse().unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::draw(7, &nodes, Duration::from_secs(600), &only);
        assert!(plan.steps.iter().all(|(_, _, f)| matches!(f.kind(), FaultKind::Kill | FaultKind::OneWay)));
        assert_eq!(only.to_string().parse::<Faults>().ok(), Some(only));
        assert!("meteor".parse::<Faults>().is_err());
    }
}
