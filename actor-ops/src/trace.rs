//! Trace context across nodes for OpenTelemetry (feature `otel`): the span
//! a tell or an ask is sent in on one node is the parent of its handler's
//! span on the other, in the same OpenTelemetry trace.
//!
//! Install the propagator once per process, beside a `tracing` subscriber
//! with `tracing-opentelemetry`'s layer (any exporter: stdout, OTLP):
//!
//! ```ignore
//! actor_ops::trace::propagate_trace_context();
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(tracer))
//!     .with(EnvFilter::new("info,actor_core=debug,actor_remote=debug"))
//!     .init();
//! ```
//!
//! Handler spans (`handle`) and delivery spans (`remote`) are at debug
//! level: the filter must let them through for the link to show. The
//! context travels as a W3C `traceparent` in the frames' optional `trace`
//! element (PROTOCOL.md); a peer that sends none, or an older peer, is
//! unaffected.

use std::collections::HashMap;

use actor_remote::trace::Propagate;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Carries a span's OpenTelemetry context as a W3C `traceparent`.
#[derive(Debug, Default)]
pub struct W3cTraceContext {
    propagator: TraceContextPropagator,
}

/// The W3C header the context travels as.
const TRACEPARENT: &str = "traceparent";

impl Propagate for W3cTraceContext {
    fn inject(&self, span: &tracing::Span) -> Option<String> {
        let mut carrier: HashMap<String, String> = HashMap::new();
        self.propagator.inject_context(&span.context(), &mut carrier);
        carrier.remove(TRACEPARENT)
    }

    fn extract(&self, context: &str, span: &tracing::Span) {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), context.to_owned())]);
        // A malformed context extracts as none: the span stays a root.
        let parent = self.propagator.extract(&carrier);
        let _ = span.set_parent(parent);
    }
}

/// Installs [`W3cTraceContext`] as the process's propagator; false if one
/// was installed already.
pub fn propagate_trace_context() -> bool {
    actor_remote::trace::set_propagator(W3cTraceContext::default())
}
