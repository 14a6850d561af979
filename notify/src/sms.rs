//! Text messages: the port ([`SmsSender`]) and two adapters.
//!
//! - [`FileSms`], the embedded adapter: every message as one JSON file in a directory, for a
//!   server without an SMS provider (development, demonstrations) and for tests.
//! - [`TwilioSms`]: Twilio's Programmable Messaging API (`POST /2010-04-01/Accounts/{AccountSid}/
//!   Messages.json`).
//!
//! An adapter tells a failure that a retry may cure ([`SmsError::Transient`]: the provider is
//! down, overloaded or slow) from one it cannot ([`SmsError::Invalid`], [`SmsError::Permanent`]:
//! a number that is not one, a refused message), so that the sender retries the former and parks
//! the latter.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// The longest body sent: Twilio refuses more than 1600 characters (error 21617), so the
/// embedded adapter refuses them as well rather than accept what production would not.
pub const MAX_BODY_CHARS: usize = 1600;

/// A text message to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Sms {
    /// The recipient's number in E.164 form (`+393912345678`); see [`normalize_e164`].
    pub to: String,
    /// The text.
    pub body: String,
    /// The message's idempotency key: the same message sent again carries the same key.
    pub key: String,
}

/// Leaves out the body: it may hold one-time codes and links.
impl fmt::Debug for Sms {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Sms")
            .field("to", &self.to)
            .field("key", &self.key)
            .field("body_chars", &self.body.chars().count())
            .finish_non_exhaustive()
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The number or the body cannot be sent as it is: permanent.
    #[error("the text message is invalid: {0}")]
    Invalid(String),
    /// A failure a later attempt may not meet (the provider down or slow, too many requests).
    #[error("the text message was not sent, try again later: {0}")]
    Transient(String),
    /// The provider refused the message, or the adapter cannot work as configured; sending it
    /// again as it is will fail again.
    #[error("the text message was refused: {0}")]
    Permanent(String),
}

impl SmsError {
    /// Whether sending the same message again cannot succeed (park it rather than retry).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Transient(_))
    }
}

/// Sends text messages.
#[async_trait]
pub trait SmsSender: Send + Sync + fmt::Debug {
    /// Sends `sms` and returns the provider's id for it.
    async fn send(&self, sms: &Sms) -> Result<String, SmsError>;

    /// The adapter's name, for logs and metrics (`"file"`, `"twilio"`).
    fn kind(&self) -> &'static str;
}

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0. Spaces, dashes,
/// dots and parentheses are dropped, so `+1 (415) 555-0100` becomes `+14155550100`.
pub fn normalize_e164(number: &str) -> Result<String, SmsError> {
    let compact: String = number
        .chars()
        .filter(|character| {
            !(character.is_whitespace() || matches!(character, '-' | '.' | '(' | ')'))
        })
        .collect();
    let invalid = |problem: &str| {
        SmsError::Invalid(format!(
            "`{number}` is not a phone number in international (E.164) form: {problem}; write it \
             with `+` and the country code, such as +39 06 1234 5678 or +1 415 555 0100"
        ))
    };
    let Some(digits) = compact.strip_prefix('+') else {
        return Err(invalid("it does not start with `+`"));
    };
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid(
            "only digits may follow the `+` (spaces, dashes, dots and parentheses aside)",
        ));
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(invalid(&format!(
            "it has {} digits, but a number has 8 to 15",
            digits.len()
        )));
    }
    if digits.starts_with('0') {
        return Err(invalid("a country code does not start with 0"));
    }
    Ok(compact)
}

/// The recipient in E.164 form, once the body is known to be sendable.
fn check_message(sms: &Sms) -> Result<String, SmsError> {
    let to = normalize_e164(&sms.to)?;
    if sms.body.trim().is_empty() {
        return Err(SmsError::Invalid(
            "the message has an empty body; give it a text".to_owned(),
        ));
    }
    let chars = sms.body.chars().count();
    if chars > MAX_BODY_CHARS {
        return Err(SmsError::Invalid(format!(
            "the message has {chars} characters, more than the {MAX_BODY_CHARS} a text \
             message may have; shorten the template"
        )));
    }
    Ok(to)
}

/// The extension of a message file of [`FileSms`].
const SMS_FILE_EXTENSION: &str = "json";

