//! `mercato`: one binary for every role of the platform and for operators and auditors. This
//! crate is the command line only: each subcommand is a module with its arguments and its
//! `run`, calling the libraries (`server` opens what the configuration names). Here the
//! arguments are parsed, logging is set up and errors become exit codes: 0 success, 1 a failure
//! at run time, 2 bad usage (by the error's type, [`server::Error::is_usage`]).

mod api_keys;
mod audit;
mod config;
mod dlq;
mod events;
mod generate;
mod migrate;
mod notifications;
mod output;
mod projections;
mod replay;
mod saga;
mod seed;
mod serve;
mod signing_keys;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use server::{Config, Error, Result, Secret, Settings};

/// jemalloc instead of the system allocator: the server allocates many short-lived buffers (rows,
/// JSON, events, search segments) from many threads, where glibc's allocator spent a fifth of the
/// CPU time of a checkout load and held the peak memory high. `.cargo/config.toml` builds it to
/// hand freed memory back at once (`dirty_decay_ms:0,muzzy_decay_ms:0`; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An event-sourced commerce backend: commands in, events kept, read models out.
#[derive(Debug, Parser)]
#[command(
    name = "mercato",
    version,
    about = "An event-sourced commerce backend: commands in, every change kept as an event, read models out",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Configuration file (TOML) with any of the keys below in snake_case.
    #[arg(long, global = true, env = "MERCATO_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Alias of OPENSEARCH_URL
    #[arg(
        long,
        global = true,
        env = "ELASTICSEARCH_URL",
        hide = true,
        hide_env_values = true
    )]
    elasticsearch_url: Option<Secret>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (every role by default, embedded unless configured otherwise)
    Serve(serve::Args),
    /// Load sample products through the normal command path
    Seed(seed::Args),
    /// Rebuild read models from the event store
    Replay(replay::Args),
    /// List every projection with its checkpoint, lag and state; `retry NAME` runs a parked one
    /// again
    Projections(projections::Args),
    /// Fill the store with a realistic synthetic shop history (for benchmarks and trials)
    Generate(generate::Args),
    /// Read the event history: one stream, the global log, or everything one request caused
    #[command(subcommand)]
    Events(events::Command),
    /// Check the history for tampering and see an aggregate as it stood at a moment
    #[command(subcommand)]
    Audit(audit::Command),
    /// See and restart checkout sagas
    #[command(subcommand)]
    Saga(saga::Command),
    /// The notification outbox: list messages, send parked ones again, resend one
    #[command(subcommand)]
    Notifications(notifications::Command),
    /// See and replay the messages Kafka consumers could not process (needs KAFKA_BOOTSTRAP)
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Apply database migrations (serve also does this on start)
    Migrate,
    /// Staff, auditor and admin accounts (the password is read from standard input)
    #[command(subcommand)]
    Users(users::Command),
    /// API keys for services: create, list, revoke
    #[command(subcommand, name = "api-keys")]
    ApiKeys(api_keys::Command),
    /// The keys that sign access tokens: list, rotate
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(signing_keys::Command),
    /// Print the configuration this process would run with (flags, environment, file, defaults)
    Config(serve::Flags),
}

impl Cli {
    /// The configuration: the flags and environment (with `serve`'s own, when given) over the
    /// config file over the defaults.
    fn config(&self, serve: Option<&serve::Flags>) -> Result<Config> {
        let mut flags = self.settings.clone();
        flags.opensearch_url = flags.opensearch_url.or(self.elasticsearch_url.clone());
        if let Some(serve) = serve {
            serve.apply(&mut flags);
        }
        Config::resolve(flags, self.config.as_deref())
            .map_err(|error| Error::Usage(error.to_string()))
    }
}

/// Runs `future` on a multi-threaded runtime.
fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        // Blocking work is search queries and index commits: a few threads serve them, and each
        // extra thread would keep its own malloc arena (resident memory) after a burst.
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|error| Error::runtime("cannot start the async runtime", error))?
        .block_on(future)
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let config = cli.config(Some(&args.flags))?;
            block_on(async move {
                // The exporter's connections live on this runtime: made, and flushed, on it.
                let export = output::start_export(&config)?;
                output::init_logging(config.log_format, export.as_ref());
                let served = serve::run(config).await;
                if let Some(export) = export {
                    export.shutdown().await;
                }
                served
            })
        }
        Command::Config(flags) => config::run(&cli.config(Some(flags))?),
        Command::Seed(args) => block_on(seed::run(cli.config(None)?, args)),
        Command::Replay(args) => block_on(replay::run(cli.config(None)?, args)),
        Command::Projections(args) => block_on(projections::run(cli.config(None)?, args)),
        Command::Generate(args) => block_on(generate::run(cli.config(None)?, args)),
        Command::Events(command) => block_on(events::run(cli.config(None)?, command)),
        Command::Audit(command) => block_on(audit::run(cli.config(None)?, command)),
        Command::Saga(command) => block_on(saga::run(cli.config(None)?, command)),
        Command::Dlq(command) => block_on(dlq::run(cli.config(None)?, command)),
        Command::Notifications(command) => block_on(notifications::run(cli.config(None)?, command)),
        Command::Migrate => block_on(migrate::run(cli.config(None)?)),
        Command::Users(command) => block_on(users::run(cli.config(None)?, command)),
        Command::ApiKeys(command) => block_on(api_keys::run(cli.config(None)?, command)),
        Command::SigningKeys(command) => block_on(signing_keys::run(cli.config(None)?, command)),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = error.print();
                return ExitCode::from(2);
            }
            let rendered = error.render().to_string();
            let what = rendered.split("\n\n").next().unwrap_or("bad usage");
            let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
            output::print_error(&format!("{what}; run `mercato --help` for usage"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&output::describe_chain(&error));
            ExitCode::from(if error.is_usage() { 2 } else { 1 })
        }
    }
}
