//! Putting a rebuilt index in service: the record of the index in service, and the swap that
//! moves it, the popularity, the checkpoints and the alias together.

use super::{OpenSearchIndex, storage};
use crate::ProjectionError;
use crate::readdb::ReadDb;
use crate::rebuild::shadow::{Swap, swap_tables_with};

/// The tables of the read-model database that a rebuilt index brings with it and that are swapped
/// in with it, in the order the projection's batches lock them.
pub const REBUILT_TABLES: &[&str] = &["rm_search_index", "rm_search_popularity"];

/// The concrete index `db` records as the one of `alias` in service, if any.
pub async fn index_in_service(db: &ReadDb, alias: &str) -> Result<Option<String>, ProjectionError> {
    let row = sqlx::query("SELECT index_name FROM rm_search_index WHERE alias = $1")
        .bind(alias)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(row) => Some(sqlx::Row::try_get(&row, 0)?),
        None => None,
    })
}

/// Records `index` as the concrete index of `alias` in `db`: in a replay's shadow, the rebuilt
/// index, which the swap then puts in the read-model database together with the alias.
pub async fn record_in_service(
    db: &ReadDb,
    alias: &str,
    index: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO rm_search_index (alias, index_name, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (alias) DO UPDATE SET index_name = excluded.index_name,
             updated_at = excluded.updated_at",
    )
    .bind(alias)
    .bind(index)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Puts the rebuilt index `rebuilt` in service: in one transaction of the live read-model database
/// `live` (at `live_url`), unless a live checkpoint of the search projection is beyond
/// `checkpoint` ([`Swap::Behind`]), replaces [`REBUILT_TABLES`] with the shadow's rows (the record
/// names `rebuilt`, the popularity is the rebuild's), sets every live checkpoint to `checkpoint`,
/// and moves `index`'s alias to `rebuilt` before committing. If the swap does not end in a commit
/// after the alias moved, the alias is moved back, unless the database records `rebuilt` after
/// all; when that record cannot be read, the error says so and nothing is undone. Answers the
/// outcome and, once swapped, the index the alias left (for the caller to delete).
pub async fn swap_in_rebuilt(
    index: &OpenSearchIndex,
    live: &ReadDb,
    live_url: &str,
    shadow: &ReadDb,
    rebuilt: &str,
    checkpoint: u64,
) -> Result<(Swap, Option<String>), ProjectionError> {
    let mut left = None;
    let swapped = swap_tables_with(
        live,
        live_url,
        shadow,
        OpenSearchIndex::NAME,
        REBUILT_TABLES,
        checkpoint,
        || async {
            left = index.swap_alias(rebuilt).await?;
            Ok(())
        },
    )
    .await;
    let (Some(old), false) = (&left, matches!(swapped, Ok(Swap::Swapped))) else {
        return swapped.map(|swap| (swap, left));
    };
    // The alias moved and the swap did not end in its commit (or the commit failed): what the
    // read-model database records says whether the transaction landed.
    let alias = index.alias();
    let failure = |what: String| match &swapped {
        Err(error) => storage(format!("{error}; {what}")),
        Ok(_) => storage(what),
    };
    match index_in_service(live, alias).await {
        // It committed after all: the alias stays on the rebuilt index.
        Ok(recorded) if recorded.as_deref() == Some(rebuilt) => {
            swapped.map(|swap| (swap, left.clone()))
        }
        Ok(_) => {
            // Not committed: serve the old index again.
            if let Err(undo) = index.swap_alias(old).await {
                return Err(failure(format!(
                    "the alias {alias} was moved to {rebuilt} but the read-model database was \
                     not, and moving it back to {old} failed too ({undo}): move it back with \
                     POST /_aliases, then run the replay again"
                )));
            }
            swapped.map(|swap| (swap, None))
        }
        Err(lookup) => Err(failure(format!(
            "the alias {alias} was moved to {rebuilt}, and whether the read-model database \
             records that could not be read ({lookup}): point the alias at the index \
             `rm_search_index` names"
        ))),
    }
}
