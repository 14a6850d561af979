//! The notifier: its intake under a lease, and the sender of due messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventstore::EventStore;
use identity::{Identity, Purpose};
use mail::{Mail, Mailer, Recipient};
use projections::lease::Lease;
use projections::readdb::ReadDb;
use projections::users::{UserRow, load_user_row};
use projections::{Feed, Progress, run_projection};
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::NotifyError;
use crate::intake::NotificationIntake;
use crate::outbox::{self, Channel, Message};
use crate::sms::{Sms, SmsSender};
use crate::templates::{self, Templates};

/// The lease every notifier competes for.
pub const LEASE: &str = "notifier";
/// Events the intake reads at once.
const INTAKE_BATCH: usize = 500;
/// How soon a message whose recipient is not in the users read model yet is tried again.
const NOT_YET_DELAY_MS: i64 = 200;
/// How long a message waits that way before its waits count as failures.
const NOT_YET_PATIENCE_MS: i64 = 60_000;
/// How often the backlog gauges are read.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// How long running sends may take to finish once the lease is lost or at shutdown: less than a
/// third of the lease's time to live, so that they end before another notifier can hold it
/// (one cut off is sent again by the next holder, with the same Message-ID).
const DRAIN: Duration = Duration::from_secs(2);

/// How the notifier runs.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// Messages sent at once.
    pub concurrency: usize,
    /// The first retry's delay; each further one doubles it, up to `retry_max`, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Failed attempts after which a message is parked.
    pub max_attempts: u32,
    /// The shop's name in messages.
    pub shop_name: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Names this worker in the lease table.
    pub worker_id: String,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30 * 60),
            max_attempts: 12,
            shop_name: "mercato".to_owned(),
            lease_ttl: Duration::from_secs(6),
            worker_id: projections::lease::process_owner(),
        }
    }
}

impl NotifierOptions {
    /// When a message that failed `attempts` times is tried again (ms since the epoch), or
    /// `None` when it is parked: the base delay doubled per attempt, capped, with jitter of up
    /// to half of it either way, so that messages that failed together are not retried together.
    pub fn retry_at(&self, attempts: u32, now: i64) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doubled = self
            .retry_base
            .saturating_mul(1_u32 << attempts.saturating_sub(1).min(20))
            .min(self.retry_max);
        let millis = doubled.as_millis() as f64;
        let jitter = rand::rng().random_range(0.5..1.5);
        Some(now + (millis * jitter) as i64)
    }
}

/// Who messages go to and how: the accounts' read model, the person keys that open their
/// addresses, the one-time links of verification and reset messages, and the channels.
#[derive(Clone, Debug)]
pub struct Recipients {
    pub db: ReadDb,
    pub identity: Identity,
    pub mailer: Arc<dyn Mailer>,
    pub sms: Arc<dyn SmsSender>,
    pub templates: Arc<Templates>,
}

/// What one attempt at a message came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent(Option<String>),
    /// Not for sending (no phone number, a verified email): recorded as `skipped`.
    Skipped(String),
    Erased,
    /// The recipient's account is not in the users read model yet (its projection follows the
    /// same log): tried again shortly, not counted as a failure.
    NotYet,
    Transient(String),
    Permanent(String),
}

/// A recipient opened for one message.
struct Person {
    row: UserRow,
    email: Option<String>,
    name: String,
    phone: Option<String>,
}

impl Recipients {
    async fn person(&self, message: &Message) -> Result<Result<Person, Outcome>, NotifyError> {
        let Some(user_id) = message.recipient.strip_prefix("user:") else {
            return Ok(Err(Outcome::Permanent(format!(
                "the recipient {} is not an account",
                message.recipient
            ))));
        };
        let Some(row) = load_user_row(&self.db, user_id).await? else {
            return Ok(Err(Outcome::NotYet));
        };
        if row.status == "erased" {
            return Ok(Err(Outcome::Erased));
        }
        // The values the message needs, opened with the person's key (read once); a key
        // destroyed meanwhile is an erased person.
        let sealed = identity::profile::SealedProfile {
            email: row.email.clone(),
            name: row.name.clone(),
            phone: row.phone.clone(),
            addresses: None,
        };
        let opened = self
            .identity
            .person_keys
            .open_profile(user_id, &sealed)
            .await?;
        if opened.erased {
            return Ok(Err(Outcome::Erased));
        }
        let (email, name, phone) = (opened.email, opened.name, opened.phone);
        Ok(Ok(Person {
            email,
            name: name.unwrap_or_default(),
            phone,
            row,
        }))
    }

