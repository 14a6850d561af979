//! [`mail::open`]: the adapter the settings ask for, and settings it refuses, each naming what
//! to change.

use std::path::Path;
use std::time::Duration;

use mail::{DEFAULT_SEND_TIMEOUT, MailError, MailSettings};

fn settings(outbox_dir: &Path, smtp_url: Option<&str>, from: &str) -> MailSettings {
    MailSettings {
        smtp_url: smtp_url.map(str::to_owned),
        from: from.to_owned(),
        send_timeout: DEFAULT_SEND_TIMEOUT,
        outbox_dir: outbox_dir.to_owned(),
    }
}

#[test]
fn without_an_smtp_url_the_outbox_mailer_is_opened_and_its_directory_created() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    for (smtp_url, outbox_name) in [(None, "unset"), (Some("  "), "blank")] {
        let outbox_dir = directory.path().join(outbox_name);
        let mailer = mail::open(&settings(&outbox_dir, smtp_url, "shop@example.com"))
            .expect("the outbox mailer");
        assert_eq!(mailer.kind(), "file");
        assert!(outbox_dir.is_dir(), "{outbox_name}: the outbox is created");
    }
}

#[test]
fn with_an_smtp_url_the_smtp_mailer_is_opened_without_connecting_or_creating_the_outbox() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let outbox_dir = directory.path().join("outbox");
    // Nothing listens there, nor needs to: opening connects to nothing.
    for url in [
        "smtp://127.0.0.1:9",
        "smtp://mail.invalid?tls=required",
        "smtps://mercato:hunter2@mail.invalid",
    ] {
        let mailer = mail::open(&settings(
            &outbox_dir,
            Some(url),
            "mercato <shop@example.com>",
        ))
        .unwrap_or_else(|error| panic!("{url}: {error}"));
        assert_eq!(mailer.kind(), "smtp");
        assert!(!format!("{mailer:?}").contains("hunter2"), "{mailer:?}");
    }
    assert!(!outbox_dir.exists());
}

#[test]
fn a_sender_that_is_not_an_address_is_refused_by_both_adapters_naming_the_setting() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    for smtp_url in [None, Some("smtp://127.0.0.1:9")] {
        for from in [
            "",
            "shop",
            "mercato <shop>",
            "shop@example.com\r\nBcc: eve@example.com",
        ] {
            let error = mail::open(&settings(directory.path(), smtp_url, from))
                .expect_err("an invalid sender");
            assert!(matches!(error, MailError::InvalidSender { .. }), "{error}");
            assert!(error.to_string().contains("MAIL_FROM"), "{error}");
        }
    }
}

#[test]
fn an_unusable_smtp_url_is_refused_naming_the_setting_and_never_its_password() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    for url in [
        "smtp://mercato:hunter2@mail.example.com",
        "imap://mercato:hunter2@mail.example.com",
        "smtps://mercato:hunter2@mail.example.com?tls=required",
        "mercato:hunter2@mail.example.com",
    ] {
        let error =
            mail::open(&settings(directory.path(), Some(url), "shop@example.com")).expect_err(url);
        assert!(
            matches!(error, MailError::InvalidSmtpUrl { .. }),
            "{url}: {error}"
        );
        assert!(error.is_permanent());
        let message = error.to_string();
        assert!(message.starts_with("SMTP_URL "), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
    }
}

#[test]
fn a_zero_send_timeout_is_refused() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let mut zero = settings(
        directory.path(),
        Some("smtp://127.0.0.1:9"),
        "shop@example.com",
    );
    zero.send_timeout = Duration::ZERO;
    let error = mail::open(&zero).expect_err("a zero timeout");
    assert!(matches!(error, MailError::ZeroSendTimeout), "{error}");
    assert!(error.to_string().contains("MAIL_SEND_TIMEOUT"), "{error}");
}
