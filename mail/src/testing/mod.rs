//! Test support (cargo feature `testing`): a real SMTP server per test, and readers of what
//! either adapter sent, for this crate's tests and for any crate whose tests send mail.
//!
//! [`SmtpServer`] runs aiosmtpd (the Python package, started with `python3`) on a free port of
//! 127.0.0.1 and keeps every message it accepts. When `python3` or aiosmtpd is missing a test
//! that asks for it prints a loud `SKIPPED` line (not captured by the test harness) and gets
//! `None`; with `MERCATO_REQUIRE_SERVICES=1` (as CI sets it) it panics instead, as the other
//! services of the tests do (`eventstore::testing`). `scripts/test-setup` installs aiosmtpd.
//!
//! [`TestMailer`] is a mailer of either adapter with a way to read back what it sent:
//! [`TestMailer::file`] writes into a temporary outbox, [`TestMailer::smtp`] sends to a
//! [`SmtpServer`] of its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::file::MAIL_FILE_EXTENSION;
use crate::{MailSettings, Mailer};

/// The variable that turns a missing service into a test failure.
pub const REQUIRE_SERVICES_VARIABLE: &str = "MERCATO_REQUIRE_SERVICES";
/// Where [`skip_or_fail`] also records each skipped test, one line each (set by scripts/test).
pub const SKIP_LOG_VARIABLE: &str = "MERCATO_SKIP_LOG";

/// The sender of the test mailers.
pub const TEST_SENDER: &str = "mercato <shop@mercato.example>";
/// The send timeout of the test mailers: far above what a mail to a local server takes.
pub const TEST_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The server script, written into each server's temporary directory.
const SERVER_SCRIPT: &str = include_str!("smtp_server.py");
/// A peer script's exit status when a Python package it needs cannot be imported.
const PACKAGE_MISSING_STATUS: i32 = 3;
/// How long a peer may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a missing service must fail the test rather than skip it.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VARIABLE)
        .is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes"))
}

/// Skips (printing a line the harness does not capture) or, when services are required, panics.
pub fn skip_or_fail(test_name: &str, reason: &str) {
    if services_required() {
        panic!("{test_name}: {reason}, and {REQUIRE_SERVICES_VARIABLE}=1 forbids skipping");
    }
    skip(
        test_name,
        &format!("{reason} (set {REQUIRE_SERVICES_VARIABLE}=1 to fail instead)"),
    );
}

/// Prints and records a skipped test.
fn skip(test_name: &str, reason: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "\n*** SKIPPED {test_name}: {reason} ***");
    // The test harness hides a passing test's output; scripts/test lists this file at the end.
    let log = std::env::var_os(SKIP_LOG_VARIABLE).and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    if let Some(mut log) = log {
        let _ = writeln!(log, "{test_name}: {reason}");
    }
}

/// A real peer of the tests written in Python (an SMTP server, a webhook receiver): a script run
/// by `python3` in a temporary directory of its own, which prints the port it listens on alone
/// on its first line, exits when its standard input closes, and exits with status 3 when a
/// package it needs is missing (the test is then skipped, or fails under
/// `MERCATO_REQUIRE_SERVICES=1`).
#[derive(Clone, Copy, Debug)]
pub struct PythonPeer<'a> {
    pub test_name: &'a str,
    /// What it is, for messages: `the SMTP server`.
    pub what: &'a str,
    /// The script's file name and text.
    pub script_name: &'a str,
    pub script: &'a str,
    /// Directories to create in the peer's directory before it starts.
    pub directories: &'a [&'a str],
    /// The script's arguments (paths relative to the peer's directory, its working directory).
    pub args: &'a [&'a str],
    /// Why the test is skipped when a package is missing, and how to install it.
    pub missing: &'a str,
}

/// A started [`PythonPeer`]: its process (killed when dropped), its port, and its directory
/// (the script, `peer.log` with its standard error, and what it keeps).
#[derive(Debug)]
pub struct StartedPeer {
    pub process: Child,
    pub port: u16,
    pub directory: TempDir,
}