    /// The message's variables with the recipient's and the shop's, and the one-time link of a
    /// verification or reset message (issued now: a token exists only in the message).
    async fn variables(
        &self,
        message: &Message,
        person: &Person,
        language: &str,
        shop_name: &str,
    ) -> Result<Result<serde_json::Value, Outcome>, NotifyError> {
        let public_url = self.identity.accounts.public_url().to_owned();
        let mut variables = templates::common(shop_name, &public_url, &person.name);
        if let Some(own) = message.variables.as_object() {
            variables.extend(own.clone());
        }
        if let Some(order_id) = &message.order_id {
            // The console's order page: it asks a visitor who is not logged in to log in, and
            // shows the lines, payments, shipments and refunds.
            variables.insert(
                "order_url".to_owned(),
                json!(format!("{public_url}/shop/orders/{order_id}")),
            );
            variables.insert(
                "receipt_url".to_owned(),
                json!(format!("{public_url}/shop/orders/{order_id}#payments")),
            );
        }
        if let Some(reason) = message
            .variables
            .get("reason")
            .and_then(|reason| reason.as_str())
        {
            variables.insert(
                "reason_words".to_owned(),
                json!(templates::reason_words(reason, language)),
            );
        }
        let purpose = match message.template.as_str() {
            "verify_email" if person.row.email_verified => {
                return Ok(Err(Outcome::Skipped(
                    "the email is verified already".to_owned(),
                )));
            }
            "verify_email" => Some(Purpose::VerifyEmail),
            "password_reset" if person.row.status != "active" => {
                return Ok(Err(Outcome::Skipped(format!(
                    "the account is {}",
                    person.row.status
                ))));
            }
            "password_reset" => Some(Purpose::ResetPassword),
            _ => None,
        };
        if let Some(purpose) = purpose {
            let user_id = Uuid::parse_str(&person.row.user_id)
                .map_err(|error| NotifyError::Invalid(format!("account id: {error}")))?;
            let link = self
                .identity
                .accounts
                .one_time_link(purpose, user_id)
                .await?;
            variables.insert("link".to_owned(), json!(link.link));
            variables.insert("token".to_owned(), json!(link.token));
            variables.insert(
                "valid_for".to_owned(),
                json!(templates::valid_for(link.valid_minutes, language)),
            );
        }
        Ok(Ok(serde_json::Value::Object(variables)))
    }

    /// One attempt at `message`; what a failure says never names its recipient (a mail
    /// server's refusal quotes the address): the outbox, its listings and the logs keep no
    /// address.
    async fn attempt(&self, message: &Message, shop_name: &str) -> Result<Outcome, NotifyError> {
        let mut destination = None;
        let outcome = self.try_once(message, shop_name, &mut destination).await?;
        Ok(match (outcome, destination) {
            (Outcome::Transient(error), Some(destination)) => {
                Outcome::Transient(redact(&error, &destination))
            }
            (Outcome::Permanent(error), Some(destination)) => {
                Outcome::Permanent(redact(&error, &destination))
            }
            (outcome, _) => outcome,
        })
    }

