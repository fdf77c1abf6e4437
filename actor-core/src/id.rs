//! Actor identities.

use std::fmt;
use std::sync::atomic::AtomicU64;

/// Identifies one actor for the whole life of the process.
///
/// Ids are never reused, so an `ActorId` taken from a [`Terminated`](crate::Terminated)
/// notice can not be confused with a later actor. (Inside a seeded
/// simulation, ids come from the simulation's own sequence: see
/// [`entropy::seeded`](crate::entropy::seeded).) A supervised child keeps its id
/// across restarts: the id names the mailbox and its [`ActorRef`](crate::ActorRef),
/// not one instance of the actor's state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(u64);

impl ActorId {
    /// Allocates a fresh id. Ids grow with spawn order.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(crate::entropy::number(&NEXT))
    }

    /// An id no actor of this process has or will have: for naming an actor
    /// elsewhere that has no local stand-in.
    pub fn fresh() -> Self {
        Self::next()
    }

    /// The id as a number, unique within this process.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({})", self.0)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = ActorId::next();
        let b = ActorId::next();
        assert!(b > a);
        assert_eq!(a.to_string(), format!("#{}", a.as_u64()));
    }
}
