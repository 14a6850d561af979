//! Work of an unsampled trace. No span of it is exported, so none is made for the export: while
//! such work runs (its future is polled, or its closure called) this thread carries its trace
//! context, the export's filter refuses every span and event, and what the work appends carries
//! that context, its sampled flag off, so that the work it causes is not sampled either.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::Span;
use tracing::instrument::Instrumented;

use crate::TraceContext;

/// The trace context of unsampled work.
#[derive(Debug)]
pub(crate) enum Unsampled {
    /// One given (an event's, a message's): passed on as it is.
    Given(TraceContext),
    /// A request's, starting or continuing a trace: written out only when something asks for it
    /// (most requests append nothing).
    Made {
        trace_id: opentelemetry::trace::TraceId,
        span_id: opentelemetry::trace::SpanId,
        tracestate: Option<String>,
    },
}

impl Unsampled {
    /// The context given as `traceparent` (valid, its sampled flag off) and `tracestate`.
    pub(crate) fn given(traceparent: &str, tracestate: Option<&str>) -> Unsampled {
        Unsampled::Given(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.map(str::to_owned),
        })
    }

    fn context(&self) -> TraceContext {
        match self {
            Unsampled::Given(context) => context.clone(),
            Unsampled::Made {
                trace_id,
                span_id,
                tracestate,
            } => TraceContext {
                traceparent: format!("00-{trace_id}-{span_id}-00"),
                tracestate: tracestate.clone(),
            },
        }
    }
}

thread_local! {
    /// The unsampled trace whose work runs on this thread now, if any.
    static UNSAMPLED: RefCell<Option<Arc<Unsampled>>> = const { RefCell::new(None) };
}

/// Whether the work running on this thread belongs to an unsampled trace.
pub(crate) fn unsampled_now() -> bool {
    UNSAMPLED.with(|unsampled| unsampled.borrow().is_some())
}

/// The export's filter: refuses every span and event of unsampled work, and of sampled work the
/// events below a warning (log lines are not spans; a warning or an error marks the span it
/// happened in). Decided per span, never cached per callsite (as `filter_fn` would cache its
/// first answer): the same span is taken in a sampled request and refused in an unsampled one.
pub(crate) fn sampled_only<S>() -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber,
{
    tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
        (metadata.is_span() || *metadata.level() <= tracing::Level::WARN) && !unsampled_now()
    })
}

/// The trace context of the unsampled work running on this thread.
pub(crate) fn unsampled_context() -> Option<TraceContext> {
    UNSAMPLED.with(|unsampled| unsampled.borrow().as_deref().map(Unsampled::context))
}

/// Runs `run` as work of the unsampled trace `context`.
pub(crate) fn as_unsampled<R>(context: &Arc<Unsampled>, run: impl FnOnce() -> R) -> R {
    let before = UNSAMPLED.with(|unsampled| unsampled.replace(Some(context.clone())));
    let _restore = Restore(before);
    run()
}

/// Puts back the unsampled trace that ran before, also when the work panics.
struct Restore(Option<Arc<Unsampled>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let before = self.0.take();
        UNSAMPLED.with(|unsampled| *unsampled.borrow_mut() = before);
    }
}

/// A piece of work and how it is traced: in its span, which continues a sampled trace (or starts
/// one), or as work of an unsampled trace, in a span the export never sees.
#[derive(Clone, Debug)]
pub struct Work {
    span: Span,
    unsampled: Option<Arc<Unsampled>>,
}

impl Work {
    pub(crate) fn traced(span: Span) -> Work {
        Work {
            span,
            unsampled: None,
        }
    }

    /// Work of the unsampled trace `context`, in the span `make` gives (made as such work, so
    /// that the export does not take it).
    pub(crate) fn unsampled(context: Unsampled, make: impl FnOnce() -> Span) -> Work {
        let context = Arc::new(context);
        let span = as_unsampled(&context, make);
        Work {
            span,
            unsampled: Some(context),
        }
    }

    /// The work's span (for its log lines, and the fields recorded on it).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Whether the work belongs to a sampled trace (its spans are exported).
    pub fn sampled(&self) -> bool {
        self.unsampled.is_none()
    }

    /// `future`, run as this work: in its span, and as work of its trace.
    pub fn run<F: Future>(&self, future: F) -> Traced<F> {
        Traced {
            inner: tracing::Instrument::instrument(future, self.span.clone()),
            unsampled: self.unsampled.clone(),
        }
    }

    /// `run`, called as this work.
    pub fn in_scope<R>(&self, run: impl FnOnce() -> R) -> R {
        match &self.unsampled {
            Some(context) => as_unsampled(context, || self.span.in_scope(run)),
            None => self.span.in_scope(run),
        }
    }
}

pin_project_lite::pin_project! {
    /// A future run as a piece of [`Work`] ([`Work::run`]).
    pub struct Traced<F> {
        #[pin]
        inner: Instrumented<F>,
        unsampled: Option<Arc<Unsampled>>,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.unsampled {
            Some(context) => as_unsampled(context, || this.inner.poll(cx)),
            None => this.inner.poll(cx),
        }
    }
}

impl<F> std::fmt::Debug for Traced<F> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Traced")
            .field("sampled", &self.unsampled.is_none())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Counts the spans it is given.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn unsampled_work_makes_no_span_for_the_export_and_sampled_work_still_does() {
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber =
            tracing_subscriber::registry().with(Count(seen.clone()).with_filter(sampled_only()));
        tracing::subscriber::with_default(subscriber, || {
            let make = || tracing::info_span!("work");
            let unsampled = Arc::new(Unsampled::Given(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".to_owned(),
                tracestate: None,
            }));
            // The same callsite, first in unsampled work (where it is registered), then in
            // sampled work, then unsampled again.
            let _first = as_unsampled(&unsampled, make);
            assert_eq!(seen.load(Ordering::SeqCst), 0);
            let _second = make();
            assert_eq!(
                seen.load(Ordering::SeqCst),
                1,
                "a span of sampled work is taken"
            );
            let _third = as_unsampled(&unsampled, make);
            assert_eq!(seen.load(Ordering::SeqCst), 1);
            assert!(!unsampled_now(), "the scope ends with its work");
        });
    }
}
