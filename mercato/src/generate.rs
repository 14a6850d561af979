//! `mercato generate`: a realistic synthetic shop history, appended straight to the store (the
//! `generator` crate).

use std::sync::Arc;

use generator::{GenerateError, GenerateOptions, Observer, Stats};
use server::{Config, Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many events to write (about: the last session is finished, so every order ends)
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    events: u64,
    /// Seed of the random history: the same seed on an empty store writes the same events
    #[arg(long, default_value_t = 1, value_name = "S")]
    seed: u64,
    /// Products in the catalogue [default: events / 500, between 10 and 5,000]
    #[arg(long, value_name = "P")]
    products: Option<u32>,
    /// Add to a store that already holds events (new products, carts and orders only)
    #[arg(long)]
    append: bool,
    /// Events per atomic append
    #[arg(long, default_value_t = 5_000, value_name = "EVENTS")]
    batch: usize,
}

pub async fn run(config: Config, args: &Args) -> Result<()> {
    let options = GenerateOptions {
        events: args.events,
        seed: args.seed,
        products: args.products,
        append: args.append,
        batch: args.batch,
        payment_timeout: config.payment_timeout(),
    };
    let failure = |error: GenerateError| match error {
        GenerateError::Usage(message) => Error::Usage(message),
        other => Error::runtime("cannot generate the history", other),
    };
    options.check().map_err(failure)?;
    let target = config.database_url.redacted();
    let store = server::open_store(&config).await?;
    let generated = generator::generate(
        store,
        &target,
        &options,
        Arc::new(Progress {
            target: target.clone(),
        }),
    )
    .await
    .map_err(failure)?;
    print_summary(
        &generated.stats,
        &target,
        generated.seconds,
        generated.write_seconds,
    );
    Ok(())
}

/// Progress lines on stderr.
struct Progress {
    target: String,
}

impl Observer for Progress {
    fn started(&self, options: &GenerateOptions, n_products: u32) {
        eprintln!(
            "generating about {} events ({n_products} products, seed {}) into {}",
            options.events, options.seed, self.target
        );
    }

    fn written(&self, written: u64, seconds: f64) {
        eprintln!(
            "generate: {written} events written in {seconds:.1} s ({:.0} events/s)",
            written as f64 / seconds
        );
    }
}

fn print_summary(stats: &Stats, target: &str, seconds: f64, write_seconds: f64) {
    let rate = stats.events as f64 / write_seconds.max(f64::EPSILON);
    println!(
        "generated {} events in {seconds:.2} s ({rate:.0} events/s) into {target}",
        stats.events
    );
    let streams: Vec<String> = stats
        .streams
        .iter()
        .map(|(stream_type, n)| format!("{stream_type} {n}"))
        .collect();
    println!("streams: {}", streams.join(", "));
    let types: Vec<String> = stats
        .event_types
        .iter()
        .map(|(event_type, n)| format!("{event_type} {n}"))
        .collect();
    println!("events: {}", types.join(", "));
    let cancelled: u64 = stats.orders_cancelled.values().sum();
    let reasons: Vec<String> = stats
        .orders_cancelled
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    println!(
        "sessions: {}; orders: {} confirmed, {cancelled} cancelled ({})",
        stats.sessions,
        stats.orders_confirmed,
        reasons.join(", ")
    );
}
