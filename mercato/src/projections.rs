//! `mercato projections [retry NAME]`: every projection with its checkpoint, lag and state
//! (parked included); and running a parked one again once the cause is fixed.

use std::io::Write;

use projections::rebuild::status::LAG_COUNT_LIMIT;
use server::admin::{OTHER_PROJECTIONS as OTHERS, projection_names};
use server::{Access, Config, Error, Platform, Result};

use crate::replay::rebuild_failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Clear a projection's park once its cause is fixed: a running server applies the event
    /// it stopped at again within seconds, and goes on if it can
    Retry {
        /// The projection, as `mercato projections` names it
        #[arg(value_name = "NAME")]
        name: String,
    },
}

pub async fn run(config: Config, args: &Args) -> Result<()> {
    match &args.command {
        None => list(config).await,
        Some(Command::Retry { name }) => retry(config, name).await,
    }
}

async fn list(config: Config) -> Result<()> {
    let platform = Platform::open_existing(&config, Access::Reader).await?;
    let (statuses, head) =
        projections::rebuild::status(platform.store.as_ref(), &platform.read_models, OTHERS)
            .await
            .map_err(rebuild_failure)?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{:<14} {:>20} {:>10}  STATE",
        "PROJECTION", "CHECKPOINT", "LAG"
    );
    for status in &statuses {
        let lag = if status.lag >= LAG_COUNT_LIMIT {
            format!(">{}", LAG_COUNT_LIMIT - 1)
        } else {
            status.lag.to_string()
        };
        let _ = writeln!(
            stdout,
            "{:<14} {:>20} {lag:>10}  {}",
            status.name,
            status.checkpoint,
            status.state()
        );
    }
    let _ = writeln!(stdout, "head position: {head}");
    Ok(())
}

/// Clears projection `name`'s park (`projections::readdb::ReadDb::unpark`).
async fn retry(config: Config, name: &str) -> Result<()> {
    let known = projection_names();
    if !known.contains(&name) {
        return Err(Error::Usage(format!(
            "there is no projection named {name:?}; the projections are {}",
            known.join(", ")
        )));
    }
    server::require_store(&config).await?;
    let db = server::open_read_db(&config).await?;
    let cleared = db.unpark(name).await.map_err(|error| {
        Error::runtime(
            format!(
                "cannot clear the park of {name} in the read-model database of {}",
                config.database_url.redacted()
            ),
            error,
        )
    })?;
    match cleared {
        Some(park) => println!(
            "{name}: park cleared; a running server applies position {} ({} of {}) again within seconds, and parks again if it still cannot",
            park.position, park.event_type, park.stream
        ),
        None => println!("{name} is not parked: nothing to retry"),
    }
    Ok(())
}
