//! Traces: the spans of a process exported over OTLP, and the W3C trace context that follows the
//! work from a request into the events it appends and into everything done later because of
//! them (a projection batch, a saga step, a message, a Kafka consumer in another process).
//!
//! Without an endpoint nothing is exported, no trace context is made, read or stored, and every
//! function here returns after one check of a flag ([`enabled`]).
//!
//! Whether a trace is sampled is decided where it starts, before any span of it is made
//! ([`begin`], [`follow`]). Work of an unsampled trace ([`Work`]) makes no span for the export
//! (its filter refuses them all while such work runs) and passes its context on with the
//! sampled flag off, so that an unsampled request costs about what it costs without export.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod export;
mod sampling;
mod scope;

pub use export::{Export, ExportError, Protocol, Settings};
pub use sampling::sampler_from;
pub use scope::{Traced, Work};

/// Set once the export is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports its spans: when not, trace contexts are neither made nor kept.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the work running now is traced: spans are exported and its trace is sampled. Spans
/// made only for the export are made only then.
#[inline]
pub fn traced() -> bool {
    enabled() && !scope::unsampled_now()
}

/// A W3C trace context, as an event's metadata or a Kafka message's headers carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current span, when spans are exported: of the unsampled trace whose
    /// work runs now, or of the current span.
    pub fn current() -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        if let Some(unsampled) = scope::unsampled_context() {
            return Some(unsampled);
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

/// A request's work, the start of its trace or the continuation of its caller's (a valid W3C
/// `traceparent` with its `tracestate`; a malformed one is ignored). Sampling is decided first,
/// with the export's sampler: a sampled request runs in the span `traced` makes, which continues
/// the caller's trace and has its ids recorded ([`record_ids`]); an unsampled one in the span
/// `untraced` makes, which the export never sees. Without export, in `untraced`'s span.
pub fn begin(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    traced: impl FnOnce() -> Span,
    untraced: impl FnOnce() -> Span,
) -> Work {
    if !enabled() {
        return Work::traced(untraced());
    }
    let remote = traceparent.and_then(|parent| remote_context(parent, tracestate));
    let trace_id = match &remote {
        Some(remote) => remote.span().span_context().trace_id(),
        None => sampling::new_trace_id(),
    };
    if !sampling::sampled(remote.as_ref(), trace_id) {
        let context = scope::Unsampled::Made {
            trace_id,
            span_id: sampling::new_span_id(),
            tracestate: remote.and(tracestate.map(str::to_owned)),
        };
        let work = Work::unsampled(context, untraced);
        let span = work.span();
        span.record("trace_id", tracing::field::display(trace_id));
        return work;
    }
    let span = traced();
    match remote {
        Some(remote) => {
            let _ = span.set_parent(remote);
            record_ids(&span);
        }
        // The root starts here, with the trace id its sampling was decided on.
        None => sampling::with_trace_id(trace_id, || record_ids(&span)),
    }
    Work::traced(span)
}

/// Work done later because of an event or a message that carries `traceparent` (and
/// `tracestate`): in the span `make` gives, continuing that trace when it is sampled, with its
/// ids recorded ([`record_ids`]); as work of the unsampled trace when it is not. Without a
/// (valid) context, the span is a root that the sampler decides on.
pub fn follow(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    make: impl FnOnce() -> Span,
) -> Work {
    if !enabled() {
        return Work::traced(make());
    }
    let remote = traceparent
        .and_then(|parent| remote_context(parent, tracestate).map(|remote| (parent, remote)));
    match remote {
        Some((parent, remote)) if !remote.span().span_context().is_sampled() => {
            Work::unsampled(scope::Unsampled::given(parent, tracestate), make)
        }
        Some((_, remote)) => {
            let span = make();
            let _ = span.set_parent(remote);
            record_ids(&span);
            Work::traced(span)
        }
        None => {
            let span = make();
            record_ids(&span);
            Work::traced(span)
        }
    }
}

/// Records `span`'s trace and span ids in its fields `trace_id` and `span_id` (declared with
/// `tracing::field::Empty`), so that the log lines written inside it name the trace. This starts
/// the span's export.
fn record_ids(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
        span.record("span_id", tracing::field::display(span_context.span_id()));
    }
}