impl PythonPeer<'_> {
    /// Starts the peer and waits until it listens; `None` when the test must be skipped.
    pub async fn start(&self) -> Option<StartedPeer> {
        let (test_name, what) = (self.test_name, self.what);
        let directory = TempDir::new()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let script = directory.path().join(self.script_name);
        let log_path = directory.path().join("peer.log");
        std::fs::write(&script, self.script)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", script.display()));
        for name in self.directories {
            let path = directory.path().join(name);
            std::fs::create_dir(&path)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        }
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", log_path.display()));
        let spawned = Command::new("python3")
            .arg(&script)
            .args(self.args)
            .current_dir(directory.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn();
        let mut process = match spawned {
            Ok(process) => process,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                skip_or_fail(
                    test_name,
                    &format!("python3 is not installed (the tests run {what} with it)"),
                );
                return None;
            }
            Err(error) => panic!("{test_name}: cannot start python3: {error}"),
        };
        let stdout = process
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{test_name}: the output of {what} is not piped"));
        let mut first_line = String::new();
        let read = tokio::time::timeout(
            START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut first_line),
        )
        .await;
        let peer_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("{test_name}: cannot read the output of {what}: {error}"),
            Err(_elapsed) => panic!(
                "{test_name}: {what} did not start listening within {START_TIMEOUT:?}; its log:\n{}",
                peer_log()
            ),
        }
        if let Ok(port) = first_line.trim().parse::<u16>() {
            return Some(StartedPeer {
                process,
                port,
                directory,
            });
        }
        let status = tokio::time::timeout(Duration::from_secs(10), process.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if status.as_ref().and_then(ExitStatus::code) == Some(PACKAGE_MISSING_STATUS) {
            skip_or_fail(
                test_name,
                &format!("{} ({})", self.missing, peer_log().trim()),
            );
            return None;
        }
        panic!(
            "{test_name}: {what} did not start ({status:?}, first line {first_line:?}); its log:\n{}",
            peer_log()
        );
    }
}

/// The `.eml` files of a [`crate::FileMailer`]'s outbox, in the order they were written (by
/// name); none when the directory does not exist (nothing was sent).
pub fn outbox_messages(outbox_dir: &Path) -> Vec<Vec<u8>> {
    files_with_extension(outbox_dir, MAIL_FILE_EXTENSION)
        .into_iter()
        .map(|path| read(&path))
        .collect()
}

