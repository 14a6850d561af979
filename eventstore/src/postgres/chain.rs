//! The audit hash chain on PostgreSQL: raw chain rows, checkpoints and sealed stream heads.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::rows::{to_i64, to_u64};
use crate::audit::{ChainRow, Checkpoint, Hash, SealedHead};
use crate::error::StoreError;

/// The chain columns, with `event_id` and `occurred_at` as the canonical bytes spell them.
macro_rules! chain_columns {
    () => {
        "position, event_id::text, stream_type, stream_id, stream_version, event_type, \
         schema_version::bigint, \
         to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         correlation_id, causation_id, saga_id, actor, source, payload, hash"
    };
}

/// A page of the log below the horizon (cut after the LIMIT, as `READ_PAGE` does).
const READ_CHAIN: &str = concat!(
    "WITH page AS (SELECT ",
    chain_columns!(),
    " FROM events WHERE position > $1 ORDER BY position LIMIT $2) \
     SELECT * FROM page \
     WHERE position < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)"
);

const READ_STREAM_CHAIN: &str = concat!(
    "SELECT ",
    chain_columns!(),
    " FROM events WHERE stream_type = $1 AND stream_id = $2 AND stream_version > $3 \
     ORDER BY stream_version LIMIT $4"
);

fn chain_row(row: &PgRow) -> Result<ChainRow, StoreError> {
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

pub(crate) async fn read_chain(
    pool: &PgPool,
    after_position: u64,
    limit: usize,
) -> Result<Vec<ChainRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(READ_CHAIN)
        .bind(to_i64(after_position))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    let mut chain = rows.iter().map(chain_row).collect::<Result<Vec<_>, _>>()?;
    chain.sort_by_key(|row| row.position);
    Ok(chain)
}

pub(crate) async fn read_stream_chain(
    pool: &PgPool,
    stream_type: &str,
    stream_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Vec<ChainRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(READ_STREAM_CHAIN)
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

fn checkpoint(row: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        position: to_u64(row.try_get(0)?, "checkpoint position")?,
        events: to_u64(row.try_get(1)?, "checkpoint events")?,
        hash: to_hash(row.try_get(2)?, "checkpoint")?,
        sealed_at: row.try_get::<DateTime<Utc>, _>(3)?,
    })
}

pub(crate) async fn audit_checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT position, events, hash, sealed_at FROM audit_checkpoints ORDER BY position",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint).collect()
}

pub(crate) async fn last_audit_checkpoint(pool: &PgPool) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(
        "SELECT position, events, hash, sealed_at FROM audit_checkpoints \
         ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(checkpoint).transpose()
}

pub(crate) async fn sealed_heads(
    pool: &PgPool,
    stream: Option<(&str, &str)>,
) -> Result<Vec<SealedHead>, StoreError> {
    let rows = match stream {
        Some((stream_type, stream_id)) => {
            sqlx::query(
                "SELECT stream_type, stream_id, stream_version, position, hash \
                 FROM audit_stream_heads WHERE stream_type = $1 AND stream_id = $2",
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

pub(crate) async fn write_audit_seal(
    pool: &PgPool,
    expected_last: Option<u64>,
    checkpoints: Vec<Checkpoint>,
    heads: Vec<SealedHead>,
) -> Result<bool, StoreError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mercato_audit_seal')::bigint)")
        .execute(&mut *transaction)
        .await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM audit_checkpoints")
        .fetch_one(&mut *transaction)
        .await?;
    if last.map(|position| u64::try_from(position).unwrap_or(0)) != expected_last {
        transaction.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO audit_checkpoints (position, events, hash, sealed_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[], $4::timestamptz[])",
    )
    .bind(
        checkpoints
            .iter()
            .map(|checkpoint| to_i64(checkpoint.position))
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|checkpoint| to_i64(checkpoint.events))
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|checkpoint| checkpoint.hash.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|checkpoint| checkpoint.sealed_at)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *transaction)
    .await?;
    sqlx::query(
        "INSERT INTO audit_stream_heads (stream_type, stream_id, stream_version, position, hash) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[]) \
         ON CONFLICT (stream_type, stream_id) DO UPDATE \
         SET stream_version = excluded.stream_version, position = excluded.position, \
             hash = excluded.hash \
         WHERE audit_stream_heads.stream_version < excluded.stream_version",
    )
    .bind(
        heads
            .iter()
            .map(|head| head.stream_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        heads
            .iter()
            .map(|head| head.stream_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        heads
            .iter()
            .map(|head| to_i64(head.stream_version))
            .collect::<Vec<_>>(),
    )
    .bind(
        heads
            .iter()
            .map(|head| to_i64(head.position))
            .collect::<Vec<_>>(),
    )
    .bind(
        heads
            .iter()
            .map(|head| head.hash.to_vec())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(true)
}
