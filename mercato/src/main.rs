//! `mercato`: one binary for every role of the platform and for operators and auditors.

mod audit;
mod config;
mod generate;
mod history;
mod kafka;
mod openapi;
mod replay;
mod seed;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{CommonArgs, Config, Role, Secret};

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
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (every role by default, embedded unless configured otherwise)
    Serve(ServeArgs),
    /// Load sample products through the normal command path
    Seed(SeedArgs),
    /// Rebuild read models from the event store
    Replay(ReplayArgs),
    /// List every projection with its checkpoint, lag and state
    Projections,
    /// Fill the store with a realistic synthetic shop history (for benchmarks and trials)
    Generate(generate::GenerateArgs),
    /// Read the event history: one stream, the global log, or everything one request caused
    #[command(subcommand)]
    Events(EventsCommand),
    /// Check the history for tampering and see an aggregate as it stood at a moment
    #[command(subcommand)]
    Audit(AuditCommand),
    /// See and restart checkout sagas
    #[command(subcommand)]
    Saga(SagaCommand),
    /// See and replay the messages Kafka consumers could not process (needs KAFKA_BOOTSTRAP)
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Apply database migrations (serve also does this on start)
    Migrate,
    /// Print the configuration this process would run with (flags, environment, file, defaults)
    Config(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "MERCATO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Which part to run, for scale-out [default: all]
    #[arg(long, env = "MERCATO_ROLE", value_enum)]
    role: Option<Role>,
    /// Alias of OPENSEARCH_URL
    #[arg(long, env = "ELASTICSEARCH_URL", hide = true, hide_env_values = true)]
    elasticsearch_url: Option<Secret>,
}

impl ServeArgs {
    /// The configuration of `serve` (and `config`) with these flags over `common`.
    fn resolve(self, common: &CommonArgs) -> Result<Config, config::ConfigError> {
        Config::resolve(common, self.listen, self.role, self.elasticsearch_url)
    }
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// A JSON file of products [default: the shipped sample catalogue]
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "target")]
struct ReplayTarget {
    /// The read model to rebuild
    #[arg(long, value_name = "NAME", group = "target")]
    projection: Option<String>,
    /// Rebuild every read model
    #[arg(long, group = "target")]
    all: bool,
    /// Drop every unfinished rebuild (what an interrupted replay built) and stop
    #[arg(long, group = "target")]
    discard: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    target: ReplayTarget,
    /// Rebuild from the events after this global position only (the rebuilt read model starts
    /// empty there) [default: 0, the whole log]
    #[arg(long, value_name = "POSITION")]
    from: Option<u64>,
    /// Start over instead of resuming an interrupted rebuild of the same read models
    #[arg(long)]
    restart: bool,
}

/// How `mercato events` prints events: one line per event in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// Aligned columns with a header: position, time, TYPE/ID@version, event type, correlation id
    Table,
    /// The envelope as `GET /events` returns it, one JSON object per line
    Json,
    /// CloudEvents 1.0 in structured JSON mode, one event per line; mercato's metadata are
    /// extension attributes (position, streamtype, streamid, streamversion, schemaversion,
    /// correlationid, causationid, sagaid, actor), all strings
    Cloudevents,
}