    async fn try_once(
        &self,
        message: &Message,
        shop_name: &str,
        opened: &mut Option<String>,
    ) -> Result<Outcome, NotifyError> {
        let person = match self.person(message).await? {
            Ok(person) => person,
            Err(outcome) => return Ok(outcome),
        };
        let language = person
            .row
            .language
            .clone()
            .unwrap_or_else(|| templates::DEFAULT_LANGUAGE.to_owned());
        let destination = match message.channel {
            Channel::Email => match &person.email {
                Some(email) => email.clone(),
                None => {
                    return Ok(Outcome::Skipped(
                        "the account has no email address".to_owned(),
                    ));
                }
            },
            Channel::Sms => match &person.phone {
                Some(phone) => phone.clone(),
                None => {
                    return Ok(Outcome::Skipped(
                        "the account has no phone number".to_owned(),
                    ));
                }
            },
        };
        *opened = Some(destination.clone());
        let variables = match self
            .variables(message, &person, &language, shop_name)
            .await?
        {
            Ok(variables) => variables,
            Err(outcome) => return Ok(outcome),
        };
        let rendered = match self
            .templates
            .render(&message.template, &language, &variables)
        {
            Ok(rendered) => rendered,
            Err(error) => return Ok(Outcome::Permanent(error.to_string())),
        };
        Ok(match message.channel {
            Channel::Email => {
                let to = if person.name.is_empty() {
                    Recipient::new(destination)
                } else {
                    Recipient::named(person.name.clone(), destination)
                };
                let mail = Mail::text(to, rendered.subject, rendered.text)
                    .with_html(rendered.html)
                    .with_message_id(format!("n-{}", message.key));
                let span = client_span("mail send", self.mailer.kind());
                match self.mailer.send(&mail).instrument(span).await {
                    Ok(()) => Outcome::Sent(None),
                    Err(error) if error.is_permanent() => Outcome::Permanent(error.to_string()),
                    Err(error) => Outcome::Transient(error.to_string()),
                }
            }
            Channel::Sms => {
                let Some(body) = rendered.sms else {
                    return Ok(Outcome::Skipped(format!(
                        "{} has no text message",
                        message.template
                    )));
                };
                let to = match crate::sms::normalize_e164(&destination) {
                    Ok(to) => to,
                    Err(error) => return Ok(Outcome::Permanent(error.to_string())),
                };
                let sms = Sms {
                    to,
                    body,
                    key: message.key.clone(),
                };
                let span = client_span("text message send", "sms");
                match self.sms.send(&sms).instrument(span).await {
                    Ok(id) => Outcome::Sent(Some(id)),
                    Err(error) if error.is_permanent() => Outcome::Permanent(error.to_string()),
                    Err(error) => Outcome::Transient(error.to_string()),
                }
            }
        })
    }
}

/// A client span of a message handed to a channel's adapter, when spans are exported.
fn client_span(name: &'static str, adapter: &'static str) -> tracing::Span {
    if !telemetry::traced() {
        return tracing::Span::none();
    }
    tracing::info_span!("channel", otel.name = name, otel.kind = "client", adapter)
}

/// `text` with every mention of `destination` (an address or a phone number, in any case or, for
/// a number, in its E.164 form too) replaced by `<recipient>`.
fn redact(text: &str, destination: &str) -> String {
    let mut forms = vec![destination.to_owned()];
    if let Ok(e164) = crate::sms::normalize_e164(destination) {
        forms.push(e164);
    }
    let mut redacted = text.to_owned();
    for form in forms.iter().filter(|form| !form.is_empty()) {
        let lower = redacted.to_ascii_lowercase();
        let needle = form.to_ascii_lowercase();
        // ASCII lowercasing keeps every byte offset.
        let mut out = String::with_capacity(redacted.len());
        let mut rest = 0;
        for (at, _) in lower.match_indices(&needle) {
            out.push_str(&redacted[rest..at]);
            out.push_str("<recipient>");
            rest = at + needle.len();
        }
        out.push_str(&redacted[rest..]);
        redacted = out;
    }
    redacted
}