/// The embedded adapter: writes each message as a JSON file (`{to, body, key, sent_at}`) into a
/// directory. Files are named `{unix_ms:013}-{sequence:010}-{process id}.json`, which sorts them
/// in the order they were written (within one process; across restarts by time). Each is
/// written under a hidden temporary name and renamed, so a reader never sees half a message.
/// The directory is readable by its owner only (0700) and each file too (0600): messages carry
/// one-time codes. The file's name without `.json` is the returned message id.
#[derive(Clone, Debug)]
pub struct FileSms {
    dir: PathBuf,
}

impl FileSms {
    /// An adapter writing into `dir` (created, with its parents, if missing).
    pub fn open(dir: &Path) -> Result<Self, SmsError> {
        create_private_directory(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory the messages are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The messages of a [`FileSms`] directory, in the order they were written; none when the
    /// directory does not exist. A file that cannot be read or is not JSON is left out (with a
    /// warning in the log).
    pub fn read_all(dir: &Path) -> Vec<serde_json::Value> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), %error, "cannot list the text messages");
                }
                return Vec::new();
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|found| found == SMS_FILE_EXTENSION)
                    && !path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let read = fs::read(&path).map_err(|error| error.to_string());
                match read.and_then(|bytes| {
                    serde_json::from_slice(&bytes).map_err(|error| error.to_string())
                }) {
                    Ok(value) => Some(value),
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "cannot read a text message");
                        None
                    }
                }
            })
            .collect()
    }
}

#[async_trait]
impl SmsSender for FileSms {
    async fn send(&self, sms: &Sms) -> Result<String, SmsError> {
        let to = check_message(sms)?;
        let record = serde_json::json!({
            "to": to,
            "body": sms.body,
            "key": sms.key,
            "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let bytes = serde_json::to_vec_pretty(&record).map_err(|error| {
            SmsError::Permanent(format!("cannot write the message as JSON: {error}"))
        })?;
        let dir = self.dir.clone();
        let id = tokio::task::spawn_blocking(move || write_sms_file(&dir, &bytes))
            .await
            .map_err(|error| {
                SmsError::Transient(format!("the task writing the message failed: {error}"))
            })??;
        tracing::debug!(dir = %self.dir.display(), %id, "text message written");
        Ok(id)
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

/// The last millisecond a file name used, so that names never go back when the clock does.
static LAST_UNIX_MS: AtomicU64 = AtomicU64::new(0);
/// The sequence number of the next file name of this process.
static NEXT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A new message file's stem: `{unix_ms:013}-{sequence:010}-{process id}`, after every one this
/// process made before.
fn sms_file_stem() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let unix_ms = LAST_UNIX_MS.fetch_max(now_ms, Ordering::SeqCst).max(now_ms);
    let sequence = NEXT_SEQUENCE.fetch_add(1, Ordering::SeqCst);
    format!("{unix_ms:013}-{sequence:010}-{}", std::process::id())
}

/// Writes `bytes` as a new message file of `dir` (temporary file, flush, rename) and returns its
/// stem. I/O failures are transient: a full or unmounted disk can be repaired.
fn write_sms_file(dir: &Path, bytes: &[u8]) -> Result<String, SmsError> {
    // The directory may have been removed since the adapter was opened.
    create_private_directory(dir)?;
    let stem = sms_file_stem();
    let final_path = dir.join(format!("{stem}.{SMS_FILE_EXTENSION}"));
    let temporary_path = dir.join(format!(".{stem}.{SMS_FILE_EXTENSION}.tmp"));
    let failed = |path: &Path, error: std::io::Error| {
        SmsError::Transient(format!(
            "cannot write the text message file {}: {error}; check that the directory is \
             writable and the disk not full",
            path.display()
        ))
    };
    if let Err(error) = write_new_private_file(&temporary_path, bytes) {
        let _ = fs::remove_file(&temporary_path);
        return Err(failed(&temporary_path, error));
    }
    if let Err(error) = fs::rename(&temporary_path, &final_path) {
        let _ = fs::remove_file(&temporary_path);
        return Err(failed(&final_path, error));
    }
    if let Ok(directory) = File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(stem)
}

/// Creates `path` (it must not exist), readable by the owner only, writes `bytes` and flushes
/// them to disk.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates `dir` and its missing parents, readable by the owner only where the platform has
/// modes. An existing directory is left as it is.
fn create_private_directory(dir: &Path) -> Result<(), SmsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| {
        SmsError::Permanent(format!(
            "cannot create the text message directory {}: {error}; create it or choose another",
            dir.display()
        ))
    })
}

