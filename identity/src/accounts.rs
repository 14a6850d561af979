//! Accounts as the API uses them: register, verify the email, log in, refresh and end a
//! session, change the profile and the password, reset a forgotten password, deactivate and
//! erase. Each function checks its input, keeps the secrets in the secret store, seals personal
//! data under the person's key and records what happened as an event of the User aggregate.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::ids::FieldError;
use domain::personal::{Address, normalize_email, normalize_person_name, normalize_phone};
use domain::user::ProfileChange;
use domain::{AccountKind, Role, Sealed, User, UserCommand, UserError, UserStatus};
use eventstore::aggregate::{CommandError, CommandOptions, execute, load};
use eventstore::{EventMetadata, EventStore};
use uuid::Uuid;

use crate::credentials::{Added, Credential, Credentials};
use crate::error::IdentityError;
use crate::password::{check_new_password, hash_password, verify_password};
use crate::person_keys::PersonKeys;
use crate::sessions::{OneTimeError, OneTimeTokens, Purpose, RefreshError, Sessions};
use crate::signing::{ACCESS_TOKEN_TTL, AccessClaims, SigningKeys, TOKEN_AUDIENCE, TOKEN_ISSUER};
use crate::throttle::{LoginThrottle, Subject};

/// Why an account operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input broke a rule; the field says which.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("an account with this email exists already: log in, or reset its password")]
    EmailTaken,
    /// A wrong email or a wrong password: the same answer for both.
    #[error("the email or the password is wrong")]
    InvalidCredentials,
    /// Too many failed logins: wait this long.
    #[error("too many failed logins: try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// A verification or reset token that is unknown, for something else, expired or used.
    #[error("the token cannot be used: {0}")]
    Token(OneTimeError),
    #[error("current_password does not match the account's password")]
    WrongPassword,
    #[error("no account has this id")]
    NotFound,
    /// The User aggregate refused the command.
    #[error(transparent)]
    Refused(UserError),
    /// The event store, the secret store or hashing failed.
    #[error(transparent)]
    Failed(#[from] IdentityError),
}

impl From<CommandError<UserError>> for AccountError {
    fn from(error: CommandError<UserError>) -> Self {
        match error {
            CommandError::Domain(UserError::NotFound) => AccountError::NotFound,
            CommandError::Domain(refused) => AccountError::Refused(refused),
            CommandError::Store(error) => AccountError::Failed(IdentityError::Store(error)),
            other => AccountError::Failed(IdentityError::Storage(other.to_string())),
        }
    }
}

impl From<eventstore::StoreError> for AccountError {
    fn from(error: eventstore::StoreError) -> Self {
        AccountError::Failed(IdentityError::Store(error))
    }
}

/// A session as `POST /sessions` answers it.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    pub access_token: String,
    /// Seconds.
    pub expires_in: u64,
    pub refresh_token: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A change of the profile as the API gives it: `None` leaves a value, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct ProfileInput {
    pub name: Option<String>,
    pub phone: Option<Option<String>>,
    pub addresses: Option<Option<Vec<Address>>>,
    /// `Some(None)` goes back to English.
    pub language: Option<Option<String>>,
}

/// A one-time token, the link that carries it, and how long it works.
#[derive(Clone)]
pub struct OneTimeLink {
    pub token: String,
    pub link: String,
    pub valid_minutes: u64,
}

/// The token is left out.
impl std::fmt::Debug for OneTimeLink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OneTimeLink")
            .field("valid_minutes", &self.valid_minutes)
            .finish_non_exhaustive()
    }
}

/// The languages a profile may choose: the messages' languages (lower-case ISO 639-1).
pub const PROFILE_LANGUAGES: &[&str] = &["de", "en"];

/// A profile's language as given (`de`, `DE`, `de-CH`): its primary tag in lower case, if
/// messages exist in it.
fn normalize_language(language: &str) -> Result<String, FieldError> {
    let primary = language
        .trim()
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if PROFILE_LANGUAGES.contains(&primary.as_str()) {
        Ok(primary)
    } else {
        Err(FieldError::new(
            "language",
            format!(
                "{language:?} is not a language messages are written in: give one of {}",
                PROFILE_LANGUAGES.join(", ")
            ),
        ))
    }
}

