//! `mercato projections`: every projection with its checkpoint, lag and state.

use std::io::Write;

use projections::rebuild::status::LAG_COUNT_LIMIT;
use server::{Access, Config, Platform, Result};

use crate::replay::rebuild_failure;

pub async fn run(config: Config) -> Result<()> {
    let platform = Platform::open_existing(&config, Access::Reader).await?;
    let (statuses, head) = projections::rebuild::status(
        platform.store.as_ref(),
        &platform.read_models,
        // The checkout saga's intake, which starts a saga for every order placed.
        &[sagas::state::SagaIntake::NAME],
    )
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
