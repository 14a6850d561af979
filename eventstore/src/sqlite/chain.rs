//! The audit hash chain on SQLite: raw chain rows, checkpoints, sealed stream heads, and the
//! hashes of rows stored before the chain existed.

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::rows::{format_timestamp, to_i64, to_u64};
use crate::audit::{self, ChainRow, Checkpoint, Hash, SealedHead, ZERO_HASH};
use crate::error::StoreError;

const CHAIN_COLUMNS: &str = "position, event_id, stream_type, stream_id, stream_version, \
    event_type, schema_version, occurred_at, correlation_id, causation_id, saga_id, actor, \
    source, payload, hash";

fn chain_row(row: &SqliteRow) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        position: to_u64(row.try_get_unchecked(0)?, "position")?,
        event_id: row.try_get_unchecked(1)?,
        stream_type: row.try_get_unchecked(2)?,
        stream_id: row.try_get_unchecked(3)?,
        stream_version: to_u64(row.try_get_unchecked(4)?, "stream_version")?,
        event_type: row.try_get_unchecked(5)?,
        schema_version: row.try_get_unchecked(6)?,
        occurred_at: row.try_get_unchecked(7)?,
        correlation_id: row.try_get_unchecked(8)?,
        causation_id: row.try_get_unchecked(9)?,
        saga_id: row.try_get_unchecked(10)?,
        actor: row.try_get_unchecked(11)?,
        source: row.try_get_unchecked(12)?,
        payload: row.try_get_unchecked(13)?,
        hash: row.try_get_unchecked(14)?,
    })
}

pub(crate) async fn read_stream_chain(
    pool: &SqlitePool,
    stream_type: &str,
    stream_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Vec<ChainRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let statement = format!(
        "SELECT {CHAIN_COLUMNS} FROM events WHERE stream_type = ? AND stream_id = ? \
         AND stream_version > ? ORDER BY stream_version LIMIT ?"
    );
    let rows = sqlx::query(&statement)
        .bind(stream_type)
        .bind(stream_id)
        .bind(to_i64(after_version))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    rows.iter().map(chain_row).collect()
}

fn to_hash(bytes: Vec<u8>, what: &str) -> Result<Hash, StoreError> {
    Hash::try_from(bytes.as_slice())
        .map_err(|_| StoreError::CorruptRow(format!("{what} hash is not 32 bytes")))
}

fn checkpoint(row: &SqliteRow) -> Result<Checkpoint, StoreError> {
    let sealed_at: String = row.try_get(3)?;
    Ok(Checkpoint {
        position: to_u64(row.try_get(0)?, "checkpoint position")?,
        events: to_u64(row.try_get(1)?, "checkpoint events")?,
        hash: to_hash(row.try_get(2)?, "checkpoint")?,
        sealed_at: DateTime::parse_from_rfc3339(&sealed_at)
            .map_err(|error| StoreError::CorruptRow(format!("checkpoint sealed_at: {error}")))?
            .with_timezone(&Utc),
    })
}

pub(crate) async fn audit_checkpoints(pool: &SqlitePool) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT position, events, hash, sealed_at FROM audit_checkpoints ORDER BY position",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint).collect()
}

pub(crate) async fn last_audit_checkpoint(
    pool: &SqlitePool,
) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(
        "SELECT position, events, hash, sealed_at FROM audit_checkpoints \
         ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(checkpoint).transpose()
}

pub(crate) async fn sealed_heads(
    pool: &SqlitePool,
    stream: Option<(&str, &str)>,
) -> Result<Vec<SealedHead>, StoreError> {
    let rows = match stream {
        Some((stream_type, stream_id)) => {
            sqlx::query(
                "SELECT stream_type, stream_id, stream_version, position, hash \
                 FROM audit_stream_heads WHERE stream_type = ? AND stream_id = ?",
            )
            .bind(stream_type)
            .bind(stream_id)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT stream_type, stream_id, stream_version, position, hash \
                 FROM audit_stream_heads",
            )
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(SealedHead {
                stream_type: row.try_get(0)?,
                stream_id: row.try_get(1)?,
                stream_version: to_u64(row.try_get(2)?, "sealed stream_version")?,
                position: to_u64(row.try_get(3)?, "sealed position")?,
                hash: to_hash(row.try_get(4)?, "sealed head")?,
            })
        })
        .collect()
}