/// What a registration or a change wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub user_id: Uuid,
    /// The position of the last event appended, if any was.
    pub position: Option<u64>,
}

/// The accounts of the shop.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: Arc<dyn EventStore>,
    credentials: Credentials,
    person_keys: PersonKeys,
    sessions: Sessions,
    one_time: OneTimeTokens,
    throttle: LoginThrottle,
    signing: SigningKeys,
    public_url: String,
    /// Made on the first login of an unknown email, not at start (every command opens accounts).
    decoy_hash: Arc<tokio::sync::OnceCell<String>>,
}

/// The parts [`Accounts`] is made of.
#[derive(Clone, Debug)]
pub struct AccountParts {
    pub store: Arc<dyn EventStore>,
    pub credentials: Credentials,
    pub person_keys: PersonKeys,
    pub sessions: Sessions,
    pub one_time: OneTimeTokens,
    pub throttle: LoginThrottle,
    pub signing: SigningKeys,
    /// Where the shop's pages are (links in emails), without a trailing slash.
    pub public_url: String,
}

fn subject(user_id: Uuid) -> String {
    user_id.to_string()
}

impl Accounts {
    pub fn new(parts: AccountParts) -> Accounts {
        Accounts {
            decoy_hash: Arc::new(tokio::sync::OnceCell::new()),
            store: parts.store,
            credentials: parts.credentials,
            person_keys: parts.person_keys,
            sessions: parts.sessions,
            one_time: parts.one_time,
            throttle: parts.throttle,
            signing: parts.signing,
            public_url: parts.public_url.trim_end_matches('/').to_owned(),
        }
    }

    async fn user(&self, user_id: Uuid) -> Result<User, AccountError> {
        Ok(load::<User>(self.store.as_ref(), &user_id.to_string())
            .await
            .map_err(IdentityError::from)?
            .state)
    }

    async fn run(
        &self,
        user_id: Uuid,
        command: UserCommand,
        metadata: &EventMetadata,
    ) -> Result<Option<u64>, AccountError> {
        let executed = execute::<User>(
            self.store.as_ref(),
            &user_id.to_string(),
            command,
            &(),
            metadata,
            &CommandOptions::default(),
        )
        .await?;
        Ok(executed.last_position())
    }

