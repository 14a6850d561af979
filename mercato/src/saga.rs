//! `mercato saga status|retry`: how many checkout sagas are in each state, and running parked
//! ones again.

use server::{Config, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// How many checkout sagas are running, done and failed (parked)
    Status,
    /// Run parked sagas again once their cause is fixed: one order's, or all of them
    Retry {
        #[arg(value_name = "ORDER_ID")]
        order_id: Option<uuid::Uuid>,
    },
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    server::require_store(&config).await?;
    let db = server::open_read_db(&config).await?;
    let failure = |error: sagas::SagaError| {
        Error::runtime(
            format!(
                "cannot read the saga tables of {} (check DATABASE_URL)",
                config.database_url.redacted()
            ),
            error,
        )
    };
    match command {
        Command::Status => {
            let counts = sagas::state::count_by_state(&db).await.map_err(failure)?;
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
        Command::Retry { order_id } => {
            let restarted = sagas::state::retry_failed(&db, *order_id)
                .await
                .map_err(failure)?;
            println!("{restarted} parked saga(s) will run again");
        }
    }
    Ok(())
}
