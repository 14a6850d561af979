//! Head sampling: whether a trace is sampled is decided where it starts, before any span of it is
//! made, with the sampler the SDK would use (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
//! An unsampled request then makes no exported span at all ([`crate::Work`]).

use std::cell::Cell;
use std::sync::RwLock;

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};

use crate::export::ExportError;

/// The sampler of the running export, for decisions made before a span exists.
static SAMPLER: RwLock<Option<Sampler>> = RwLock::new(None);

thread_local! {
    /// The trace id decided for the root span about to start on this thread ([`HeadIds`]).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The sampler the standard variables name, as the OpenTelemetry specification lists them
/// (parent-based, always on, when unset). Unlike the SDK, which falls back to always on, an
/// unknown name or a ratio outside 0 to 1 is an error: a typo must not export every trace.
pub fn sampler_from(name: Option<&str>, argument: Option<&str>) -> Result<Sampler, ExportError> {
    let ratio = || -> Result<f64, ExportError> {
        match argument.map(str::trim) {
            None | Some("") => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| ExportError::SamplerArgument(text.to_owned())),
        }
    };
    Ok(match name.map(str::trim).unwrap_or("") {
        "" | "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        other => return Err(ExportError::Sampler(other.to_owned())),
    })
}

/// Makes `sampler` the one head decisions use (the export's).
pub(crate) fn install(sampler: Option<Sampler>) {
    *SAMPLER
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = sampler;
}

/// Whether a span of `trace_id` (a new root, or the child of `parent`) is sampled.
pub(crate) fn sampled(parent: Option<&opentelemetry::Context>, trace_id: TraceId) -> bool {
    let sampler = SAMPLER
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(sampler) = sampler.as_ref() else {
        return false;
    };
    let result = sampler.should_sample(parent, trace_id, "request", &SpanKind::Server, &[], &[]);
    result.decision != SamplingDecision::Drop
}

/// A new random trace id.
pub(crate) fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}

/// A new random span id.
pub(crate) fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// Runs `start` (which starts a root span) with the SDK taking `trace_id` as that span's trace
/// id, the one its sampling was decided on.
pub(crate) fn with_trace_id<R>(trace_id: TraceId, start: impl FnOnce() -> R) -> R {
    NEXT_TRACE_ID.with(|next| next.set(Some(trace_id)));
    let started = start();
    NEXT_TRACE_ID.with(|next| next.set(None));
    started
}

/// The export's id generator: random ids, except for a root whose trace id was decided first
/// ([`with_trace_id`]).
#[derive(Debug, Default)]
pub(crate) struct HeadIds(RandomIdGenerator);

impl IdGenerator for HeadIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

#[cfg(test)]
mod tests {
    use super::sampler_from;
    use opentelemetry_sdk::trace::Sampler;

    #[test]
    fn the_standard_names_give_their_samplers_and_a_typo_is_an_error() {
        let parent_based = |sampler: Sampler| Sampler::ParentBased(Box::new(sampler));
        let cases = [
            (None, None, parent_based(Sampler::AlwaysOn)),
            (Some("always_on"), None, Sampler::AlwaysOn),
            (Some("always_off"), None, Sampler::AlwaysOff),
            (
                Some("traceidratio"),
                Some("0.25"),
                Sampler::TraceIdRatioBased(0.25),
            ),
            (Some("traceidratio"), None, Sampler::TraceIdRatioBased(1.0)),
            (
                Some("parentbased_traceidratio"),
                Some("0.1"),
                parent_based(Sampler::TraceIdRatioBased(0.1)),
            ),
            (
                Some("parentbased_always_off"),
                None,
                parent_based(Sampler::AlwaysOff),
            ),
        ];
        for (name, argument, expected) in cases {
            let sampler = sampler_from(name, argument).expect("valid");
            assert_eq!(format!("{sampler:?}"), format!("{expected:?}"), "{name:?}");
        }
        let error = sampler_from(Some("parentbased_traceidration"), None).expect_err("typo");
        assert!(
            error.to_string().contains("parentbased_traceidratio"),
            "{error}"
        );
        let error = sampler_from(Some("traceidratio"), Some("10%")).expect_err("not a ratio");
        assert!(error.to_string().contains("between 0 and 1"), "{error}");
        sampler_from(Some("traceidratio"), Some("1.5")).expect_err("above 1");
    }
}