/// Writes a seal on a pooled connection, holding the write lock (`BEGIN IMMEDIATE`) from the
/// check of the last checkpoint to the commit.
pub(crate) async fn write_audit_seal(
    pool: &SqlitePool,
    expected_last: Option<u64>,
    checkpoints: Vec<Checkpoint>,
    heads: Vec<SealedHead>,
) -> Result<bool, StoreError> {
    let mut connection = pool.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await?;
    let outcome = write_seal_steps(&mut connection, expected_last, &checkpoints, &heads).await;
    match outcome {
        Ok(true) => {
            sqlx::query("COMMIT").execute(&mut *connection).await?;
            Ok(true)
        }
        Ok(false) => {
            sqlx::query("ROLLBACK").execute(&mut *connection).await?;
            Ok(false)
        }
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            Err(error.into())
        }
    }
}

async fn write_seal_steps(
    connection: &mut SqliteConnection,
    expected_last: Option<u64>,
    checkpoints: &[Checkpoint],
    heads: &[SealedHead],
) -> Result<bool, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM audit_checkpoints")
        .fetch_one(&mut *connection)
        .await?;
    if last.map(|position| u64::try_from(position).unwrap_or(0)) != expected_last {
        return Ok(false);
    }
    for chunk in checkpoints.chunks(200) {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO audit_checkpoints (position, events, hash, sealed_at) ");
        builder.push_values(chunk, |mut row, checkpoint| {
            row.push_bind(to_i64(checkpoint.position))
                .push_bind(to_i64(checkpoint.events))
                .push_bind(checkpoint.hash.to_vec())
                .push_bind(format_timestamp(&checkpoint.sealed_at));
        });
        builder.build().execute(&mut *connection).await?;
    }
    for chunk in heads.chunks(200) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO audit_stream_heads (stream_type, stream_id, stream_version, position, \
             hash) ",
        );
        builder.push_values(chunk, |mut row, head| {
            row.push_bind(head.stream_type.as_str())
                .push_bind(head.stream_id.as_str())
                .push_bind(to_i64(head.stream_version))
                .push_bind(to_i64(head.position))
                .push_bind(head.hash.to_vec());
        });
        builder.push(
            " ON CONFLICT (stream_type, stream_id) DO UPDATE \
             SET stream_version = excluded.stream_version, position = excluded.position, \
             hash = excluded.hash \
             WHERE audit_stream_heads.stream_version < excluded.stream_version",
        );
        builder.build().execute(&mut *connection).await?;
    }
    Ok(true)
}

/// Gives rows stored before the hash chain existed their hashes, stream by stream in version
/// order (a row that has one keeps it and the chain continues from it).
pub(crate) async fn backfill_hashes(connection: &mut SqliteConnection) -> Result<(), StoreError> {
    let missing: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE hash IS NULL")
        .fetch_one(&mut *connection)
        .await?;
    if missing == 0 {
        return Ok(());
    }
    tracing::info!(
        missing,
        "computing the hash chain of events stored before it existed"
    );
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *connection)
        .await?;
    let outcome = backfill_steps(connection).await;
    match outcome {
        Ok(()) => {
            sqlx::query("COMMIT").execute(&mut *connection).await?;
            Ok(())
        }
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            Err(error)
        }
    }
}

async fn backfill_steps(connection: &mut SqliteConnection) -> Result<(), StoreError> {
    let statement = format!(
        "SELECT {CHAIN_COLUMNS} FROM events ORDER BY stream_type, stream_id, stream_version"
    );
    let rows = sqlx::query(&statement).fetch_all(&mut *connection).await?;
    let mut previous = ZERO_HASH;
    let mut stream: Option<(String, String)> = None;
    let mut buffer = Vec::new();
    for row in &rows {
        let row = chain_row(row)?;
        let same_stream = stream.as_ref().is_some_and(|(stream_type, stream_id)| {
            *stream_type == row.stream_type && *stream_id == row.stream_id
        });
        if !same_stream {
            previous = ZERO_HASH;
            stream = Some((row.stream_type.clone(), row.stream_id.clone()));
        }
        match row
            .hash
            .as_deref()
            .and_then(|hash| Hash::try_from(hash).ok())
        {
            Some(stored) => previous = stored,
            None => {
                previous = audit::event_hash_with(&previous, &row.canonical(), &mut buffer);
                sqlx::query("UPDATE events SET hash = ? WHERE position = ?")
                    .bind(previous.to_vec())
                    .bind(to_i64(row.position))
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }
    Ok(())
}
