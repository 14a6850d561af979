//! What the command line writes besides a subcommand's output: log lines and errors, on stderr.

/// Logs go to stderr: human-readable lines, or one JSON object per line (`--log-format json`).
/// `RUST_LOG` filters them (default `info`).
pub fn init_logging(format: server::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn"));
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
