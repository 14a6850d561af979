//! Outgoing mail: the port every mail of mercato leaves through, and its two adapters.
//!
//! A [`Mail`] goes to one [`Recipient`] with a subject, a plain-text body and, optionally, an
//! HTML body (the message is then `multipart/alternative`, the text first). A [`Mailer`] sends
//! it or says why not, in a [`MailError`] that tells a failure worth retrying
//! ([`MailError::Transient`]: the server is unreachable, slow, or answered 4xx) from one that
//! will fail again ([`MailError::is_permanent`]: a 5xx reply, a refused recipient, an address
//! that is not one). Whoever retries (a notification outbox) decides on that alone.
//!
//! [`open`] picks the adapter from [`MailSettings`]:
//!
//! - without `SMTP_URL`, the embedded [`FileMailer`]: every mail becomes one `.eml` file in the
//!   outbox directory, byte for byte what SMTP would carry, so that a developer (or a test) reads
//!   what was sent without a mail server;
//! - with `SMTP_URL`, the [`SmtpMailer`]: one SMTP connection per mail to the relay the URL
//!   names (`smtp://`, `smtp://...?tls=required` for STARTTLS, `smtps://` for TLS from the first
//!   byte), TLS through rustls.
//!
//! Both build the message the same way (`message.rs`): From the configured sender, To the
//! recipient, a Date, a Message-ID on the sender's domain, non-ASCII text encoded as RFC 2047
//! and quoted-printable or base64 by lettre. Addresses, display names and subjects are checked
//! before anything is written or sent. Both adapters pass the same behaviour suite
//! (`tests/it/suite.rs`).

mod file;
mod message;
mod smtp;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use file::FileMailer;
pub use smtp::SmtpMailer;

/// How long a mail may take to be handed to the SMTP server when nothing else is configured.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The outgoing-mail port.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug {
    /// Sends `mail`: when this returns `Ok`, the mail is in the outbox file or the SMTP server
    /// has accepted it for delivery. An invalid recipient is refused before anything is sent.
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
    /// Which adapter this is (`file` or `smtp`).
    fn kind(&self) -> &'static str;
}

/// Who a mail goes to: an address and, optionally, the name shown beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address (`zoe@example.com`); checked when the mail is sent.
    pub address: String,
    /// The display name (`Zoë Ünal`), any Unicode text without control characters.
    pub name: Option<String>,
}

impl Recipient {
    /// A recipient known by address only.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            name: None,
        }
    }

    /// A recipient with the name to show beside the address.
    pub fn named(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            name: Some(name.into()),
        }
    }
}

/// One mail to one recipient. The text body is always sent; with an HTML body too, the message
/// is `multipart/alternative` and a reader shows the HTML.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: Recipient,
    /// The subject, any Unicode text without control characters (no line breaks).
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The local part of the Message-ID (before `@` and the sender's domain); `None` gives a
    /// fresh one. A notification names its own, derived from its key, so that a message sent
    /// twice after a crash carries the same id and a receiver can tell it is one message.
    pub message_id: Option<String>,
}

impl Mail {
    /// A plain-text mail.
    pub fn text(to: Recipient, subject: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            to,
            subject: subject.into(),
            text: text.into(),
            html: None,
            message_id: None,
        }
    }

    /// The same mail with an HTML body beside its text.
    pub fn with_html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// The same mail with the Message-ID `<{local}@{sender's domain}>`; `local` is letters,
    /// digits, `.`, `-` and `_` only (anything else is refused when the mail is sent).
    pub fn with_message_id(mut self, local: impl Into<String>) -> Self {
        self.message_id = Some(local.into());
        self
    }
}

/// The bodies are left out: they carry one-time links (verification, password reset), which
/// must not reach a log.
impl fmt::Debug for Mail {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.as_ref().map(String::len))
            .finish()
    }
}

/// What the mailer is opened with (declared as settings by the server's configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// `SMTP_URL`: the relay to send through; unset (or blank), mails go to the outbox
    /// directory. `smtp://host[:port]` (port 25), `smtp://host[:port]?tls=required` (STARTTLS,
    /// port 587), `smtps://host[:port]` (TLS, port 465), each with optional
    /// `user:password@` (percent-encoded; sent only over TLS or to this machine).
    pub smtp_url: Option<String>,
    /// `MAIL_FROM`: the sender, `shop@example.com` or `mercato <shop@example.com>`.
    pub from: String,
    /// `MAIL_SEND_TIMEOUT`: how long one mail may take to reach the SMTP server, connecting
    /// included; a server slower than that is a transient failure.
    pub send_timeout: Duration,
    /// `MAIL_OUTBOX_DIR`: where the embedded mailer writes its `.eml` files.
    pub outbox_dir: PathBuf,
}

