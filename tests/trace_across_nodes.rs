//! Trace context across nodes: an ask sent inside a span on node `a` is
//! handled on node `b` in a span of the same OpenTelemetry trace, whose
//! chain of parents leads back to the sender's span. Spans are kept in
//! memory by OpenTelemetry's SDK; the W3C propagator is installed once for
//! this test binary (one test: the tracing subscriber is process-wide).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Actor)]
struct Echo;

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "test.trace.Ping")]
struct Ping(u64);

impl Handler<Ping> for Echo {
    async fn handle(&mut self, Ping(n): Ping, _ctx: &mut Context<Self>) -> u64 {
        tracing::info!(n, "pinged");
        n + 1
    }
}

impl RemoteActor for Echo {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Ping>();
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handlers_span_on_the_other_node_is_in_the_senders_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    assert!(actor_ops::trace::propagate_trace_context());

    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await.unwrap();
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await.unwrap();
    b.spawn_named("echo", Echo).unwrap();
    a.dial("b").await.unwrap();
    let echo: ActorRef<Echo> = a.lookup("echo").await.unwrap();
    let answer = async { echo.ask(Ping(41)).await.unwrap() }.instrument(tracing::info_span!("request")).await;
    assert_eq!(answer, 42);
    // And an ask outside any span: no context travels with it (awaited, so
    // that it is handled before the nodes stop).
    assert_eq!(echo.ask(Ping(1)).await.unwrap(), 2);
    a.shutdown().await;
    b.shutdown().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = named(&spans, "request");
    assert_eq!(request.len(), 1, "{spans:#?}");
    let request = request[0];
    let trace = request.span_context.trace_id();
    let by_id: HashMap<SpanId, &SpanData> = spans.iter().map(|s| (s.span_context.span_id(), s)).collect();
    // The Ping handled on `b` under the request: its chain of parents
    // reaches the request's span on `a`, all in one trace.
    let handled: Vec<&SpanData> = named(&spans, "handle")
        .into_iter()
        .filter(|s| {
            s.attributes.iter().any(|kv| kv.key.as_str() == "message_type" && kv.value.as_str().contains("Ping"))
        })
        .collect();
    assert_eq!(handled.len(), 2, "both pings were handled: {spans:#?}");
    let in_trace: Vec<&&SpanData> = handled.iter().filter(|s| s.span_context.trace_id() == trace).collect();
    assert_eq!(in_trace.len(), 1, "the first ask's handler is in the request's trace, the second's is not: {spans:#?}");
    let mut at = *in_trace[0];
    let mut chain = vec![at.name.to_string()];
    while at.parent_span_id != request.span_context.span_id() {
        at = by_id.get(&at.parent_span_id).unwrap_or_else(|| panic!("the chain {chain:?} breaks before the request"));
        chain.push(at.name.to_string());
    }
    assert_eq!(chain, ["handle", "remote"], "handled on b inside the delivery of the request's message");
}
