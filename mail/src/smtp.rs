//! The SMTP adapter: every mail over a connection of its own to the relay of `SMTP_URL`.
//!
//! lettre's `AsyncSmtpTransport` on tokio, built without its connection pool: a send that
//! runs out of time is cancelled part-way through the SMTP exchange, and a pooled connection
//! in that state would be handed to the next mail with a reply still in flight. One connection
//! per mail is closed with the cancelled send, and costs a handshake per mail, which is
//! nothing at the rate mercato sends mail.
//!
//! The send timeout is kept twice: lettre's own timeout bounds connecting, and an overall
//! `tokio::time::timeout` bounds the whole exchange (lettre's async client has no timeout on
//! replies, so a server that accepts the connection and never answers would hold the send
//! forever). Errors are sorted by lettre's reading of the reply: a 5xx reply is
//! [`MailError::Permanent`]; a 4xx reply, a connection refused or broken, a TLS failure, a
//! timeout or a server that lacks something the mail needs (STARTTLS, SMTPUTF8) are
//! [`MailError::Transient`].
//!
//! TLS is rustls with the ring provider and the webpki roots (no OpenSSL, nothing but a Rust
//! toolchain and a C compiler to build).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use percent_encoding::percent_decode_str;
use url::Url;

use crate::message::{build_message, sender_mailbox};
use crate::{Mail, MailError, Mailer};

/// The port of `smtp://` without TLS.
const SMTP_PORT: u16 = 25;
/// The submission port: `smtp://` with STARTTLS.
const SUBMISSION_PORT: u16 = 587;
/// The submission port with TLS from the first byte: `smtps://`.
const SUBMISSIONS_PORT: u16 = 465;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    /// Plain text (`smtp://`).
    None,
    /// STARTTLS, refusing a server that does not offer it (`smtp://...?tls=required`).
    StartTlsRequired,
    /// STARTTLS when the server offers it, else plain text (`smtp://...?tls=opportunistic`).
    StartTlsOpportunistic,
    /// TLS from the first byte (`smtps://`).
    Tls,
}

/// What an `SMTP_URL` names.
#[derive(Clone, PartialEq, Eq)]
struct SmtpEndpoint {
    security: Security,
    host: String,
    port: u16,
    /// User and password, percent-decoded.
    credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SmtpEndpoint")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "user",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// Reads an `SMTP_URL`. Errors show the URL with its password masked.
fn parse_smtp_url(raw: &str) -> Result<SmtpEndpoint, MailError> {
    let invalid = |reason: &str| MailError::InvalidSmtpUrl {
        url: redact_smtp_url(raw),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|error| invalid(&error.to_string()))?;
    let mut tls_parameter = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "tls" if tls_parameter.is_none() => tls_parameter = Some(value.into_owned()),
            "tls" => return Err(invalid("tls is given twice")),
            other => return Err(invalid(&format!("unknown parameter {other:?}"))),
        }
    }
    let security = match (url.scheme(), tls_parameter.as_deref()) {
        ("smtp", None) => Security::None,
        ("smtp", Some("required")) => Security::StartTlsRequired,
        ("smtp", Some("opportunistic")) => Security::StartTlsOpportunistic,
        ("smtp", Some(other)) => {
            return Err(invalid(&format!(
                "tls={other:?} is neither tls=required (STARTTLS) nor tls=opportunistic"
            )));
        }
        ("smtps", None) => Security::Tls,
        ("smtps", Some(_)) => {
            return Err(invalid(
                "smtps:// is TLS from the first byte; tls= applies to smtp:// only",
            ));
        }
        (scheme, _) => {
            return Err(invalid(&format!(
                "the scheme is {scheme}://, not smtp:// or smtps://"
            )));
        }
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err(invalid("it names no host")),
    };
    if !matches!(url.path(), "" | "/") {
        return Err(invalid("it has a path; only a host and a port are used"));
    }
    if url.fragment().is_some() {
        return Err(invalid("it has a #fragment"));
    }
    let port = url.port().unwrap_or(match security {
        Security::None => SMTP_PORT,
        Security::StartTlsRequired | Security::StartTlsOpportunistic => SUBMISSION_PORT,
        Security::Tls => SUBMISSIONS_PORT,
    });
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| invalid("the user or password is not UTF-8 once percent-decoded"))
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(invalid("it has a password but no user")),
        (_, None) => return Err(invalid("it has a user but no password")),
        (user, Some(password)) => Some((decode(user)?, decode(password)?)),
    };
    let encrypted = matches!(security, Security::StartTlsRequired | Security::Tls);
    if credentials.is_some() && !encrypted && !is_this_machine(host) {
        return Err(invalid(
            "a password is sent only over TLS: use smtps:// or ?tls=required, or a relay on this machine",
        ));
    }
    Ok(SmtpEndpoint {
        security,
        host: host.to_owned(),
        port,
        credentials,
    })
}