/// How [`TwilioSms`] reaches Twilio.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    /// The account's SID: `AC` and 32 hexadecimal digits.
    pub account_sid: String,
    /// The account's auth token (the password of HTTP Basic authentication).
    pub auth_token: String,
    /// The sender: a Twilio number in E.164 form, or a Messaging Service SID (`MG...`), which
    /// lets Twilio pick the number.
    pub from: String,
    /// Where the API is: [`TwilioSettings::DEFAULT_API_BASE`] but in tests.
    pub api_base: String,
    /// The longest one request may take in all.
    pub timeout: Duration,
}

impl TwilioSettings {
    /// Twilio's API.
    pub const DEFAULT_API_BASE: &'static str = "https://api.twilio.com";
    /// Long enough for Twilio's usual answer within a second or two, short enough that a hung
    /// request does not hold up the queue.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    /// Settings for Twilio's API with the default timeout.
    pub fn new(account_sid: &str, auth_token: &str, from: &str) -> Self {
        Self {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            from: from.to_owned(),
            api_base: Self::DEFAULT_API_BASE.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Masks the auth token.
impl fmt::Debug for TwilioSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TwilioSettings")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("from", &self.from)
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The sender field of a request: a phone number or a Messaging Service.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TwilioSender {
    /// `From`, in E.164 form.
    Number(String),
    /// `MessagingServiceSid`.
    MessagingService(String),
}

/// Sends through Twilio's Programmable Messaging API: `POST {api_base}/2010-04-01/Accounts/
/// {AccountSid}/Messages.json` with HTTP Basic authentication (account SID and auth token) and a
/// form of `To`, `From` (or `MessagingServiceSid`) and `Body`; Twilio answers 201 with the
/// message's `sid`. 429 and 5xx answers and failed or timed-out connections are transient, other
/// 4xx answers permanent (with Twilio's error code and message).
#[derive(Clone, Debug)]
pub struct TwilioSms {
    settings: TwilioSettings,
    sender: TwilioSender,
    /// `{api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`.
    messages_url: String,
    client: reqwest::Client,
}

impl TwilioSms {
    /// The `User-Agent` of requests to Twilio.
    pub const USER_AGENT: &'static str = concat!("mercato-sms/", env!("CARGO_PKG_VERSION"));

    /// An adapter for `settings`, checked: the account SID is `AC` and 34 characters, the sender
    /// a number in E.164 form or a Messaging Service SID (`MG` and 34 characters), the API base
    /// an http(s) URL, the timeout not zero.
    pub fn new(settings: TwilioSettings) -> Result<Self, SmsError> {
        let account_sid = settings.account_sid.trim();
        if !is_twilio_sid(account_sid, "AC") {
            return Err(SmsError::Permanent(format!(
                "the Twilio account SID `{account_sid}` is not one: it is `AC` followed by 32 \
                 letters and digits (34 characters); copy it from the Twilio console"
            )));
        }
        if settings.auth_token.trim().is_empty() {
            return Err(SmsError::Permanent(
                "the Twilio auth token is empty; copy it from the Twilio console".to_owned(),
            ));
        }
        let from = settings.from.trim();
        let sender = if from.starts_with("MG") {
            if !is_twilio_sid(from, "MG") {
                return Err(SmsError::Permanent(format!(
                    "the Twilio Messaging Service SID `{from}` is not one: it is `MG` followed by \
                     32 letters and digits (34 characters)"
                )));
            }
            TwilioSender::MessagingService(from.to_owned())
        } else {
            let number = normalize_e164(from).map_err(|error| {
                SmsError::Permanent(format!(
                    "the Twilio sender is neither a phone number nor a Messaging Service SID \
                     (`MG...`): {error}"
                ))
            })?;
            TwilioSender::Number(number)
        };
        let api_base = settings.api_base.trim().trim_end_matches('/');
        let parsed = url::Url::parse(api_base).map_err(|error| {
            SmsError::Permanent(format!(
                "the Twilio API base `{api_base}` is not a URL ({error}); leave it at {}",
                TwilioSettings::DEFAULT_API_BASE
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SmsError::Permanent(format!(
                "the Twilio API base `{api_base}` is not an http(s) URL; leave it at {}",
                TwilioSettings::DEFAULT_API_BASE
            )));
        }
        if settings.timeout.is_zero() {
            return Err(SmsError::Permanent(
                "the Twilio request timeout is zero; give it some seconds".to_owned(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            // The credentials go with the request: never to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(Self::USER_AGENT)
            .build()
            .map_err(|error| {
                SmsError::Permanent(format!(
                    "cannot build the HTTP client for Twilio ({}); check the TLS setup of this \
                     build",
                    error_chain(&error)
                ))
            })?;
        let messages_url = format!("{api_base}/2010-04-01/Accounts/{account_sid}/Messages.json");
        let settings = TwilioSettings {
            account_sid: account_sid.to_owned(),
            api_base: api_base.to_owned(),
            ..settings
        };
        Ok(Self {
            settings,
            sender,
            messages_url,
            client,
        })
    }

    /// The settings, as checked.
    pub fn settings(&self) -> &TwilioSettings {
        &self.settings
    }
}

/// Whether `sid` is a Twilio SID with `prefix`: the prefix and 32 letters and digits.
fn is_twilio_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34
        && sid.starts_with(prefix)
        && sid.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// Twilio's error answer: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Default, serde::Deserialize)]
struct TwilioErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

/// Twilio's answer to a created message (only what is used of it).
#[derive(Debug, serde::Deserialize)]
struct TwilioMessage {
    sid: Option<String>,
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send(&self, sms: &Sms) -> Result<String, SmsError> {
        let to = check_message(sms)?;
        let (sender_field, sender) = match &self.sender {
            TwilioSender::Number(number) => ("From", number.as_str()),
            TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let form = [
            ("To", to.as_str()),
            (sender_field, sender),
            ("Body", sms.body.as_str()),
        ];
        let response = self
            .client
            .post(&self.messages_url)
            .basic_auth(&self.settings.account_sid, Some(&self.settings.auth_token))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|error| {
                SmsError::Transient(format!(
                    "cannot reach Twilio at {} ({}); check the network, or wait for Twilio",
                    self.settings.api_base,
                    error_chain(&error.without_url())
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(self.message_sid(response).await);
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let details = twilio_error_details(&bytes);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(SmsError::Transient(format!(
                "Twilio answered HTTP {status}{details}"
            )));
        }
        let hint = match status.as_u16() {
            401 | 403 => "; check the Twilio account SID and auth token",
            300..=399 => "; check the Twilio API base URL",
            _ => "",
        };
        Err(SmsError::Permanent(format!(
            "Twilio refused the message: HTTP {status}{details}{hint}"
        )))
    }

    fn kind(&self) -> &'static str {
        "twilio"
    }
}

impl TwilioSms {
    /// The `sid` of a successful answer. Twilio has created the message once it answers 2xx,
    /// so an answer without a readable `sid` is still a success (sending again would send the
    /// message twice): the id is then empty, and a warning logged.
    async fn message_sid(&self, response: reqwest::Response) -> String {
        let status = response.status();
        let sid = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice::<TwilioMessage>(&bytes)
                .map_err(|error| error.to_string())
                .and_then(|message| message.sid.ok_or_else(|| "no `sid`".to_owned())),
            Err(error) => Err(error_chain(&error.without_url())),
        };
        sid.unwrap_or_else(|error| {
            tracing::warn!(
                %status,
                %error,
                "Twilio accepted a text message but its answer names no message id"
            );
            String::new()
        })
    }
}

/// `, error 21211: The 'To' number ... (https://www.twilio.com/docs/errors/21211)` from Twilio's
/// error answer, or the start of whatever else it answered.
fn twilio_error_details(bytes: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<TwilioErrorBody>(bytes)
        && (error.code.is_some() || error.message.is_some())
    {
        let mut details = String::new();
        if let Some(code) = error.code {
            details.push_str(&format!(", error {code}"));
        }
        if let Some(message) = error.message {
            details.push_str(&format!(": {message}"));
        }
        if let Some(more_info) = error.more_info {
            details.push_str(&format!(" ({more_info})"));
        }
        return details;
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start: String = text.chars().take(200).collect();
    format!(": {start}")
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use base64::Engine;

    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "secret-auth-token-0123456789";

    fn sms(to: &str, body: &str, key: &str) -> Sms {
        Sms {
            to: to.to_owned(),
            body: body.to_owned(),
            key: key.to_owned(),
        }
    }

    #[test]
    fn numbers_are_normalized_to_e164() {
        assert_eq!(normalize_e164("+39 06 1234 5678").unwrap(), "+390612345678");
        assert_eq!(normalize_e164("+1 (415) 555-0100").unwrap(), "+14155550100");
        assert_eq!(normalize_e164("+49.30.1234.5678").unwrap(), "+493012345678");
        assert_eq!(normalize_e164(" +441234567890 ").unwrap(), "+441234567890");
        assert_eq!(normalize_e164("+12345678").unwrap(), "+12345678");
        assert_eq!(
            normalize_e164("+123456789012345").unwrap(),
            "+123456789012345"
        );
        for bad in [
            "",
            "+",
            "0612345678",
            "39 06 1234 5678",
            "+39 06 1234 567a",
            "+1234567",
            "+1234567890123456",
            "+0612345678",
            "++390612345678",
            "+39/0612345678",
        ] {
            let error = normalize_e164(bad).unwrap_err();
            assert!(matches!(error, SmsError::Invalid(_)), "{bad}: {error:?}");
            assert!(error.is_permanent());
            assert!(error.to_string().contains("E.164"), "{error}");
        }
    }

    #[test]
    fn the_debug_form_leaves_out_the_body_and_the_token() {
        let message = sms("+14155550100", "your code is 123456", "k1");
        let debug = format!("{message:?}");
        assert!(!debug.contains("123456"), "{debug}");
        assert!(debug.contains("+14155550100"), "{debug}");
        let settings = TwilioSettings::new(SID, TOKEN, "+15005550006");
        let debug = format!("{settings:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains(SID), "{debug}");
        let adapter = TwilioSms::new(settings).unwrap();
        assert!(!format!("{adapter:?}").contains(TOKEN));
    }

    #[test]
    fn only_transient_errors_are_retried() {
        assert!(SmsError::Invalid(String::new()).is_permanent());
        assert!(SmsError::Permanent(String::new()).is_permanent());
        assert!(!SmsError::Transient(String::new()).is_permanent());
    }

    #[tokio::test]
    async fn file_messages_round_trip_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("nested").join("sms");
        let adapter = FileSms::open(&dir).unwrap();
        assert_eq!(adapter.kind(), "file");
        assert!(FileSms::read_all(&dir).is_empty());
        let mut ids = Vec::new();
        for index in 0..5 {
            let id = adapter
                .send(&sms(
                    "+39 06 1234 5678",
                    &format!("message {index}"),
                    &format!("key-{index}"),
                ))
                .await
                .unwrap();
            ids.push(id);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let messages = FileSms::read_all(&dir);
        assert_eq!(messages.len(), 5);
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(message["to"], "+390612345678");
            assert_eq!(message["body"], format!("message {index}"));
            assert_eq!(message["key"], format!("key-{index}"));
            let sent_at = message["sent_at"].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(sent_at).unwrap();
        }
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 5);
        assert!(names.iter().all(|name| name.ends_with(".json")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[tokio::test]
    async fn file_messages_refuse_bad_numbers_and_bodies() {
        let directory = tempfile::tempdir().unwrap();
        let adapter = FileSms::open(directory.path()).unwrap();
        for message in [
            sms("12345", "hello", "k"),
            sms("+14155550100", "  ", "k"),
            sms("+14155550100", &"x".repeat(MAX_BODY_CHARS + 1), "k"),
        ] {
            let error = adapter.send(&message).await.unwrap_err();
            assert!(matches!(error, SmsError::Invalid(_)), "{error:?}");
        }
        assert!(FileSms::read_all(directory.path()).is_empty());
    }

    #[test]
    fn twilio_settings_are_checked() {
        TwilioSms::new(TwilioSettings::new(SID, TOKEN, "+1 500 555 0006")).unwrap();
        TwilioSms::new(TwilioSettings::new(
            SID,
            TOKEN,
            "MG0123456789abcdef0123456789abcdef",
        ))
        .unwrap();
        for settings in [
            TwilioSettings::new("AB0123456789abcdef0123456789abcdef", TOKEN, "+15005550006"),
            TwilioSettings::new("AC0123", TOKEN, "+15005550006"),
            TwilioSettings::new(SID, "", "+15005550006"),
            TwilioSettings::new(SID, TOKEN, "5005550006"),
            TwilioSettings::new(SID, TOKEN, "MG0123"),
            TwilioSettings {
                api_base: "ftp://api.twilio.com".to_owned(),
                ..TwilioSettings::new(SID, TOKEN, "+15005550006")
            },
            TwilioSettings {
                timeout: Duration::ZERO,
                ..TwilioSettings::new(SID, TOKEN, "+15005550006")
            },
        ] {
            let error = TwilioSms::new(settings).unwrap_err();
            assert!(error.is_permanent());
            assert!(!error.to_string().contains(TOKEN));
        }
    }

    /// What the local Twilio received.
    #[derive(Clone, Debug, Default)]
    struct Seen {
        path: String,
        authorization: String,
        content_type: String,
        form: Vec<(String, String)>,
    }

    /// A local stand-in for Twilio answering every message with `status` and `body`.
    async fn local_twilio(
        status: StatusCode,
        body: &'static str,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        #[derive(Clone)]
        struct Answer {
            status: StatusCode,
            body: &'static str,
            seen: Arc<Mutex<Vec<Seen>>>,
        }
        async fn create_message(
            State(answer): State<Answer>,
            UrlPath(account): UrlPath<String>,
            headers: HeaderMap,
            body: String,
        ) -> Response {
            let header_text = |name: header::HeaderName| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let form = url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            answer.seen.lock().unwrap().push(Seen {
                path: format!("/2010-04-01/Accounts/{account}"),
                authorization: header_text(header::AUTHORIZATION),
                content_type: header_text(header::CONTENT_TYPE),
                form,
            });
            (
                answer.status,
                [(header::CONTENT_TYPE, "application/json")],
                answer.body,
            )
                .into_response()
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(create_message),
            )
            .with_state(Answer {
                status,
                body,
                seen: Arc::clone(&seen),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://127.0.0.1:{port}"), seen)
    }

    fn local_settings(api_base: &str, from: &str) -> TwilioSettings {
        TwilioSettings {
            api_base: format!("{api_base}/"),
            timeout: Duration::from_secs(10),
            ..TwilioSettings::new(SID, TOKEN, from)
        }
    }

    const CREATED: &str = r#"{"account_sid": "AC0123456789abcdef0123456789abcdef", "api_version": "2010-04-01", "body": "hello", "direction": "outbound-api", "from": "+15005550006", "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued", "to": "+14155550100"}"#;

    #[tokio::test]
    async fn twilio_gets_the_documented_request() {
        let (api_base, seen) = local_twilio(StatusCode::CREATED, CREATED).await;
        let adapter = TwilioSms::new(local_settings(&api_base, "+1 500 555 0006")).unwrap();
        assert_eq!(adapter.kind(), "twilio");
        let sid = adapter
            .send(&sms("+1 (415) 555-0100", "hello & good bye", "key-1"))
            .await
            .unwrap();
        assert_eq!(sid, "SM0123456789abcdef0123456789abcdef");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert_eq!(request.path, format!("/2010-04-01/Accounts/{SID}"));
        let credentials = request.authorization.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            format!("{SID}:{TOKEN}")
        );
        assert_eq!(request.content_type, "application/x-www-form-urlencoded");
        let field = |name: &str| {
            request
                .form
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(field("To").as_deref(), Some("+14155550100"));
        assert_eq!(field("From").as_deref(), Some("+15005550006"));
        assert_eq!(field("Body").as_deref(), Some("hello & good bye"));
        assert_eq!(field("MessagingServiceSid"), None);
        assert_eq!(request.form.len(), 3);
    }

    #[tokio::test]
    async fn a_messaging_service_is_named_instead_of_a_number() {
        let (api_base, seen) = local_twilio(StatusCode::CREATED, CREATED).await;
        let service = "MG0123456789abcdef0123456789abcdef";
        let adapter = TwilioSms::new(local_settings(&api_base, service)).unwrap();
        adapter
            .send(&sms("+14155550100", "hello", "key-1"))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let form = &seen[0].form;
        assert!(form.contains(&("MessagingServiceSid".to_owned(), service.to_owned())));
        assert!(!form.iter().any(|(key, _)| key == "From"));
    }

    #[tokio::test]
    async fn twilio_refusals_are_permanent_with_their_code() {
        let (api_base, _seen) = local_twilio(
            StatusCode::BAD_REQUEST,
            r#"{"code": 21211, "message": "The 'To' number +15005550001 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#,
        )
        .await;
        let adapter = TwilioSms::new(local_settings(&api_base, "+15005550006")).unwrap();
        let error = adapter
            .send(&sms("+15005550001", "hello", "key-1"))
            .await
            .unwrap_err();
        assert!(matches!(error, SmsError::Permanent(_)), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("21211"), "{text}");
        assert!(text.contains("not a valid phone number"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");

        let (api_base, _seen) = local_twilio(
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}"#,
        )
        .await;
        let adapter = TwilioSms::new(local_settings(&api_base, "+15005550006")).unwrap();
        let error = adapter
            .send(&sms("+14155550100", "hello", "key-1"))
            .await
            .unwrap_err();
        assert!(error.is_permanent());
        assert!(error.to_string().contains("auth token"), "{error}");
        assert!(!error.to_string().contains(TOKEN), "{error}");
    }

    #[tokio::test]
    async fn overload_and_outages_are_transient() {
        for (status, body) in [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "<html>Service Unavailable</html>",
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}"#,
            ),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
        ] {
            let (api_base, _seen) = local_twilio(status, body).await;
            let adapter = TwilioSms::new(local_settings(&api_base, "+15005550006")).unwrap();
            let error = adapter
                .send(&sms("+14155550100", "hello", "key-1"))
                .await
                .unwrap_err();
            assert!(
                matches!(error, SmsError::Transient(_)),
                "{status}: {error:?}"
            );
            assert!(error.to_string().contains(status.as_str()), "{error}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_twilio_is_transient() {
        // A port that was free a moment ago: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let adapter = TwilioSms::new(local_settings(
            &format!("http://127.0.0.1:{port}"),
            "+15005550006",
        ))
        .unwrap();
        let error = adapter
            .send(&sms("+14155550100", "hello", "key-1"))
            .await
            .unwrap_err();
        assert!(matches!(error, SmsError::Transient(_)), "{error:?}");
        assert!(!error.to_string().contains(TOKEN));
    }

    #[tokio::test]
    async fn invalid_messages_are_not_sent_to_twilio() {
        let (api_base, seen) = local_twilio(StatusCode::CREATED, CREATED).await;
        let adapter = TwilioSms::new(local_settings(&api_base, "+15005550006")).unwrap();
        let error = adapter
            .send(&sms("415 555 0100", "hello", "key-1"))
            .await
            .unwrap_err();
        assert!(matches!(error, SmsError::Invalid(_)), "{error:?}");
        assert!(seen.lock().unwrap().is_empty());
    }

    /// Sends through Twilio itself with the account's test credentials (which send nothing and
    /// cost nothing) when `TWILIO_TEST_ACCOUNT_SID` and `TWILIO_TEST_AUTH_TOKEN` are set.
    #[tokio::test]
    async fn twilio_test_credentials_send() {
        let (Ok(account_sid), Ok(auth_token)) = (
            std::env::var("TWILIO_TEST_ACCOUNT_SID"),
            std::env::var("TWILIO_TEST_AUTH_TOKEN"),
        ) else {
            eprintln!(
                "twilio_test_credentials_send not run: set TWILIO_TEST_ACCOUNT_SID and \
                 TWILIO_TEST_AUTH_TOKEN (the account's test credentials) to run it"
            );
            return;
        };
        // +15005550006 is Twilio's magic number: valid as sender and as recipient.
        let adapter = TwilioSms::new(TwilioSettings::new(
            &account_sid,
            &auth_token,
            "+15005550006",
        ))
        .unwrap();
        let sid = adapter
            .send(&sms("+15005550006", "mercato test message", "live-test"))
            .await
            .unwrap();
        assert!(sid.starts_with("SM"), "{sid}");
    }
}