/// Prepares the notifier's tables in `db`, and, the first time a notifier runs on this
/// database, sets its intake's checkpoint to the log's head: a shop that starts notifying (an
/// upgrade, a new database) is not sent the messages of its whole past. Run before the process
/// serves requests, so that nothing written after it is missed.
pub async fn prepare(store: &dyn EventStore, db: &ReadDb) -> Result<(), NotifyError> {
    outbox::ensure_schema(db).await?;
    db.ensure_schema(crate::intake::SCHEMA).await?;
    let name = Feed::Log.checkpoint_name(NotificationIntake::NAME);
    if db.stored_checkpoint(&name).await?.is_none() {
        let head = store.head_position().await?;
        db.begin_write().await?.commit_at(&name, head).await?;
        if head > 0 {
            tracing::info!(
                head,
                "the notifier starts at the log's head: past events send no messages"
            );
        }
    }
    Ok(())
}

/// Runs the notifier until `shutdown`: waits for the lease, then runs the intake from its
/// checkpoint and sends what is due, until the lease is lost or shutdown.
pub async fn run_notifier(
    store: Arc<dyn EventStore>,
    recipients: Recipients,
    options: NotifierOptions,
    progress: Progress,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    let db = recipients.db.clone();
    prepare(store.as_ref(), &db).await?;
    let lease = Lease::new(
        db.clone(),
        LEASE,
        options.worker_id.clone(),
        options.lease_ttl,
    );
    lease
        .serve(&shutdown, |held| {
            let (store, recipients, options, progress, db) = (
                store.clone(),
                recipients.clone(),
                options.clone(),
                progress.clone(),
                db.clone(),
            );
            async move {
                metrics::gauge!("mercato_notifier_lease_held").set(1.0);
                let wake = Arc::new(Notify::new());
                let intake = Arc::new(NotificationIntake::new(db.clone(), wake.clone()));
                tokio::join!(
                    run_projection(store, intake, db, progress, held.clone(), INTAKE_BATCH),
                    send_due(recipients, options, wake, held),
                );
                metrics::gauge!("mercato_notifier_lease_held").set(0.0);
            }
        })
        .await;
    Ok(())
}