    /// Creates an account: checks the input, keeps the password's hash, seals the email and the
    /// name, and records `UserRegistered`. The notifier sends a customer the verification email
    /// (from the event, with a token of [`Accounts::one_time_link`]).
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        kind: AccountKind,
        roles: &BTreeSet<Role>,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let email = normalize_email(email)?;
        let name = normalize_person_name(name)?;
        check_new_password("password", password, Some(&email))?;
        let password_hash = hash_password(password.to_owned()).await?;
        let user_id = Uuid::new_v4();
        let lookup = self.credentials.email_lookup(&email);
        let store = self.store.clone();
        let added = self
            .credentials
            .add(
                user_id,
                &lookup,
                &password_hash,
                kind,
                roles,
                |holder| async move {
                    let user = load::<User>(store.as_ref(), &holder.to_string()).await?;
                    Ok(user.state.user_id.is_some())
                },
            )
            .await?;
        if let Added::EmailTaken { .. } = added {
            return Err(AccountError::EmailTaken);
        }
        let staff = kind == AccountKind::Staff;
        let written = async {
            let sealed_email = self
                .person_keys
                .seal(&subject(user_id), "email", &email)
                .await?;
            let sealed_name = self
                .person_keys
                .seal(&subject(user_id), "name", &name)
                .await?;
            self.run(
                user_id,
                UserCommand::Register {
                    user_id,
                    kind,
                    roles: roles.clone(),
                    email: sealed_email,
                    name: sealed_name,
                    email_verified: staff,
                },
                metadata,
            )
            .await
        }
        .await;
        let position = match written {
            Ok(position) => position,
            Err(error) => {
                // The registration did not happen: nothing of it stays.
                let _ = self.credentials.delete(user_id).await;
                let _ = self.person_keys.destroy(&subject(user_id)).await;
                return Err(error);
            }
        };
        Ok(Written { user_id, position })
    }

    /// A fresh one-time token for `purpose` of account `user_id`, the link of the shop's page
    /// that takes it, and how long it works: what a verification or reset message carries. The
    /// notifier asks for it when it sends the message, so that no token is ever stored in the
    /// clear, in the log or in the outbox.
    pub async fn one_time_link(
        &self,
        purpose: Purpose,
        user_id: Uuid,
    ) -> Result<OneTimeLink, IdentityError> {
        let token = self.one_time.issue(purpose, user_id).await?;
        let page = match purpose {
            Purpose::VerifyEmail => "verify-email",
            Purpose::ResetPassword => "reset-password",
        };
        Ok(OneTimeLink {
            link: format!("{}/{page}?token={token}", self.public_url),
            token,
            valid_minutes: purpose.ttl().as_secs() / 60,
        })
    }

    /// The shop's address, without a trailing slash (links in messages).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Confirms an email address with the token the verification email carried.
    pub async fn verify_email(
        &self,
        token: &str,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let user_id = self
            .one_time
            .consume(Purpose::VerifyEmail, token)
            .await?
            .map_err(AccountError::Token)?;
        let position = self
            .run(user_id, UserCommand::VerifyEmail, metadata)
            .await?;
        Ok(Written { user_id, position })
    }

    /// Signs an access token for an account and pairs it with refresh token `refresh_token`.
    async fn session(
        &self,
        credential: &Credential,
        family_id: &str,
        refresh_token: String,
    ) -> Result<Session, IdentityError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = ACCESS_TOKEN_TTL.as_secs();
        let claims = AccessClaims {
            iss: TOKEN_ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
            sub: credential.user_id.to_string(),
            iat: now,
            exp: now + i64::try_from(ttl).unwrap_or(900),
            jti: Uuid::new_v4().to_string(),
            sid: family_id.to_owned(),
            kind: credential.kind.as_str().to_owned(),
            roles: credential
                .roles
                .iter()
                .map(|role| role.as_str().to_owned())
                .collect(),
        };
        Ok(Session {
            user_id: credential.user_id,
            access_token: self.signing.sign(&claims).await?,
            expires_in: ttl,
            refresh_token,
        })
    }

    /// Logs in with an email and a password. A wrong email and a wrong password are the same
    /// answer after the same work (an unknown email is checked against a decoy hash); repeated
    /// failures of an account or from an address make them wait.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        peer: Option<IpAddr>,
        metadata: &EventMetadata,
    ) -> Result<Session, AccountError> {
        let lookup = match normalize_email(email) {
            Ok(email) => self.credentials.email_lookup(&email),
            // Not an address at all: still throttled and answered like a wrong one.
            Err(_) => self.credentials.email_lookup(email.trim()),
        };
        let mut subjects = vec![Subject::account(&lookup)];
        subjects.extend(peer.map(Subject::address));
        if let Some(wait) = self.throttle.wait(&subjects).await? {
            return Err(AccountError::Throttled(wait));
        }
        let credential = self.credentials.by_email(&lookup).await?;
        let (hash, usable) = match &credential {
            Some(credential) if credential.status == UserStatus::Active => {
                (credential.password_hash.clone(), true)
            }
            _ => {
                let decoy = self
                    .decoy_hash
                    .get_or_try_init(crate::password::decoy_hash)
                    .await?;
                (decoy.clone(), false)
            }
        };
        let matches = verify_password(password.to_owned(), hash).await?;
        let Some(credential) = credential.filter(|_| matches && usable) else {
            self.throttle.record_failure(&subjects).await?;
            return Err(AccountError::InvalidCredentials);
        };
        self.throttle.clear(&subjects[0]).await?;
        let refresh = self.sessions.start(credential.user_id).await?;
        let session = self
            .session(&credential, &refresh.family_id, refresh.token)
            .await?;
        let login = EventMetadata {
            actor: actor_of(&credential),
            ..metadata.clone()
        };
        self.run(
            credential.user_id,
            UserCommand::RecordLogin {
                method: "password".to_owned(),
            },
            &login,
        )
        .await?;
        Ok(session)
    }

    /// A new session pair for a refresh token, which stops working. A token used twice ends
    /// its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AccountError> {
        let refreshed = self.sessions.rotate(refresh_token).await??;
        let credential = self
            .credentials
            .by_user(refreshed.user_id)
            .await?
            .filter(|credential| credential.status == UserStatus::Active);
        let Some(credential) = credential else {
            self.sessions.revoke_family(&refreshed.family_id).await?;
            return Err(AccountError::Refresh(RefreshError::Revoked));
        };
        Ok(self
            .session(&credential, &refreshed.family_id, refreshed.token)
            .await?)
    }

    /// Ends session `family_id` (the `sid` of its access tokens).
    pub async fn logout(&self, family_id: &str) -> Result<(), AccountError> {
        Ok(self.sessions.revoke_family(family_id).await?)
    }

    /// Changes the profile of `user_id`.
    pub async fn change_profile(
        &self,
        user_id: Uuid,
        input: ProfileInput,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let who = subject(user_id);
        let mut change = ProfileChange::default();
        if let Some(name) = input.name {
            let name = normalize_person_name(&name)?;
            change.name = Some(self.person_keys.seal(&who, "name", &name).await?);
        }
        if let Some(phone) = input.phone {
            change.phone = Some(match phone {
                Some(phone) => {
                    let phone = normalize_phone("phone", &phone)?;
                    Some(self.person_keys.seal(&who, "phone", &phone).await?)
                }
                None => None,
            });
        }
        if let Some(addresses) = input.addresses {
            change.addresses = Some(match addresses {
                Some(addresses) => Some(self.seal_addresses(&who, addresses).await?),
                None => None,
            });
        }
        if let Some(language) = input.language {
            change.language = Some(match language {
                Some(language) => Some(normalize_language(&language)?),
                None => None,
            });
        }
        if change.is_empty() {
            return Err(FieldError::new(
                "body",
                "give at least one of name, phone, addresses, language",
            )
            .into());
        }
        let position = self
            .run(user_id, UserCommand::ChangeProfile(change), metadata)
            .await?;
        Ok(Written { user_id, position })
    }

    async fn seal_addresses(
        &self,
        who: &str,
        addresses: Vec<Address>,
    ) -> Result<Sealed, AccountError> {
        if addresses.len() > domain::personal::ADDRESSES_MAX {
            return Err(FieldError::new(
                "addresses",
                format!(
                    "a profile keeps at most {} addresses",
                    domain::personal::ADDRESSES_MAX
                ),
            )
            .into());
        }
        let mut normalized = Vec::with_capacity(addresses.len());
        for (index, address) in addresses.into_iter().enumerate() {
            normalized.push(address.normalized(&format!("addresses[{index}]"))?);
        }
        let text = serde_json::to_string(&normalized)
            .map_err(|error| IdentityError::Crypto(error.to_string()))?;
        Ok(self.person_keys.seal(who, "addresses", &text).await?)
    }

    /// The email of `user` in the clear, while the person is not erased.
    async fn email_of(&self, user: &User) -> Result<Option<String>, AccountError> {
        let (Some(user_id), Some(email)) = (user.user_id, &user.email) else {
            return Ok(None);
        };
        Ok(self
            .person_keys
            .open(&subject(user_id), "email", email)
            .await?
            .into_plain())
    }

    /// Changes the password, given the current one; every session of the account ends.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current_password: &str,
        new_password: &str,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let throttled = [Subject::user(user_id)];
        if let Some(wait) = self.throttle.wait(&throttled).await? {
            return Err(AccountError::Throttled(wait));
        }
        let Some(credential) = self.credentials.by_user(user_id).await? else {
            return Err(AccountError::NotFound);
        };
        if !verify_password(
            current_password.to_owned(),
            credential.password_hash.clone(),
        )
        .await?
        {
            self.throttle.record_failure(&throttled).await?;
            return Err(AccountError::WrongPassword);
        }
        let user = self.user(user_id).await?;
        let email = self.email_of(&user).await?;
        check_new_password("new_password", new_password, email.as_deref())?;
        let hash = hash_password(new_password.to_owned()).await?;
        // The password and the sessions first: what the account holder asked for must hold
        // even if recording it fails (a retry records it).
        self.credentials.set_password(user_id, &hash).await?;
        self.sessions.revoke_user(user_id).await?;
        self.throttle.clear(&throttled[0]).await?;
        let position = self
            .run(user_id, UserCommand::RecordPasswordChange, metadata)
            .await?;
        Ok(Written { user_id, position })
    }

    /// Records `UserPasswordResetRequested` if an active account has `email`; the notifier then
    /// sends it a one-time reset token. Answers at once, whether or not one has: the lookup and
    /// the append happen off the request's path.
    pub fn request_password_reset(&self, email: &str, metadata: EventMetadata) {
        let Ok(email) = normalize_email(email) else {
            return;
        };
        let accounts = self.clone();
        tokio::spawn(async move {
            if let Err(error) = accounts.record_reset_request(&email, &metadata).await {
                tracing::warn!(%error, "a password reset request was not recorded");
            }
        });
    }

    async fn record_reset_request(
        &self,
        email: &str,
        metadata: &EventMetadata,
    ) -> Result<(), AccountError> {
        let lookup = self.credentials.email_lookup(email);
        let Some(credential) = self.credentials.by_email(&lookup).await? else {
            return Ok(());
        };
        if credential.status != UserStatus::Active {
            return Ok(());
        }
        self.run(
            credential.user_id,
            UserCommand::RequestPasswordReset,
            metadata,
        )
        .await?;
        Ok(())
    }

    /// Sets a new password with a reset token; the token works once, and every session of the
    /// account ends.
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: &str,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let user_id = self
            .one_time
            .peek(Purpose::ResetPassword, token)
            .await?
            .map_err(AccountError::Token)?;
        let user = self.user(user_id).await?;
        let email = self.email_of(&user).await?;
        check_new_password("new_password", new_password, email.as_deref())?;
        let hash = hash_password(new_password.to_owned()).await?;
        // Only now is the token used, so a refused password leaves it usable.
        let consumed = self
            .one_time
            .consume(Purpose::ResetPassword, token)
            .await?
            .map_err(AccountError::Token)?;
        if consumed != user_id {
            return Err(AccountError::Token(OneTimeError::Unknown));
        }
        self.credentials.set_password(user_id, &hash).await?;
        self.sessions.revoke_user(user_id).await?;
        let position = self
            .run(user_id, UserCommand::RecordPasswordReset, metadata)
            .await?;
        Ok(Written { user_id, position })
    }

    /// Deactivates an account: it cannot log in, and its sessions end.
    pub async fn deactivate(
        &self,
        user_id: Uuid,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        if self.user(user_id).await?.user_id.is_none() {
            return Err(AccountError::NotFound);
        }
        self.credentials
            .set_status(user_id, UserStatus::Deactivated)
            .await?;
        self.sessions.revoke_user(user_id).await?;
        let position = self.run(user_id, UserCommand::Deactivate, metadata).await?;
        Ok(Written { user_id, position })
    }

    /// Erases a person: destroys their key (every sealed value of theirs, wherever it was
    /// copied, can no longer be read), deletes their credentials and tokens, and records
    /// `UserErased`. Their orders keep their lines and amounts. Erasing twice changes nothing.
    pub async fn erase(
        &self,
        user_id: Uuid,
        metadata: &EventMetadata,
    ) -> Result<Written, AccountError> {
        let user = self.user(user_id).await?;
        if user.user_id.is_none() {
            return Err(AccountError::NotFound);
        }
        // The key first: once it is gone the person is erased, whatever fails after.
        self.person_keys.destroy(&subject(user_id)).await?;
        self.credentials.delete(user_id).await?;
        self.sessions.forget_user(user_id).await?;
        let position = self.run(user_id, UserCommand::Erase, metadata).await?;
        tracing::info!(%user_id, "a person was erased");
        Ok(Written { user_id, position })
    }

    /// Whether an administrator account exists (an active staff account with the admin role).
    pub async fn admin_exists(&self) -> Result<bool, IdentityError> {
        self.credentials.any_admin().await
    }

    /// The credentials table (for the command line's account listing and tests).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The one-time tokens (for tests of expiry).
    pub fn one_time_tokens(&self) -> &OneTimeTokens {
        &self.one_time
    }
}

/// The actor of an account's own events.
fn actor_of(credential: &Credential) -> String {
    match credential.kind {
        AccountKind::Customer => format!("user:{}", credential.user_id),
        AccountKind::Staff => format!("staff:{}", credential.user_id),
    }
}
