//! Notifications and outgoing webhooks, both driven by the log.
//!
//! Nothing here is on a request's path. The **notifier** (`run_notifier`, role `notifier`, part
//! of `all`) follows the log from its checkpoint: the intake (`intake.rs`) records each message
//! an event calls for in the outbox (`outbox.rs`) in the same transaction as its checkpoint, and
//! the sender (`sender.rs`) sends what is due: it opens the recipient's address with the
//! person's key, renders the message's templates in the person's language (`templates.rs`) and
//! hands it to the mail port (`mail`) or the SMS port (`sms.rs`); a transient failure is tried
//! again later with backoff and jitter, a permanent one parks the message with its reason.
//!
//! **Webhooks** (`webhooks.rs`): staff register endpoints; each follows the log from its own
//! checkpoint and gets the events it asked for, in position order, signed as the Standard
//! Webhooks specification says, as CloudEvents 1.0 JSON. Where an endpoint may connect is
//! checked at registration and at every connection (`guard.rs`). The routes that manage both are
//! in `routes.rs`.
//!
//! Other services ask for messages on the Kafka topic `notifications.commands` (`requests.rs`
//! parses and records them; the server's Kafka bus feeds it).
//!
//! One worker of each runs at a time, under its lease (`projections::lease`); others stand by.

pub mod guard;
pub mod intake;
pub mod outbox;
pub mod requests;
pub mod routes;
pub mod sender;
pub mod sms;
pub mod templates;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

pub use intake::NotificationIntake;
pub use sender::{NotifierOptions, Recipients, prepare, run_notifier};
pub use templates::Templates;

/// What went wrong in the notifier or a webhook worker.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] projections::ProjectionError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
    #[error("{0}")]
    Invalid(String),
}