/// Sends every due message, at most `options.concurrency` at once, until `held` is cancelled.
async fn send_due(
    recipients: Recipients,
    options: NotifierOptions,
    wake: Arc<Notify>,
    held: CancellationToken,
) {
    let recipients = Arc::new(recipients);
    let options = Arc::new(options);
    // The messages being sent, and the lane (recipient and channel) of each.
    let mut running: HashMap<String, String> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut failures = 0_u32;
    let mut backlog_read: Option<std::time::Instant> = None;
    loop {
        let mut wait = Duration::from_secs(1);
        let free = options.concurrency.saturating_sub(running.len());
        if free > 0 {
            let limit = free + running.len();
            match outbox::due(&recipients.db, outbox::now_ms(), limit).await {
                Ok(due) => {
                    failures = 0;
                    let all_taken = due.len() < limit;
                    for message in due {
                        if running.len() >= options.concurrency {
                            break;
                        }
                        // One message at a time per recipient and channel, oldest first: a
                        // shipment's message is not overtaken by its delivery's.
                        let lane = format!("{}/{}", message.recipient, message.channel.as_str());
                        if running.contains_key(&message.key)
                            || running.values().any(|busy| *busy == lane)
                        {
                            continue;
                        }
                        running.insert(message.key.clone(), lane);
                        tasks.spawn(send_one(recipients.clone(), options.clone(), message));
                    }
                    if all_taken && let Ok(Some(next)) = outbox::next_due(&recipients.db).await {
                        let until = next - outbox::now_ms();
                        if until > 0 {
                            wait = wait.min(Duration::from_millis(until as u64));
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot read due notifications; retrying");
                    wait = Duration::from_millis(100 << failures.min(6));
                }
            }
        }
        // The backlog gauges count the whole outbox: every few seconds, not after every send.
        if backlog_read.is_none_or(|read| read.elapsed() >= BACKLOG_EVERY) {
            record_backlog(&recipients.db).await;
            backlog_read = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = held.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(key) = done {
                    running.remove(&key);
                }
                while let Some(done) = tasks.try_join_next() {
                    if let Ok(key) = done {
                        running.remove(&key);
                    }
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            "notifications still sending at shutdown were abandoned; they are sent on the next start"
        );
        tasks.abort_all();
    }
}

async fn record_backlog(db: &ReadDb) {
    if let Ok(counts) = outbox::count_by_status(db).await {
        for status in [outbox::PENDING, outbox::PARKED] {
            let count = counts
                .iter()
                .find(|(name, _)| name == status)
                .map_or(0, |(_, count)| *count);
            metrics::gauge!("mercato_notifications", "status" => status).set(count as f64);
        }
    }
}

/// Sends one message and stores what came of it, in a span of its own.
async fn send_one(
    recipients: Arc<Recipients>,
    options: Arc<NotifierOptions>,
    message: Message,
) -> String {
    let (parent, state) = (message.trace_context.as_deref())
        .map(schemas::split_trace_context)
        .unzip();
    let work = telemetry::follow(parent, state.flatten(), || {
        tracing::info_span!(
            "notification",
            otel.name = %format_args!("send {}", message.template),
            key = %message.key,
            template = %message.template,
            channel = message.channel.as_str(),
            correlation_id = %message.correlation_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    });
    work.run(attempt_and_store(recipients, options, message))
        .await
}

async fn attempt_and_store(
    recipients: Arc<Recipients>,
    options: Arc<NotifierOptions>,
    message: Message,
) -> String {
    let key = message.key.clone();
    let attempt = recipients.attempt(&message, &options.shop_name);
    let outcome = match attempt.await {
        // Still missing a minute on, the users read model is behind for a reason (a parked
        // projection): back off as after a failure.
        Ok(Outcome::NotYet) if outbox::now_ms() - message.created_at > NOT_YET_PATIENCE_MS => {
            Outcome::Transient("the account is not in the users read model".to_owned())
        }
        Ok(outcome) => outcome,
        Err(error) => Outcome::Transient(error.to_string()),
    };
    let db = &recipients.db;
    let (label, stored) = match &outcome {
        Outcome::Sent(provider_id) => (
            "sent",
            outbox::mark_sent(db, &key, provider_id.as_deref()).await,
        ),
        Outcome::Skipped(reason) => ("skipped", outbox::mark_skipped(db, &key, reason).await),
        Outcome::Erased => ("erased", outbox::mark_erased(db, &key).await),
        Outcome::NotYet => (
            "later",
            outbox::postpone(db, &key, outbox::now_ms() + NOT_YET_DELAY_MS).await,
        ),
        Outcome::Transient(error) => {
            let attempts = message.attempts + 1;
            let retry_at = options.retry_at(attempts, outbox::now_ms());
            if retry_at.is_none() {
                tracing::warn!(%error, attempts, "a notification failed too often and is parked");
            } else {
                tracing::info!(%error, attempts, "a notification failed; it is tried again later");
            }
            let label = if retry_at.is_some() {
                "retry"
            } else {
                "parked"
            };
            (label, outbox::mark_failed(db, &key, error, retry_at).await)
        }
        Outcome::Permanent(error) => {
            tracing::warn!(%error, "a notification cannot be sent and is parked");
            ("parked", outbox::mark_failed(db, &key, error, None).await)
        }
    };
    metrics::counter!("mercato_notifications_total", "template" => message.template.clone(), "channel" => message.channel.as_str(), "outcome" => label).increment(1);
    if label == "sent" {
        let latency = (outbox::now_ms() - message.created_at).max(0) as f64 / 1000.0;
        metrics::histogram!("mercato_notification_latency_seconds").record(latency);
    }
    if let Err(error) = stored {
        tracing::warn!(%error, "the outcome of a notification was not stored; it is attempted again");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_failure_never_names_its_recipient() {
        assert_eq!(
            redact(
                "550 5.1.1 <Zoe@Example.com>: recipient refused",
                "zoe@example.com"
            ),
            "550 5.1.1 <<recipient>>: recipient refused"
        );
        assert_eq!(
            redact(
                "`+39 06 1234 5678` is not a phone number; +390612345678 either",
                "+39 06 1234 5678"
            ),
            "`<recipient>` is not a phone number; <recipient> either"
        );
        assert_eq!(
            redact("connection refused", "zoe@example.com"),
            "connection refused"
        );
    }
}