/// Whether `host` is this machine (a password may cross the loopback interface in the clear).
fn is_this_machine(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `raw` with the password of its `user:password@` masked: `smtps://user:***@host:465`. The
/// user info ends at the last `@`, so a password with an unencoded `@` or `/` is masked whole;
/// text that is not a URL at all is masked whole.
pub(crate) fn redact_smtp_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return "***".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => raw.to_owned(),
        },
        None => raw.to_owned(),
    }
}

/// The SMTP adapter: each mail over a new connection to the relay, within the send timeout.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `SMTP_URL` with its password masked, for errors and `Debug`.
    redacted_url: String,
    send_timeout: Duration,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SmtpMailer")
            .field("smtp_url", &self.redacted_url)
            .field("from", &self.from.to_string())
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer that sends through the relay of `smtp_url` as `from`, each mail within
    /// `send_timeout`. Checks the URL and the sender; connects only when a mail is sent.
    pub fn new(smtp_url: &str, from: &str, send_timeout: Duration) -> Result<Self, MailError> {
        if send_timeout.is_zero() {
            return Err(MailError::ZeroSendTimeout);
        }
        let endpoint = parse_smtp_url(smtp_url)?;
        let from = sender_mailbox(from)?;
        let redacted_url = redact_smtp_url(smtp_url.trim());
        let tls_parameters = || {
            TlsParameters::new(endpoint.host.clone()).map_err(|error| MailError::InvalidSmtpUrl {
                url: redacted_url.clone(),
                reason: format!("TLS cannot be set up for its host: {error}"),
            })
        };
        let tls = match endpoint.security {
            Security::None => Tls::None,
            Security::StartTlsRequired => Tls::Required(tls_parameters()?),
            Security::StartTlsOpportunistic => Tls::Opportunistic(tls_parameters()?),
            Security::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.as_str())
                .port(endpoint.port)
                .tls(tls)
                .timeout(Some(send_timeout));
        if let Some((user, password)) = endpoint.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            redacted_url,
            send_timeout,
        })
    }

    /// What a failed exchange with the relay means for the mail.
    fn classify(&self, error: &lettre::transport::smtp::Error) -> MailError {
        if error.is_permanent() {
            MailError::Permanent(format!(
                "the SMTP server at {} refused the mail: {error}",
                self.redacted_url
            ))
        } else {
            MailError::Transient(format!(
                "sending through the SMTP server at {} failed: {error}",
                self.redacted_url
            ))
        }
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = build_message(&self.from, mail)?;
        let sending = self
            .transport
            .send_raw(&message.envelope, message.smtp_data());
        match tokio::time::timeout(self.send_timeout, sending).await {
            Ok(Ok(response)) => {
                tracing::debug!(
                    smtp_url = %self.redacted_url,
                    reply = %response.code(),
                    "mail accepted by the SMTP server"
                );
                Ok(())
            }
            Ok(Err(error)) => Err(self.classify(&error)),
            Err(_elapsed) => Err(MailError::Transient(format!(
                "the SMTP server at {} did not take the mail within {:?}",
                self.redacted_url, self.send_timeout
            ))),
        }
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> SmtpEndpoint {
        parse_smtp_url(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    fn refusal(url: &str) -> String {
        match parse_smtp_url(url) {
            Ok(endpoint) => panic!("{url} was accepted: {endpoint:?}"),
            Err(error @ MailError::InvalidSmtpUrl { .. }) => error.to_string(),
            Err(other) => panic!("{url}: unexpected error {other}"),
        }
    }

    #[test]
    fn each_scheme_and_tls_parameter_picks_its_security_and_default_port() {
        let cases = [
            ("smtp://mail.example.com", Security::None, 25),
            ("smtp://mail.example.com:2525", Security::None, 2525),
            (
                "smtp://mail.example.com?tls=required",
                Security::StartTlsRequired,
                587,
            ),
            (
                "smtp://mail.example.com:26/?tls=opportunistic",
                Security::StartTlsOpportunistic,
                26,
            ),
            ("smtps://mail.example.com", Security::Tls, 465),
            ("SMTPS://mail.example.com:1465/", Security::Tls, 1465),
        ];
        for (url, security, port) in cases {
            let endpoint = endpoint(url);
            assert_eq!(
                (endpoint.security, endpoint.port),
                (security, port),
                "{url}"
            );
            assert_eq!(endpoint.host, "mail.example.com", "{url}");
            assert_eq!(endpoint.credentials, None, "{url}");
        }
        assert_eq!(endpoint("smtp://[::1]:2525").host, "::1");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let endpoint = endpoint("smtps://mercato%40example.com:p%40ss%2Fw%3Ard@mail.example.com");
        assert_eq!(
            endpoint.credentials,
            Some(("mercato@example.com".to_owned(), "p@ss/w:rd".to_owned()))
        );
    }

    #[test]
    fn a_password_goes_only_over_tls_or_to_this_machine() {
        let error = refusal("smtp://mercato:hunter2@mail.example.com");
        assert!(error.contains("only over TLS"), "{error}");
        let error = refusal("smtp://mercato:hunter2@mail.example.com?tls=opportunistic");
        assert!(error.contains("only over TLS"), "{error}");
        for url in [
            "smtp://mercato:hunter2@localhost:2525",
            "smtp://mercato:hunter2@127.0.0.1:2525",
            "smtp://mercato:hunter2@[::1]:2525",
            "smtp://mercato:hunter2@mail.example.com?tls=required",
            "smtps://mercato:hunter2@mail.example.com",
        ] {
            assert!(endpoint(url).credentials.is_some(), "{url}");
        }
    }

    #[test]
    fn an_unusable_url_is_refused_saying_why_and_never_showing_the_password() {
        let cases = [
            ("http://mercato:hunter2@mail.example.com", "not smtp://"),
            ("smtp://mercato:hunter2@:25?tls=required", "smtp"),
            (
                "smtps://mercato:hunter2@mail.example.com?tls=required",
                "smtp:// only",
            ),
            (
                "smtp://mercato:hunter2@mail.example.com?tls=yes",
                "tls=\"yes\"",
            ),
            (
                "smtp://mercato:hunter2@mail.example.com?tls=required&x=1",
                "unknown parameter",
            ),
            ("smtps://mercato:hunter2@mail.example.com/relay", "path"),
            ("smtps://mercato:hunter2@mail.example.com#x", "fragment"),
            ("smtps://mercato@mail.example.com", "no password"),
            ("smtps://:hunter2@mail.example.com", "no user"),
            ("smtps://mercato:hunter2@mail.example.com:99999", "port"),
            ("mail.example.com:25", "SMTP_URL"),
            ("smtps://mercato:hun@ter/2@mail.example.com/x", "path"),
        ];
        for (url, expected) in cases {
            let error = refusal(url);
            assert!(error.contains(expected), "{url}: {error}");
            assert!(error.contains("SMTP_URL"), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{url}: {error}");
            assert!(!error.contains("ter/2"), "{url}: {error}");
        }
    }

    #[test]
    fn the_password_of_a_url_is_masked_whole() {
        assert_eq!(
            redact_smtp_url("smtps://mercato:hunter2@mail.example.com:465"),
            "smtps://mercato:***@mail.example.com:465"
        );
        assert_eq!(
            redact_smtp_url("smtps://mercato:hun@ter/2@mail.example.com?tls=required"),
            "smtps://mercato:***@mail.example.com?tls=required"
        );
        assert_eq!(
            redact_smtp_url("smtp://mail.example.com:25"),
            "smtp://mail.example.com:25"
        );
        assert_eq!(redact_smtp_url("not a url:hunter2"), "***");
    }

    #[test]
    fn the_debug_form_of_the_mailer_never_shows_the_password() {
        let mailer = SmtpMailer::new(
            "smtps://mercato:hunter2@mail.example.com",
            "shop@example.com",
            Duration::from_secs(5),
        )
        .expect("a mailer");
        let debug = format!("{mailer:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("smtps://mercato:***@mail.example.com"),
            "{debug}"
        );
    }

    #[test]
    fn a_zero_send_timeout_and_a_bad_sender_are_refused() {
        let error = SmtpMailer::new("smtp://127.0.0.1:25", "shop@example.com", Duration::ZERO)
            .expect_err("a zero timeout");
        assert!(matches!(error, MailError::ZeroSendTimeout), "{error}");
        let error = SmtpMailer::new("smtp://127.0.0.1:25", "shop", Duration::from_secs(1))
            .expect_err("a sender without a domain");
        assert!(matches!(error, MailError::InvalidSender { .. }), "{error}");
    }
}
