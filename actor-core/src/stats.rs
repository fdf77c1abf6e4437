//! Counters of rare events (panics, restarts, failed asks) through the
//! [`metrics`] facade: each is a no-op until the application installs a
//! recorder (the operations endpoint does). The hot paths record nothing
//! here; what they count is read on demand ([`ActorSystem::actors`](crate::ActorSystem::actors)).
//!
//! | counter | labels |
//! |---|---|
//! | `footlight_actor_panics_total` | `actor_type`: a handler or hook panicked |
//! | `footlight_actor_restarts_total` | `actor_type`: a supervisor restarts a child |
//! | `footlight_ask_failures_total` | `reason`: `timeout`, `node_down`, `no_reply` |

use crate::cell::short_type_name;

/// A handler or hook of an actor of type `type_name` panicked.
pub(crate) fn panicked(type_name: &'static str) {
    metrics::counter!("footlight_actor_panics_total", "actor_type" => short_type_name(type_name)).increment(1);
}

/// A supervisor restarts a child of type `type_name`.
pub(crate) fn restarting(type_name: &'static str) {
    metrics::counter!("footlight_actor_restarts_total", "actor_type" => short_type_name(type_name)).increment(1);
}

/// Why an ask failed, as counted.
#[derive(Clone, Copy)]
pub(crate) enum AskFailure {
    Timeout,
    NodeDown,
    NoReply,
}

/// An ask failed for `why`.
pub(crate) fn ask_failed(why: AskFailure) {
    let reason = match why {
        AskFailure::Timeout => "timeout",
        AskFailure::NodeDown => "node_down",
        AskFailure::NoReply => "no_reply",
    };
    metrics::counter!("footlight_ask_failures_total", "reason" => reason).increment(1);
}
