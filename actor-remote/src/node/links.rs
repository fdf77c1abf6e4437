//! Links from peers' actors to this node's actors.
//!
//! A peer's actor that links itself to one of ours (`Link` frame) is
//! remembered per run of the peer, as `(our actor's handle, their actor's
//! handle)`. Our actor hears when theirs exits (`Exit` frame), or gets a
//! `NodeDown` link exit when that run of the peer is lost, as Erlang's
//! `noconnection`.

use actor_core::entropy::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use actor_core::ExitReason;

/// Links one peer run may make to this node's actors.
pub(crate) const MAX_LINKS_PER_PEER: usize = 10_000;

/// One peer run's links, as `(our actor's handle, their actor's handle)`.
type RunLinks = HashSet<(u64, u64)>;

/// Per run of a peer (node id, run): its links.
#[derive(Default)]
pub(crate) struct Links {
    by_run: Mutex<HashMap<(String, u64), RunLinks>>,
}

impl Links {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, u64), RunLinks>> {
        self.by_run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `linker` of run `run` of `peer` linked itself to our
    /// actor `target`. Past [`MAX_LINKS_PER_PEER`], links whose local actor
    /// ended (per `alive`) make room; false if there is still none.
    pub(crate) fn add(&self, peer: &str, run: u64, target: u64, linker: u64, alive: impl Fn(u64) -> bool) -> bool {
        let mut links = self.lock();
        let set = links.entry((peer.to_owned(), run)).or_default();
        if set.len() >= MAX_LINKS_PER_PEER {
            set.retain(|(target, _)| alive(*target));
        }
        if set.len() >= MAX_LINKS_PER_PEER {
            return false;
        }
        set.insert((target, linker));
        true
    }

    /// Forgets one link; false if that run of the peer had not made it.
    pub(crate) fn remove(&self, peer: &str, run: u64, target: u64, linker: u64) -> bool {
        self.lock().get_mut(&(peer.to_owned(), run)).is_some_and(|set| set.remove(&(target, linker)))
    }

    /// Takes every link of run `run` of `peer` (that run is gone).
    pub(crate) fn take_run(&self, peer: &str, run: u64) -> RunLinks {
        self.lock().remove(&(peer.to_owned(), run)).unwrap_or_default()
    }

    /// The links of run `run` of `peer` (tests).
    #[cfg(test)]
    pub(crate) fn of_run(&self, peer: &str, run: u64) -> RunLinks {
        self.lock().get(&(peer.to_owned(), run)).cloned().unwrap_or_default()
    }
}

/// An exit reason as a peer carries it (text): `Normal` and `Shutdown` come
/// back as such, anything else as `Failed`.
pub(crate) fn exit_reason(text: &str) -> ExitReason {
    match text {
        "normal" => ExitReason::Normal,
        "shutdown" => ExitReason::Shutdown,
        other => ExitReason::Failed(format!("remote: {other}")),
    }
}