/// `smtp_url` is shown with its password masked.
impl fmt::Debug for MailSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MailSettings")
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(smtp::redact_smtp_url),
            )
            .field("from", &self.from)
            .field("send_timeout", &self.send_timeout)
            .field("outbox_dir", &self.outbox_dir)
            .finish()
    }
}

/// The mailer the settings ask for: SMTP when `smtp_url` is set, else the outbox directory
/// (created if missing). Nothing is sent and no connection is opened here; the settings are
/// checked (the sender's address, the URL, the timeout) and the outbox directory created.
pub fn open(settings: &MailSettings) -> Result<Arc<dyn Mailer>, MailError> {
    let smtp_url = settings
        .smtp_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty());
    match smtp_url {
        Some(url) => Ok(Arc::new(SmtpMailer::new(
            url,
            &settings.from,
            settings.send_timeout,
        )?)),
        None => Ok(Arc::new(FileMailer::open(
            &settings.outbox_dir,
            &settings.from,
        )?)),
    }
}

/// Why a mail was not sent, or a mailer not opened.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The sender setting is not a mail address.
    #[error(
        "MAIL_FROM {address:?} is not a sender mercato can use ({reason}): give an address such as shop@example.com or mercato <shop@example.com>"
    )]
    InvalidSender { address: String, reason: String },
    /// The recipient's address or display name cannot be sent to; nothing was sent.
    #[error("recipient {address:?} cannot be sent to: {reason}")]
    InvalidRecipient { address: String, reason: String },
    /// The mail itself cannot be sent as it is (a control character in the subject); nothing
    /// was sent.
    #[error("the mail cannot be sent as it is: {0}")]
    InvalidMail(String),
    /// `SMTP_URL` cannot be used; `url` has its password masked.
    #[error(
        "SMTP_URL {url} is not usable: {reason} (expected smtp://host[:port], smtp://host[:port]?tls=required or smtps://host[:port], with optional user:password@)"
    )]
    InvalidSmtpUrl { url: String, reason: String },
    /// The send timeout setting cannot be used.
    #[error("MAIL_SEND_TIMEOUT must be longer than zero")]
    ZeroSendTimeout,
    /// The mail may go through if sent again later: the SMTP server could not be reached, did
    /// not answer in time, broke the connection, or answered with a 4xx reply.
    #[error("{0}")]
    Transient(String),
    /// The SMTP server refused the mail with a 5xx reply (a refused recipient, a refused
    /// sender, a rejected message, failed authentication): sending it again fails again.
    #[error("{0}")]
    Permanent(String),
    /// The outbox directory or one of its files could not be created or written.
    #[error("cannot write the mail outbox {}: {source}", path.display())]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MailError {
    /// Whether sending the same mail again through the same mailer can never succeed: a 5xx
    /// reply, an invalid recipient or mail, or settings that must change. `false` for what a
    /// retry later may cure (a transient failure, an outbox that could not be written).
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::InvalidSender { .. }
            | MailError::InvalidRecipient { .. }
            | MailError::InvalidMail(_)
            | MailError::InvalidSmtpUrl { .. }
            | MailError::ZeroSendTimeout
            | MailError::Permanent(_) => true,
            MailError::Transient(_) | MailError::Outbox { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_retry_cannot_cure_is_permanent() {
        assert!(MailError::Permanent("550 no such user".to_owned()).is_permanent());
        assert!(
            MailError::InvalidRecipient {
                address: "x".to_owned(),
                reason: "no @".to_owned()
            }
            .is_permanent()
        );
        assert!(MailError::InvalidMail("a line break in the subject".to_owned()).is_permanent());
        assert!(!MailError::Transient("connection refused".to_owned()).is_permanent());
        assert!(
            !MailError::Outbox {
                path: PathBuf::from("/full"),
                source: std::io::Error::other("no space left on device"),
            }
            .is_permanent()
        );
    }

    #[test]
    fn the_debug_form_of_a_mail_leaves_its_bodies_out() {
        let mail = Mail::text(
            Recipient::new("zoe@example.com"),
            "Reset your password",
            "https://shop.example/reset?token=secret-token",
        )
        .with_html("<a href=\"https://shop.example/reset?token=secret-token\">reset</a>");
        let debug = format!("{mail:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(debug.contains("Reset your password"), "{debug}");
    }

    #[test]
    fn the_debug_form_of_the_settings_masks_the_smtp_password() {
        let settings = MailSettings {
            smtp_url: Some("smtps://mercato:hunter2@mail.example.com".to_owned()),
            from: "shop@example.com".to_owned(),
            send_timeout: DEFAULT_SEND_TIMEOUT,
            outbox_dir: PathBuf::from("data/outbox"),
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("smtps://mercato:***@mail.example.com"),
            "{debug}"
        );
    }
}
