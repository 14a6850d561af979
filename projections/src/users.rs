//! The users read model (`rm_users`): every account with its kind, roles, status and its
//! personal values as the events hold them, sealed under the person's key. It never holds
//! personal data in the clear: an answer opens the values with the person's key (the query API,
//! through identity's key service), and after `UserErased` the row keeps no sealed value either,
//! so a rebuild after an erasure gives the same erased row.

use std::collections::BTreeMap;

use async_trait::async_trait;
use domain::{Sealed, UserEvent};
use eventstore::RecordedEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::readdb::ReadDb;
use crate::runner::{Feed, Projection};
use crate::{ProjectionError, decode};

/// An account as the users read model keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserRow {
    pub user_id: String,
    /// `customer` or `staff`.
    pub kind: String,
    /// Comma-separated staff roles.
    pub roles: String,
    /// `active`, `deactivated` or `erased`.
    pub status: String,
    pub email_verified: bool,
    pub email: Option<Sealed>,
    pub name: Option<Sealed>,
    pub phone: Option<Sealed>,
    pub addresses: Option<Sealed>,
    /// The language of the person's messages, if one was chosen.
    pub language: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_login_at: Option<String>,
    pub version: u64,
}

const USER_COLUMNS: &str = "user_id, kind, roles, status, email_verified, email, name, phone, \
    addresses, created_at, updated_at, last_login_at, version, language";

fn sealed(text: Option<String>) -> Option<Sealed> {
    text.map(Sealed::from_sealed_text)
}

fn sealed_text(value: &Option<Sealed>) -> Option<&str> {
    value.as_ref().map(Sealed::as_sealed_text)
}

impl UserRow {
    fn of_row(row: &AnyRow) -> Result<UserRow, ProjectionError> {
        Ok(UserRow {
            user_id: row.try_get(0)?,
            kind: row.try_get(1)?,
            roles: row.try_get(2)?,
            status: row.try_get(3)?,
            email_verified: row.try_get::<i64, _>(4)? != 0,
            email: sealed(row.try_get(5)?),
            name: sealed(row.try_get(6)?),
            phone: sealed(row.try_get(7)?),
            addresses: sealed(row.try_get(8)?),
            created_at: row.try_get(9)?,
            updated_at: row.try_get(10)?,
            last_login_at: row.try_get(11)?,
            version: u64::try_from(row.try_get::<i64, _>(12)?).unwrap_or(0),
            language: row.try_get(13)?,
        })
    }

    /// Folds one user event in; events at or below the row's version are ignored.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.stream_version <= self.version {
            return Ok(());
        }
        let at = event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match decode::<UserEvent>(event)? {
            UserEvent::UserRegistered(registered) => {
                self.user_id = registered.user_id.to_string();
                self.kind = registered.kind.as_str().to_owned();
                self.roles = registered
                    .roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                self.status = "active".to_owned();
                self.email_verified = registered.email_verified;
                self.email = Some(registered.email);
                self.name = Some(registered.name);
                self.created_at = at.clone();
            }
            UserEvent::UserEmailVerified(_) => self.email_verified = true,
            UserEvent::UserLoggedIn(_) => self.last_login_at = Some(at.clone()),
            UserEvent::UserProfileChanged(changed) => {
                self.name = Some(changed.name);
                self.phone = changed.phone;
                self.addresses = changed.addresses;
                self.language = changed.language;
            }
            UserEvent::UserPasswordChanged(_)
            | UserEvent::UserPasswordReset(_)
            | UserEvent::UserPasswordResetRequested(_) => {}
            UserEvent::UserDeactivated(_) => self.status = "deactivated".to_owned(),
            UserEvent::UserErased(_) => {
                self.status = "erased".to_owned();
                self.email = None;
                self.name = None;
                self.phone = None;
                self.addresses = None;
            }
        }
        if self.user_id.is_empty() {
            self.user_id = event.stream_id.clone();
        }
        self.updated_at = at;
        self.version = event.stream_version;
        Ok(())
    }
}

/// Reads one account from the users read model.
pub async fn load_user_row(db: &ReadDb, user_id: &str) -> Result<Option<UserRow>, ProjectionError> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM rm_users WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(UserRow::of_row).transpose()
}

/// Up to `limit` accounts after the first `offset`, newest first: all, or those of `kind`
/// (`customer` or `staff`).
pub async fn list_user_rows(
    db: &ReadDb,
    kind: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<Vec<UserRow>, ProjectionError> {
    let (clause, next) = if kind.is_some() {
        ("WHERE kind = $1", 2)
    } else {
        ("", 1)
    };
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM rm_users {clause} ORDER BY created_at DESC, user_id \
         LIMIT ${} OFFSET ${}",
        next,
        next + 1
    );
    let mut query = sqlx::query(&sql);
    if let Some(kind) = kind {
        query = query.bind(kind);
    }
    let rows = query
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(UserRow::of_row).collect()
}

/// The users read model's projection.
#[derive(Debug)]
pub struct UsersProjection {
    db: ReadDb,
}

impl UsersProjection {
    pub const NAME: &'static str = "users";

    pub fn new(db: ReadDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn checkpoint(&self, feed: &Feed) -> Result<u64, ProjectionError> {
        self.db.checkpoint(&feed.checkpoint_name(Self::NAME)).await
    }

    async fn apply(&self, feed: &Feed, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut user_events: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|event| event.stream_type == domain::user::USER_STREAM_TYPE)
        {
            user_events
                .entry(event.stream_id.as_str())
                .or_default()
                .push(event);
        }
        let mut write = self.db.begin_write().await?;
        for (user_id, events) in user_events {
            // A batch may start in the middle of a user's stream: fold on from the stored row.
            let stored = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM rm_users WHERE user_id = $1"
            ))
            .bind(user_id)
            .fetch_optional(&mut *write.transaction)
            .await?;
            let mut user = match stored {
                Some(row) => UserRow::of_row(&row)?,
                None => UserRow::default(),
            };
            for event in events {
                user.apply(event)?;
            }
            sqlx::query(&format!(
                "INSERT INTO rm_users ({USER_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (user_id) DO UPDATE SET kind = excluded.kind, roles = excluded.roles,
                     status = excluded.status, email_verified = excluded.email_verified,
                     email = excluded.email, name = excluded.name, phone = excluded.phone,
                     addresses = excluded.addresses, created_at = excluded.created_at,
                     updated_at = excluded.updated_at, last_login_at = excluded.last_login_at,
                     version = excluded.version, language = excluded.language
                 WHERE rm_users.version < excluded.version"
            ))
            .bind(&user.user_id)
            .bind(&user.kind)
            .bind(&user.roles)
            .bind(&user.status)
            .bind(i64::from(user.email_verified))
            .bind(sealed_text(&user.email))
            .bind(sealed_text(&user.name))
            .bind(sealed_text(&user.phone))
            .bind(sealed_text(&user.addresses))
            .bind(&user.created_at)
            .bind(&user.updated_at)
            .bind(&user.last_login_at)
            .bind(i64::try_from(user.version).unwrap_or(i64::MAX))
            .bind(&user.language)
            .execute(&mut *write.transaction)
            .await?;
        }
        write.commit_batch(feed, Self::NAME, events).await?;
        Ok(())
    }
}
