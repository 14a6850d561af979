//! Traces: the spans of a process exported over OTLP, and the W3C trace context that follows the
//! work from a request into the events it appends and into everything done later because of
//! them (a projection batch, a saga step, a message, a Kafka consumer in another process).
//!
//! Without an endpoint nothing is exported, no trace context is made, read or stored, and every
//! function here returns after one check of a flag ([`enabled`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod export;

pub use export::{Export, ExportError, Protocol, Settings};

/// Set once the export is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports its spans: when not, trace contexts are neither made nor kept.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A W3C trace context, as an event's metadata or a Kafka message's headers carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current span, when spans are exported.
    pub fn current() -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        let context = Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        Some(TraceContext {
            traceparent: carrier.remove("traceparent")?,
            tracestate: carrier
                .remove("tracestate")
                .filter(|tracestate| !tracestate.is_empty()),
        })
    }
}

/// The OpenTelemetry context of a received or stored `traceparent` (with its `tracestate`), or
/// `None` when it is not a valid one: a malformed context is ignored, never an error.
pub fn remote_context(
    traceparent: &str,
    tracestate: Option<&str>,
) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    let valid = context.span().span_context().is_valid();
    valid.then_some(context)
}

/// Makes `span` (new, not yet entered) continue the trace of `traceparent`; without one, or with
/// a malformed one, it stays where it is (a root, or the child of the current span).
fn continue_trace(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(context) = traceparent.and_then(|parent| remote_context(parent, tracestate)) {
        let _ = span.set_parent(context);
    }
}

/// The spans of work done at once for events of several traces (a projection batch, a relay
/// batch): one span per distinct trace among them (at most [`BatchSpans::MAX_TRACES`]), each
/// continuing its trace, all open while the work runs, so that every request's trace shows the
/// batch that applied its events. The work runs in the first ([`BatchSpans::main`]); the others
/// end when this is dropped.
#[derive(Debug)]
pub struct BatchSpans(Vec<Span>);

impl BatchSpans {
    /// More traces in one batch share the spans of the first ones.
    pub const MAX_TRACES: usize = 32;

    /// Spans made by `make` for the traces of `contexts` (traceparent and tracestate); one
    /// untraced span when none is valid, none at all when spans are not exported.
    pub fn new<'a>(
        make: impl Fn() -> Span,
        contexts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> BatchSpans {
        if !enabled() {
            return BatchSpans(Vec::new());
        }
        let mut spans = Vec::new();
        let mut seen: Vec<opentelemetry::trace::TraceId> = Vec::new();
        for (traceparent, tracestate) in contexts {
            if seen.len() >= BatchSpans::MAX_TRACES {
                break;
            }
            let Some(context) = remote_context(traceparent, tracestate) else {
                continue;
            };
            let trace_id = context.span().span_context().trace_id();
            if seen.contains(&trace_id) {
                continue;
            }
            seen.push(trace_id);
            let span = make();
            let _ = span.set_parent(context);
            spans.push(span);
        }
        if spans.is_empty() {
            spans.push(make());
        }
        BatchSpans(spans)
    }

    /// The span the work runs in.
    pub fn main(&self) -> Span {
        self.0.first().cloned().unwrap_or_else(Span::none)
    }
}

/// Makes `span` (new, not yet entered) continue the trace of `traceparent` ([`continue_trace`])
/// and records its ids in its log fields ([`record_ids`]).
pub fn follow(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    continue_trace(span, traceparent, tracestate);
    record_ids(span);
}

/// Records `span`'s trace and span ids in its fields `trace_id` and `span_id` (declared with
/// `tracing::field::Empty`), so that the log lines written inside it name the trace.
fn record_ids(span: &Span) {
    if !enabled() {
        return;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
        span.record("span_id", tracing::field::display(span_context.span_id()));
    }
}

#[cfg(test)]
mod tests {
    use super::remote_context;

    #[test]
    fn a_valid_traceparent_is_taken_and_a_malformed_one_is_ignored() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = remote_context(valid, Some("vendor=abc")).expect("valid");
        use opentelemetry::trace::TraceContextExt;
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for malformed in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01x",
        ] {
            assert!(remote_context(malformed, None).is_none(), "{malformed}");
        }
    }
}
