//! What the command line writes besides a subcommand's output: log lines and errors, on stderr.

use server::{Error, Result};

/// The log filter without `RUST_LOG`: `info`, Tantivy's own lines from `warn`, and none of the
/// warnings of Tantivy's segment manager. Those say that a background merge finished after a
/// commit had dropped one of its segments because every document in it was deleted (the search
/// projection replaces a product's document on each change, so small segments empty quickly):
/// Tantivy then discards the merge's output, which held only deleted documents, and says so in
/// two warnings ("couldn't find segment in SegmentManager"). Nothing is lost and nobody has
/// anything to do. A merge that fails for a real reason is still logged, by the segment updater.
pub const DEFAULT_FILTER: &str = "info,tantivy=warn,tantivy::indexer::segment_manager=error";

/// Logs go to stderr: human-readable lines, or one JSON object per line (`--log-format json`).
/// `RUST_LOG` filters them (default [`DEFAULT_FILTER`]). With `export`, spans are also exported
/// (filtered by the export, not by `RUST_LOG`), and the lines written inside a traced span carry
/// its `trace_id` and `span_id`.
pub fn init_logging(format: server::config::LogFormat, export: Option<&telemetry::Export>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match format {
        server::config::LogFormat::Text => lines.with_filter(filter).boxed(),
        server::config::LogFormat::Json => lines.json().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(export.map(telemetry::Export::layer))
        .try_init();
}

/// Starts exporting traces when `config` names an OTLP endpoint (inside the runtime).
pub fn start_export(config: &server::config::Config) -> Result<Option<telemetry::Export>> {
    let Some(endpoint) = config
        .otel_endpoint
        .as_deref()
        .filter(|url| !url.trim().is_empty())
    else {
        return Ok(None);
    };
    let protocol = telemetry::Protocol::parse(config.otel_protocol.as_deref().unwrap_or(""))
        .map_err(|error| Error::Usage(error.to_string()))?;
    let settings = telemetry::Settings {
        endpoint: endpoint.to_owned(),
        protocol,
        role: clap::ValueEnum::to_possible_value(&config.role)
            .map(|role| role.get_name().to_owned())
            .unwrap_or_default(),
    };
    telemetry::Export::start(&settings)
        .map(Some)
        .map_err(|error| Error::Usage(error.to_string()))
}

/// An error and its causes on one line, leaving out a cause its parent already quotes.
pub fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    message
}

/// Errors go to stderr as one line that starts with `error:`.
pub fn print_error(message: &str) {
    let one_line = message.replace('\n', " ");
    eprintln!("error: {}", one_line.trim_start_matches("error: "));
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// The default filter keeps Tantivy's warnings but not its segment manager's.
    #[test]
    fn the_default_filter_leaves_out_only_the_segment_managers_warnings() {
        let filter = tracing_subscriber::EnvFilter::new(super::DEFAULT_FILTER);
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::event_enabled!(target: "mercato", Level::INFO));
            assert!(!tracing::event_enabled!(target: "tantivy::indexer", Level::INFO));
            assert!(tracing::event_enabled!(
                target: "tantivy::indexer::segment_updater",
                Level::WARN
            ));
            assert!(!tracing::event_enabled!(
                target: "tantivy::indexer::segment_manager",
                Level::WARN
            ));
            assert!(tracing::event_enabled!(
                target: "tantivy::indexer::segment_manager",
                Level::ERROR
            ));
        });
    }
}