/// The spans of work done at once for events of several traces (a projection batch, a relay
/// batch): one span per distinct sampled trace among them (at most [`BatchSpans::MAX_TRACES`]),
/// each continuing its trace, all open while the work runs, so that every sampled request's trace
/// shows the batch that applied its events. The work runs in the first; the others end when this
/// is dropped. A batch of unsampled traces only is work of the first of them ([`Work`]), and a
/// batch whose events carry no trace context a root the sampler decides on.
#[derive(Debug)]
pub struct BatchSpans {
    work: Work,
    _others: Vec<Span>,
}

impl BatchSpans {
    /// More traces in one batch share the spans of the first ones.
    pub const MAX_TRACES: usize = 32;

    /// Spans made by `make` for the traces of `contexts` (traceparent and tracestate); none at
    /// all when spans are not exported.
    pub fn new<'a>(
        make: impl Fn() -> Span,
        contexts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> BatchSpans {
        if !enabled() {
            return BatchSpans {
                work: Work::traced(Span::none()),
                _others: Vec::new(),
            };
        }
        let mut spans = Vec::new();
        let mut seen: Vec<opentelemetry::trace::TraceId> = Vec::new();
        let mut unsampled = None;
        for (traceparent, tracestate) in contexts {
            if seen.len() >= BatchSpans::MAX_TRACES {
                break;
            }
            let Some(context) = remote_context(traceparent, tracestate) else {
                continue;
            };
            let span_context = context.span().span_context().clone();
            if !span_context.is_sampled() {
                unsampled.get_or_insert((traceparent, tracestate));
                continue;
            }
            if seen.contains(&span_context.trace_id()) {
                continue;
            }
            seen.push(span_context.trace_id());
            let span = make();
            let _ = span.set_parent(context);
            spans.push(span);
        }
        let mut spans = spans.into_iter();
        let work = match (spans.next(), unsampled) {
            (Some(first), _) => Work::traced(first),
            (None, Some((traceparent, tracestate))) => {
                Work::unsampled(scope::Unsampled::given(traceparent, tracestate), make)
            }
            (None, None) => Work::traced(make()),
        };
        BatchSpans {
            work,
            _others: spans.collect(),
        }
    }

    /// `future`, run as the batch's work (in its first span).
    pub fn run<F: std::future::Future>(&self, future: F) -> Traced<F> {
        self.work.run(future)
    }
}

#[cfg(test)]
mod tests {
    use super::remote_context;

    /// A root sampled by `begin`'s decision is the root the SDK starts, with the trace id the
    /// decision was made on: with a ratio sampler, every root `begin` samples is sampled by the
    /// SDK too (with another trace id, about half of them would not be).
    #[test]
    fn a_root_is_started_with_the_trace_id_its_sampling_was_decided_on() {
        use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
        use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        let sampler = Sampler::TraceIdRatioBased(0.5);
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler.clone())
            .with_id_generator(super::sampling::HeadIds::default())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        super::sampling::install(Some(sampler));
        super::ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
        let sampled = tracing::subscriber::with_default(subscriber, || {
            let mut sampled = 0;
            for _ in 0..200 {
                let work = super::begin(
                    None,
                    None,
                    || {
                        tracing::info_span!(
                            "request",
                            trace_id = tracing::field::Empty,
                            span_id = tracing::field::Empty
                        )
                    },
                    || tracing::info_span!("request"),
                );
                if work.sampled() {
                    sampled += 1;
                    let context = work.span().context();
                    assert!(context.span().span_context().is_sampled());
                }
            }
            sampled
        });
        super::ENABLED.store(false, std::sync::atomic::Ordering::Relaxed);
        super::sampling::install(None);
        assert!(
            (50..=150).contains(&sampled),
            "{sampled} of 200 sampled at 0.5"
        );
    }

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