/// The files of `directory` ending in `.{extension}` (hidden temporary files left out), sorted
/// by name.
fn files_with_extension(directory: &Path, extension: &str) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => panic!("cannot list {}: {error}", directory.display()),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
                .path()
        })
        .filter(|path| {
            path.extension().is_some_and(|found| found == extension)
                && !path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Polls `messages` until at least `count` are there; panics after `timeout`.
async fn wait_for_messages<F, Fut>(count: usize, timeout: Duration, messages: F) -> Vec<Vec<u8>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<Vec<u8>>>,
{
    let started = Instant::now();
    loop {
        let arrived = messages().await;
        if arrived.len() >= count {
            return arrived;
        }
        if started.elapsed() >= timeout {
            panic!(
                "expected {count} mails within {timeout:?}, {} arrived",
                arrived.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message as the SMTP server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The address of `MAIL FROM`.
    pub envelope_from: String,
    /// The address of each accepted `RCPT TO`.
    pub envelope_to: Vec<String>,
    /// The message, as received (dot-stuffing undone).
    pub data: Vec<u8>,
}

/// A real SMTP server (aiosmtpd) for one test, on a free port of 127.0.0.1, keeping every
/// message it accepts. A recipient at [`SmtpServer::REFUSED_DOMAIN`] is refused with 550, one
/// at [`SmtpServer::DEFERRED_DOMAIN`] with 451. The process is killed when this is dropped.
#[derive(Debug)]
pub struct SmtpServer {
    process: Child,
    port: u16,
    /// The script, its log and the `messages` directory.
    directory: TempDir,
}

impl SmtpServer {
    /// Recipients at this domain are refused with `550 5.1.1`.
    pub const REFUSED_DOMAIN: &'static str = "refused.example";
    /// Recipients at this domain are refused with `451 4.3.0`.
    pub const DEFERRED_DOMAIN: &'static str = "deferred.example";

    /// Starts a server and waits until it listens. `None` when the test must be skipped
    /// (`python3` or aiosmtpd missing; see the module documentation).
    pub async fn start(test_name: &str) -> Option<Self> {
        let peer = PythonPeer {
            test_name,
            what: "the SMTP server",
            script_name: "smtp_server.py",
            script: SERVER_SCRIPT,
            directories: &["messages"],
            args: &["messages"],
            missing: "the Python package aiosmtpd is not installed (python3 -m pip install aiosmtpd; scripts/test-setup installs it)",
        };
        let started = peer.start().await?;
        Some(Self {
            process: started.process,
            port: started.port,
            directory: started.directory,
        })
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, no credentials.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (for what a benchmark reads of it, its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The directory the server stores each accepted message in (`NNNNNN.eml`, written when
    /// the server accepted it: its modification time is that moment).
    pub fn messages_dir(&self) -> std::path::PathBuf {
        self.directory.path().join("messages")
    }

    /// Every message received so far, in the order they arrived, with its envelope.
    pub async fn received(&self) -> Vec<ReceivedMail> {
        let messages = self.directory.path().join("messages");
        tokio::task::spawn_blocking(move || {
            files_with_extension(&messages, "eml")
                .into_iter()
                .map(|path| {
                    let envelope = String::from_utf8(read(&path.with_extension("envelope")))
                        .unwrap_or_else(|error| panic!("an envelope that is not UTF-8: {error}"));
                    let mut addresses = envelope.lines().map(str::to_owned);
                    ReceivedMail {
                        envelope_from: addresses.next().unwrap_or_default(),
                        envelope_to: addresses.collect(),
                        data: read(&path),
                    }
                })
                .collect()
        })
        .await
        .expect("the task reading the received messages")
    }

    /// The raw messages received so far, in the order they arrived.
    pub async fn messages(&self) -> Vec<Vec<u8>> {
        self.received()
            .await
            .into_iter()
            .map(|received| received.data)
            .collect()
    }

    /// Waits until at least `count` messages have arrived and returns them all; panics when
    /// they have not arrived within `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        wait_for_messages(count, timeout, || self.messages()).await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
        // Reap the process now rather than leave it to the runtime.
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The outbox of [`TestMailer::file`] within its temporary directory (created by the mailer).
const OUTBOX_NAME: &str = "outbox";

/// Where a [`TestMailer`]'s mails end up.
#[derive(Debug)]
enum Receiver {
    Outbox(TempDir),
    Smtp(SmtpServer),
}

/// A mailer of either adapter, opened through [`crate::open`] as the server opens it, and what
/// it sent.
#[derive(Debug)]
pub struct TestMailer {
    pub mailer: Arc<dyn Mailer>,
    /// The settings the mailer was opened with.
    pub settings: MailSettings,
    receiver: Receiver,
}

impl TestMailer {
    /// The embedded mailer, writing into a temporary outbox directory of its own.
    pub fn file() -> Self {
        let directory = TempDir::new()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let settings = MailSettings {
            smtp_url: None,
            from: TEST_SENDER.to_owned(),
            send_timeout: TEST_SEND_TIMEOUT,
            outbox_dir: directory.path().join(OUTBOX_NAME),
        };
        Self::open(settings, Receiver::Outbox(directory))
    }

    /// The SMTP mailer, sending to an [`SmtpServer`] of its own; `None` when the test must be
    /// skipped.
    pub async fn smtp(test_name: &str) -> Option<Self> {
        let server = SmtpServer::start(test_name).await?;
        let settings = MailSettings {
            smtp_url: Some(server.url()),
            from: TEST_SENDER.to_owned(),
            send_timeout: TEST_SEND_TIMEOUT,
            outbox_dir: PathBuf::from("unused-outbox"),
        };
        Some(Self::open(settings, Receiver::Smtp(server)))
    }

    fn open(settings: MailSettings, receiver: Receiver) -> Self {
        let mailer = crate::open(&settings)
            .unwrap_or_else(|error| panic!("cannot open the test mailer: {error}"));
        Self {
            mailer,
            settings,
            receiver,
        }
    }

    /// The SMTP server the mails go to, for the SMTP mailer.
    pub fn smtp_server(&self) -> Option<&SmtpServer> {
        match &self.receiver {
            Receiver::Outbox(_) => None,
            Receiver::Smtp(server) => Some(server),
        }
    }

    /// The raw messages sent so far, in the order they were written or arrived.
    pub async fn messages(&self) -> Vec<Vec<u8>> {
        match &self.receiver {
            Receiver::Outbox(directory) => {
                let outbox_dir = directory.path().join(OUTBOX_NAME);
                tokio::task::spawn_blocking(move || outbox_messages(&outbox_dir))
                    .await
                    .expect("the task reading the outbox")
            }
            Receiver::Smtp(server) => server.messages().await,
        }
    }

    /// Waits until at least `count` messages were sent and returns them all; panics when they
    /// have not been within `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        wait_for_messages(count, timeout, || self.messages()).await
    }
}