#[derive(Debug, Subcommand)]
enum SagaCommand {
    /// How many checkout sagas are running, done and failed (parked)
    Status,
    /// Run parked sagas again once their cause is fixed: one order's, or all of them
    Retry {
        #[arg(value_name = "ORDER_ID")]
        order_id: Option<uuid::Uuid>,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Print every dead letter: where it came from, why and how often it failed
    List {
        /// One topic's dead letters (`orders.events` or `orders.events.dlq`) [default: all]
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Send the dead letters not replayed yet back to their topics, once their cause is fixed:
    /// the consumers that failed them apply them again
    Replay {
        /// One topic's dead letters [default: all]
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// One stream's history in version order, e.g. `order/0b9f...`. A stream without events is an
    /// error (exit 1): the type or id is wrong, or nothing was written to it yet
    Stream {
        /// The stream: its type (product, cart, order, payment, product_views), a slash, its id
        #[arg(value_name = "TYPE/ID")]
        stream: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// The global log in position order; an empty log prints nothing and exits 0
    Tail {
        /// Start at this global position (included) [default: the beginning]
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
        /// Keep following new events until interrupted (Ctrl-C ends it with exit 0)
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all, or forever with --follow]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Everything one request or one saga caused, across streams, in position order. An id with
    /// no events is an error (exit 1)
    Correlated {
        /// The correlation id (the `X-Correlation-Id` of the request)
        #[arg(value_name = "CORRELATION_ID")]
        correlation_id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// An aggregate as it stood at a time or position
    State {
        #[arg(value_name = "TYPE/ID")]
        stream: String,
        /// RFC 3339 time or a global position
        #[arg(long, value_name = "TIME|POSITION")]
        at: String,
    },
    /// Recompute the hash chains; exit 1 naming the first event that does not match
    Verify {
        #[arg(long, value_name = "TYPE/ID")]
        stream: Option<String>,
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Print the current head hash, for an auditor to record outside the system
    Head,
}

/// FNV-1a of `text`: the same in every process and build, unlike the standard library's hasher
/// (Redis key prefixes, Kafka partitions).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How a run failed: at run time (exit 1), or bad usage or a part that is not available (exit 2).
#[derive(Debug)]
enum Failure {
    Runtime(anyhow::Error),
    Usage(String),
}

impl From<eventstore::StoreError> for Failure {
    fn from(error: eventstore::StoreError) -> Self {
        match error {
            eventstore::StoreError::UnsupportedUrl { .. }
            | eventstore::StoreError::InvalidUrl(_) => Failure::Usage(error.to_string()),
            other => Failure::Runtime(other.into()),
        }
    }
}

impl Failure {
    /// Adds what was being done to a runtime failure; usage errors already say what to fix.
    fn context(self, what: String) -> Failure {
        match self {
            Failure::Runtime(error) => Failure::Runtime(error.context(what)),
            usage => usage,
        }
    }
}

/// Runs `future` on a multi-threaded runtime.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        // Blocking work is search queries and index commits: a few threads serve them, and each
        // extra thread would keep its own malloc arena (resident memory) after a burst.
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|error| {
            Failure::Runtime(anyhow::Error::new(error).context("cannot start the async runtime"))
        })?
        .block_on(future)
}

impl From<config::ConfigError> for Failure {
    fn from(error: config::ConfigError) -> Self {
        Failure::Usage(error.to_string())
    }
}

async fn saga_command(config: &Config, command: SagaCommand) -> Result<(), Failure> {
    let failure = |error: anyhow::Error| {
        Failure::Runtime(error.context(format!(
            "cannot read the saga tables of {} (check DATABASE_URL)",
            config.database_url.redacted()
        )))
    };
    let db = projections::readdb::ReadDb::open(&projections::readdb::read_db_url(
        config.database_url.expose(),
    ))
    .await
    .map_err(|error| failure(error.into()))?;
    sagas::state::ensure_schema(&db)
        .await
        .map_err(|error| failure(error.into()))?;
    match command {
        SagaCommand::Status => {
            let counts = sagas::state::count_by_state(&db)
                .await
                .map_err(|error| failure(error.into()))?;
            for state in [
                sagas::state::RUNNING,
                sagas::state::DONE,
                sagas::state::FAILED,
            ] {
                let count = counts
                    .iter()
                    .find(|(name, _)| name == state)
                    .map_or(0, |(_, count)| *count);
                println!("{state}\t{count}");
            }
        }
        SagaCommand::Retry { order_id } => {
            let restarted = sagas::state::retry_failed(&db, order_id)
                .await
                .map_err(|error| failure(error.into()))?;
            println!("{restarted} parked saga(s) will run again");
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(serve) => {
            let config = serve.resolve(&cli.common)?;
            init_logging(config.log_format);
            block_on(serve::serve(config))
        }
        Command::Config(serve) => {
            let config = serve.resolve(&cli.common)?;
            print!("{}", config.describe());
            Ok(())
        }
        Command::Seed(args) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(seed::seed(&config, args.file.as_deref()))
        }
        Command::Saga(command) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(saga_command(&config, command))
        }
        Command::Dlq(command) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            let settings = config.kafka().ok_or_else(|| {
                Failure::Usage(
                    "KAFKA_BOOTSTRAP is not set: dead letters are on Kafka; set it (or --kafka-bootstrap) to the brokers".to_owned(),
                )
            })?;
            block_on(async move {
                let result = match command {
                    DlqCommand::List { topic, json } => {
                        kafka::dlq::list(&settings, topic.as_deref(), json)
                            .await
                            .map(|n| {
                                eprintln!("{n} dead letter(s)");
                            })
                    }
                    DlqCommand::Replay { topic } => kafka::dlq::replay(&settings, topic.as_deref())
                        .await
                        .map(|n| {
                            println!("{n} dead letter(s) replayed");
                        }),
                };
                result.map_err(|error| {
                    if error.starts_with("unknown topic") {
                        Failure::Usage(error)
                    } else {
                        Failure::Runtime(anyhow::anyhow!(error))
                    }
                })
            })
        }
        Command::Replay(args) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(replay::replay(&config, args))
        }
        Command::Projections => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(replay::list(&config))
        }
        Command::Events(command) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(history::events(&config, command))
        }
        Command::Audit(AuditCommand::State { stream, at }) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(history::state(&config, &stream, &at))
        }
        Command::Audit(command) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(audit::audit(&config, command))
        }
        Command::Generate(args) => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            block_on(generate::generate(&config, args))
        }
        Command::Migrate => {
            let config = Config::resolve(&cli.common, None, None, None)?;
            let target = config.database_url.redacted();
            block_on(async {
                eventstore::migrate(config.database_url.expose()).await.map_err(|error| {
                    Failure::from(error).context(format!(
                        "cannot apply migrations to {target} (check DATABASE_URL and that the database is running)"
                    ))
                })?;
                let read_models = async {
                    let db = projections::readdb::ReadDb::open(&projections::readdb::read_db_url(
                        config.database_url.expose(),
                    ))
                    .await?;
                    sagas::state::ensure_schema(&db).await?;
                    anyhow::Ok(())
                };
                read_models.await.map_err(|error| {
                    Failure::Runtime(
                        error.context(format!("cannot create the read-model tables for {target}")),
                    )
                })?;
                eprintln!("migrations applied to {target}");
                Ok(())
            })
        }
    }
}

/// Logs go to stderr: human-readable lines, or one JSON object per line (`--log-format json`).
/// `RUST_LOG` filters them (default `info`).
fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tantivy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
}

/// An error and its causes on one line, leaving out a cause its parent already quotes.
fn describe_chain(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    message
}

/// Errors go to stderr as one line that starts with `error:`.
fn print_error(message: &str) {
    let one_line = message.replace('\n', " ");
    eprintln!("error: {}", one_line.trim_start_matches("error: "));
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
            print_error(&format!("{what}; run `mercato --help` for usage"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            print_error(&message);
            ExitCode::from(2)
        }
        Err(Failure::Runtime(error)) => {
            print_error(&describe_chain(&error));
            ExitCode::from(1)
        }
    }
}
