//! # traced: one OpenTelemetry trace across two nodes
//!
//! ```sh
//! cargo run --example traced
//! ```
//!
//! Two nodes in one process (over the in-memory network, to keep the
//! example short: over QUIC it is the same). Node `a` asks node `b`'s
//! `prices` actor inside a span called `checkout`; the trace context travels
//! in the ask's frame, and `b` handles it in a span of the same trace. The
//! spans are printed to stdout by OpenTelemetry's stdout exporter when the
//! example ends: look for one `TraceId` shared by `checkout` on `a` and
//! `remote` and `handle` on `b`. For OTLP, put `opentelemetry-otlp`'s
//! exporter where the stdout one is; the rest stays.

use footlight::prelude::*;
use footlight::remote::transport::mem::MemoryNetwork;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Actor)]
struct Prices;

#[derive(Message, Serialize, Deserialize)]
#[message(reply = u64, remote = "traced.Quote")]
struct Quote(String);

impl Handler<Quote> for Prices {
    async fn handle(&mut self, Quote(item): Quote, _ctx: &mut Context<Self>) -> u64 {
        tracing::info!(%item, "quoting");
        item.len() as u64 * 100
    }
}

impl RemoteActor for Prices {
    fn remote_messages(m: &mut RemoteMessages<Self>) {
        m.add::<Quote>();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Spans go to OpenTelemetry, which prints them at the end.
    let provider =
        SdkTracerProvider::builder().with_simple_exporter(opentelemetry_stdout::SpanExporter::default()).build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("traced")))
        // The runtime's handler and delivery spans are at debug level.
        .with(tracing_subscriber::EnvFilter::new("info,actor_core=debug,actor_remote=debug"))
        .init();
    // Trace context in remote tells and asks, as a W3C traceparent.
    actor_ops::trace::propagate_trace_context();

    let net = MemoryNetwork::new();
    let a = Node::builder("a").transport(net.transport()).listen("a").start().await?;
    let b = Node::builder("b").transport(net.transport()).listen("b").start().await?;
    b.spawn_named("prices", Prices)?;
    a.dial("b").await?;
    let prices: ActorRef<Prices> = a.lookup("prices").await?;
    let total = async { prices.ask(Quote("teapot".into())).await }.instrument(tracing::info_span!("checkout")).await?;
    println!("a asked b for a quote: {total}; the spans of both nodes follow, in one trace\n");
    a.shutdown().await;
    b.shutdown().await;
    provider.shutdown()?;
    Ok(())
}
