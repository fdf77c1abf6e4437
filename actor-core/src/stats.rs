//! The runtime's own metrics. Rare events (panics, restarts, failed asks)
//! go through the [`metrics`] facade: each is a no-op until the application
//! installs a recorder (the operations endpoint does). The hot paths record
//! nothing there; what they count is read on demand
//! ([`ActorSystem::actors`](crate::ActorSystem::actors), [`asks_started`]),
//! except handler times, when turned on.
//!
//! | counter | labels |
//! |---|---|
//! | `footlight_actor_panics_total` | `actor_type`: a handler or hook panicked |
//! | `footlight_actor_restarts_total` | `actor_type`: a supervisor restarts a child |
//! | `footlight_ask_failures_total` | `reason`: `timeout`, `node_down`, `no_reply` |
//! | `footlight_actor_handler_seconds` (histogram) | `actor_type`: time in a handler, only while [`set_handler_times`] is on |
//!
//! Asks started are counted in one process-wide counter ([`asks_started`]),
//! read on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cell::short_type_name;

static ASKS_STARTED: AtomicU64 = AtomicU64::new(0);
static HANDLER_TIMES: AtomicBool = AtomicBool::new(false);

/// Asks started in this process (local and remote), since it started.
pub fn asks_started() -> u64 {
    ASKS_STARTED.load(Ordering::Relaxed)
}

/// An ask starts.
#[inline]
pub(crate) fn ask_started() {
    ASKS_STARTED.fetch_add(1, Ordering::Relaxed);
}

/// Turns on (or off) timing every handler in this process into the
/// `footlight_actor_handler_seconds` histogram, by actor type. Off by
/// default: two clock reads and a histogram update per message (see the
/// README for the cost measured).
pub fn set_handler_times(on: bool) {
    HANDLER_TIMES.store(on, Ordering::Relaxed);
}

/// Whether handlers are timed.
#[inline]
pub(crate) fn handler_times() -> bool {
    HANDLER_TIMES.load(Ordering::Relaxed)
}

/// The label of each actor type, made once per type (the histogram itself
/// is looked up on every record: a recorder installed later still gets it).
/// Process-wide, so std's keys (not a simulation's seed: a run that made
/// it first would shift its own numbers).
fn labels() -> &'static dashmap::DashMap<&'static str, metrics::SharedString> {
    static LABELS: std::sync::OnceLock<dashmap::DashMap<&'static str, metrics::SharedString>> =
        std::sync::OnceLock::new();
    LABELS.get_or_init(dashmap::DashMap::new)
}

/// A handler of an actor of type `type_name` took `took`.
pub(crate) fn handled_in(type_name: &'static str, took: Duration) {
    let label = match labels().get(type_name) {
        Some(label) => label.clone(),
        None => {
            let label = metrics::SharedString::from(short_type_name(type_name));
            labels().insert(type_name, label.clone());
            label
        }
    };
    metrics::histogram!("footlight_actor_handler_seconds", "actor_type" => label).record(took.as_secs_f64());
}

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
