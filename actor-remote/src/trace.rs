//! Trace context across nodes: the span a tell or an ask is sent in on one
//! node becomes the parent of the span its handler runs in on the other.
//!
//! The runtime does not pick a tracing system: install a [`Propagate`]
//! (the facade's `otel` feature has one for OpenTelemetry, as a W3C
//! `traceparent`) with [`set_propagator`]. Then every remote tell and ask
//! sent while a span is current carries that span's context in the frame's
//! optional `trace` element (see PROTOCOL.md), and the receiving node
//! delivers the message inside a `remote` span whose parent is that
//! context; the handler's `handle` span is its child. Without a
//! propagator, frames carry nothing and cost nothing more.
//!
//! A context from a peer is untrusted input: one longer than
//! [`MAX_TRACE_CONTEXT`] bytes is ignored, and a propagator must ignore one
//! it cannot parse.

use std::sync::OnceLock;

/// The longest trace context sent or accepted (bytes). A W3C
/// `traceparent` is 55.
pub const MAX_TRACE_CONTEXT: usize = 256;

/// Turns a span into a context that travels, and a travelled context into
/// a span's parent.
pub trait Propagate: Send + Sync + 'static {
    /// The context of `span` to send with a message, or `None` (a span the
    /// tracing system does not know).
    fn inject(&self, span: &tracing::Span) -> Option<String>;
    /// Makes `context` (from a peer: possibly malformed) the parent of
    /// `span`; does nothing with a context it cannot read.
    fn extract(&self, context: &str, span: &tracing::Span);
}

static PROPAGATOR: OnceLock<Box<dyn Propagate>> = OnceLock::new();

/// Installs the process's propagator; false if one was installed already
/// (it stays).
pub fn set_propagator(propagator: impl Propagate) -> bool {
    PROPAGATOR.set(Box::new(propagator)).is_ok()
}

/// The current span's context, if a propagator is installed and a span is
/// current.
#[cfg(feature = "runtime")]
pub(crate) fn inject() -> Option<String> {
    let propagator = PROPAGATOR.get()?;
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    propagator.inject(&span).filter(|context| context.len() <= MAX_TRACE_CONTEXT)
}

/// The span to deliver a message of `wire_name` in, child of the sender's
/// `context`; a disabled span when there is no context or no propagator.
#[cfg(feature = "runtime")]
pub(crate) fn remote_span(wire_name: &str, context: Option<&str>) -> tracing::Span {
    let (Some(context), Some(propagator)) = (context, PROPAGATOR.get()) else {
        return tracing::Span::none();
    };
    if context.len() > MAX_TRACE_CONTEXT {
        tracing::debug!(len = context.len(), "trace context too long; ignored");
        return tracing::Span::none();
    }
    let span = tracing::debug_span!("remote", message = wire_name);
    if !span.is_none() {
        propagator.extract(context, &span);
    }
    span
}
