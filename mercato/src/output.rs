//! What the command line writes besides a subcommand's output: log lines and errors, on stderr.

/// The log filter without `RUST_LOG`: `info`, Tantivy's own lines from `warn`, and none of the
/// warnings of Tantivy's segment manager. Those say that a background merge finished after a
/// commit had dropped one of its segments because every document in it was deleted (the search
/// projection replaces a product's document on each change, so small segments empty quickly):
/// Tantivy then discards the merge's output, which held only deleted documents, and says so in
/// two warnings ("couldn't find segment in SegmentManager"). Nothing is lost and nobody has
/// anything to do. A merge that fails for a real reason is still logged, by the segment updater.
pub const DEFAULT_FILTER: &str = "info,tantivy=warn,tantivy::indexer::segment_manager=error";

/// Logs go to stderr: human-readable lines, or one JSON object per line (`--log-format json`).
/// `RUST_LOG` filters them (default [`DEFAULT_FILTER`]).
pub fn init_logging(format: server::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        server::config::LogFormat::Text => builder.try_init(),
        server::config::LogFormat::Json => builder.json().try_init(),
    };
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
