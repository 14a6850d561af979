//! The embedded adapter: every mail as one `.eml` file in the outbox directory.
//!
//! A file holds the message exactly as SMTP would carry it (RFC 5322, CRLF line ends, headers
//! and MIME parts encoded), so any mail program opens it. Files are named
//! `{unix_ms:013}-{uuid_v7}.eml`, which sorts them in the order they were written (the v7 uuids
//! of one process are ordered, also within one millisecond). Each is written under a hidden
//! temporary name in the same directory, flushed to disk and renamed, so a reader never sees
//! half a mail. Mails carry one-time links: the directory is created readable by its owner only
//! (0700) and each file too (0600). The I/O runs on tokio's blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lettre::message::Mailbox;
use uuid::Uuid;

use crate::message::{build_message, sender_mailbox};
use crate::{Mail, MailError, Mailer};

/// The extension of a mail file (what readers of the outbox look for).
pub(crate) const MAIL_FILE_EXTENSION: &str = "eml";

/// The embedded adapter: writes each mail as a `.eml` file into the outbox directory.
#[derive(Clone, Debug)]
pub struct FileMailer {
    outbox_dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    /// A mailer writing into `outbox_dir` (created, with its parents, if missing) as `from`.
    pub fn open(outbox_dir: &Path, from: &str) -> Result<Self, MailError> {
        let from = sender_mailbox(from)?;
        create_private_directory(outbox_dir)?;
        Ok(Self {
            outbox_dir: outbox_dir.to_owned(),
            from,
        })
    }

    /// The directory the mails are written to.
    pub fn outbox_dir(&self) -> &Path {
        &self.outbox_dir
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let bytes = build_message(&self.from, mail)?.bytes;
        let outbox_dir = self.outbox_dir.clone();
        let written = tokio::task::spawn_blocking(move || write_mail_file(&outbox_dir, &bytes))
            .await
            .map_err(|error| MailError::Outbox {
                path: self.outbox_dir.clone(),
                source: std::io::Error::other(format!("the writing task failed: {error}")),
            })??;
        tracing::debug!(path = %written.display(), "mail written to the outbox");
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

/// Writes `bytes` as a new mail file of `outbox_dir` (temporary file, flush, rename) and
/// returns its path.
fn write_mail_file(outbox_dir: &Path, bytes: &[u8]) -> Result<PathBuf, MailError> {
    // The directory may have been removed since the mailer was opened.
    create_private_directory(outbox_dir)?;
    let name = mail_file_name();
    let final_path = outbox_dir.join(&name);
    let temporary_path = outbox_dir.join(format!(".{name}.tmp"));
    if let Err(source) = write_new_private_file(&temporary_path, bytes) {
        let _ = fs::remove_file(&temporary_path);
        return Err(MailError::Outbox {
            path: temporary_path,
            source,
        });
    }
    if let Err(source) = fs::rename(&temporary_path, &final_path) {
        let _ = fs::remove_file(&temporary_path);
        return Err(MailError::Outbox {
            path: final_path,
            source,
        });
    }
    // The rename is durable once the directory is; a failure here leaves the mail in place.
    if let Ok(directory) = File::open(outbox_dir) {
        let _ = directory.sync_all();
    }
    Ok(final_path)
}

/// A new mail file's name: `{unix_ms:013}-{uuid_v7}.eml`, after every name this process made
/// before (the v7 uuids of one process are ordered, also within one millisecond).
fn mail_file_name() -> String {
    let mail_id = Uuid::now_v7();
    let unix_ms = mail_id
        .get_timestamp()
        .map(|timestamp| {
            let (seconds, nanoseconds) = timestamp.to_unix();
            seconds * 1000 + u64::from(nanoseconds / 1_000_000)
        })
        .unwrap_or_default();
    format!("{unix_ms:013}-{}.{MAIL_FILE_EXTENSION}", mail_id.simple())
}

/// Creates `directory` and its missing parents, readable by the owner only where the platform
/// has modes. An existing directory is left as it is.
fn create_private_directory(directory: &Path) -> Result<(), MailError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(directory)
        .map_err(|source| MailError::Outbox {
            path: directory.to_owned(),
            source,
        })
}

/// Writes `bytes` to a new file at `path`, readable and writable by the owner only where the
/// platform has modes, and flushes it to disk; fails if the file exists.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn mail_file_names_start_with_the_time_and_each_sorts_after_the_one_before() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis();
        // Many names within one millisecond: the order must not rest on the clock alone.
        let names: Vec<String> = (0..2000).map(|_| mail_file_name()).collect();
        for pair in names.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        let (unix_ms, rest) = names[0].split_once('-').expect("{unix_ms}-{uuid}.eml");
        assert_eq!(unix_ms.len(), 13);
        let unix_ms: u128 = unix_ms.parse().expect("milliseconds");
        assert!(
            unix_ms.abs_diff(now_ms) < 60_000,
            "{unix_ms} against {now_ms}"
        );
        let uuid = rest.strip_suffix(".eml").expect("a .eml name");
        assert_eq!(uuid.len(), 32);
        assert!(uuid.chars().all(|c| c.is_ascii_hexdigit()), "{uuid}");
    }
}
