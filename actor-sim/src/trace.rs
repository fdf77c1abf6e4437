//! The ordered record of a run.

use std::fmt;
use std::hash::Hasher;
use std::time::Duration;

use siphasher::sip::SipHasher13;

use crate::faults::Fault;

/// What a node saw of another member (from its cluster events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The member joined.
    Up,
    /// The member stopped answering.
    Unreachable,
    /// It answers again.
    Reachable,
    /// The member was declared down.
    Down,
    /// The member left.
    Left,
}

/// One thing that happened in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A run of a node started.
    Started {
        /// The node.
        node: String,
        /// Its run.
        run: u64,
    },
    /// A run of a node was killed: cut off, then stopped, without a word
    /// reaching anyone.
    Killed {
        /// The node.
        node: String,
        /// Its run.
        run: u64,
    },
    /// A run downed itself (split-brain resolution); the world restarts it.
    SelfDowned {
        /// The node.
        node: String,
        /// Its run.
        run: u64,
    },
    /// The cluster admitted a run of a node (its `joined` resolved).
    Admitted {
        /// The node.
        node: String,
        /// Its run.
        run: u64,
    },
    /// Every node sees every other: the cluster formed.
    Formed,
    /// A fault began.
    Fault(Fault),
    /// A fault ended.
    FaultEnded(Fault),
    /// The network was healed and killed nodes restarted: faults are over.
    Healed,
    /// `node` (run `run`) saw `what` of `member` (run `member_run`).
    Saw {
        /// The observer.
        node: String,
        /// The observer's run.
        run: u64,
        /// The member it is about.
        member: String,
        /// The member's run.
        member_run: u64,
        /// What it saw.
        what: Seen,
    },
    /// A message was handled by a run of a node.
    Handled {
        /// The handling node.
        node: String,
        /// Its run.
        run: u64,
        /// The sending node.
        from: String,
        /// The sender's run.
        from_run: u64,
        /// The run the sender addressed.
        to_run: u64,
        /// The sender's sequence number towards that run.
        seq: u64,
        /// Whether it was an ask.
        ask: bool,
    },
    /// An ask was made.
    Asked {
        /// The asking node.
        from: String,
        /// Its run.
        from_run: u64,
        /// The asked node.
        to: String,
        /// The run asked.
        to_run: u64,
        /// The sequence number.
        seq: u64,
    },
    /// An ask resolved.
    Answered {
        /// The asking node.
        from: String,
        /// Its run.
        from_run: u64,
        /// The asked node.
        to: String,
        /// The run asked.
        to_run: u64,
        /// The sequence number.
        seq: u64,
        /// How it resolved.
        outcome: Outcome,
    },
    /// A watch on a remote actor was made.
    Watching {
        /// The watching node.
        from: String,
        /// Its run.
        from_run: u64,
        /// The watched actor's node.
        to: String,
        /// Its run.
        to_run: u64,
    },
    /// A watch fired.
    WatchFired {
        /// The watching node.
        from: String,
        /// Its run.
        from_run: u64,
        /// The watched actor's node.
        to: String,
        /// Its run.
        to_run: u64,
        /// The exit reason it carried.
        reason: String,
    },
    /// An instance of a one-of-a-kind actor began running: the cluster
    /// singleton (`of` is `singleton`) or a sharded entity (`entity <id>`).
    InstanceStarted {
        /// Which one-of-a-kind actor.
        of: String,
        /// The node it runs on.
        node: String,
        /// That node's run.
        run: u64,
    },
    /// That instance is gone (stopped, or killed with its node).
    InstanceStopped {
        /// Which one-of-a-kind actor.
        of: String,
        /// The node it ran on.
        node: String,
        /// That node's run.
        run: u64,
    },
    /// A reliable consumer's handler got a message.
    Delivered {
        /// The consumer's node.
        node: String,
        /// That node's run.
        run: u64,
        /// The producer's id.
        producer: String,
        /// The message's sequence number.
        seq: u64,
    },
    /// At the end, what a live reliable producer's consumer has
    /// acknowledged: every message up to `upto`.
    Confirmed {
        /// The producer's id.
        producer: String,
        /// The node whose consumer it sends to.
        consumer: String,
        /// The highest sequence number acknowledged (0: none).
        upto: u64,
        /// The highest sequence number sent (0: none).
        sent: u64,
    },
    /// At the end, what a live node sees as the members: (node, run).
    View {
        /// The node.
        node: String,
        /// Its run.
        run: u64,
        /// Its members.
        members: Vec<(String, u64)>,
    },
    /// The end of the run: what follows is the shutdown.
    Ending,
    /// A scenario's own observation.
    Note(String),
}

/// How an ask resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reply: the sequence number the handler saw.
    Replied(u64),
    /// The message came back unhandled (`Closed` or `NotSent`).
    CameBack,
    /// `NodeDown`: the node was lost while the ask was out.
    NodeDown,
    /// `Timeout`: no answer in time.
    Timeout,
    /// Any other error, as text.
    Failed(String),
}

/// One event and when it happened (virtual time since the run began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When.
    pub at: Duration,
    /// What.
    pub event: Event,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>10.3}s {:?}", self.at.as_secs_f64(), self.event)
    }
}

/// The ordered events of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    entries: Vec<Entry>,
}

impl Trace {
    pub(crate) fn push(&mut self, at: Duration, event: Event) {
        self.entries.push(Entry { at, event });
    }

    /// The events, in the order they happened.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// A hash of the whole ordered trace (times and events): equal for two
    /// runs that did the same thing at the same virtual times.
    pub fn hash(&self) -> u64 {
        let mut h = SipHasher13::new_with_keys(0, 0);
        for entry in &self.entries {
            h.write_u128(entry.at.as_nanos());
            h.write(format!("{:?}", entry.event).as_bytes());
            h.write_u8(0xff);
        }
        h.finish()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.entries {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}
