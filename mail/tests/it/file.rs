//! What only the outbox files show: their names and order, their modes, atomic writes, and an
//! outbox that cannot be written.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail::testing::{TEST_SENDER, outbox_messages};
use mail::{FileMailer, Mail, MailError, Mailer, Recipient};

use crate::support::read_mail;

fn numbered_mail(mail_idx: usize) -> Mail {
    Mail::text(
        Recipient::new("zoe@example.com"),
        format!("mail {mail_idx:02}"),
        "Hello\n",
    )
}

fn file_names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("list the outbox")
        .map(|entry| {
            entry
                .expect("an outbox entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn mail_files_are_named_by_time_and_sort_in_the_order_they_were_written() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let outbox_dir = directory.path().join("outbox");
    let mailer = FileMailer::open(&outbox_dir, TEST_SENDER).expect("the mailer");
    assert_eq!(mailer.kind(), "file");
    assert_eq!(mailer.outbox_dir(), outbox_dir);
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis();
    const N_MAILS: usize = 40;
    for mail_idx in 0..N_MAILS {
        mailer.send(&numbered_mail(mail_idx)).await.expect("sent");
    }

    let subjects: Vec<String> = outbox_messages(&outbox_dir)
        .iter()
        .map(|message| read_mail(message).subject.expect("a subject"))
        .collect();
    let expected: Vec<String> = (0..N_MAILS).map(|idx| format!("mail {idx:02}")).collect();
    assert_eq!(subjects, expected, "the files sort in the order written");
    let names = file_names(&outbox_dir);
    assert_eq!(names.len(), N_MAILS, "nothing but the mails: {names:?}");
    for name in names {
        let (unix_ms, rest) = name.split_once('-').expect("{unix_ms}-{uuid}.eml");
        let uuid = rest.strip_suffix(".eml").expect("a .eml file");
        assert_eq!(unix_ms.len(), 13, "{name}");
        let unix_ms: u128 = unix_ms.parse().expect("milliseconds");
        assert!(
            unix_ms + 1 >= before_ms && unix_ms < before_ms + 60_000,
            "{name}"
        );
        assert_eq!(uuid.len(), 32, "{name}");
        assert!(uuid.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_outbox_and_its_mail_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let directory = tempfile::tempdir().expect("a temporary directory");
    let outbox_dir = directory.path().join("data").join("outbox");
    let mailer = FileMailer::open(&outbox_dir, TEST_SENDER).expect("the mailer");
    mailer.send(&numbered_mail(1)).await.expect("sent");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("the metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&outbox_dir), 0o700);
    let names = file_names(&outbox_dir);
    assert_eq!(names.len(), 1);
    assert_eq!(mode(&outbox_dir.join(&names[0])), 0o600);
}

#[tokio::test]
async fn an_outbox_removed_after_opening_is_created_again() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let outbox_dir = directory.path().join("outbox");
    let mailer = FileMailer::open(&outbox_dir, TEST_SENDER).expect("the mailer");
    std::fs::remove_dir(&outbox_dir).expect("remove the outbox");
    mailer.send(&numbered_mail(1)).await.expect("sent");
    assert_eq!(outbox_messages(&outbox_dir).len(), 1);
}

#[tokio::test]
async fn an_outbox_that_cannot_be_written_is_a_failure_a_retry_may_cure() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    // A file where the directory should be: neither a directory nor anything inside it can be
    // created (a permission check would not do: the tests may run as root).
    let in_the_way = directory.path().join("in-the-way");
    std::fs::write(&in_the_way, b"").expect("write a file");
    let error = FileMailer::open(&in_the_way.join("outbox"), TEST_SENDER)
        .expect_err("no directory under a file");
    assert!(matches!(error, MailError::Outbox { .. }), "{error}");
    assert!(error.to_string().contains("in-the-way"), "{error}");

    let outbox_dir = directory.path().join("outbox");
    let mailer = FileMailer::open(&outbox_dir, TEST_SENDER).expect("the mailer");
    std::fs::remove_dir(&outbox_dir).expect("remove the outbox");
    std::fs::write(&outbox_dir, b"").expect("put a file in its place");
    let error = mailer
        .send(&numbered_mail(1))
        .await
        .expect_err("the outbox is a file");
    assert!(matches!(error, MailError::Outbox { .. }), "{error}");
    assert!(!error.is_permanent());

    std::fs::remove_file(&outbox_dir).expect("take the file away");
    mailer
        .send(&numbered_mail(2))
        .await
        .expect("sent after the fix");
    let messages = outbox_messages(&outbox_dir);
    assert_eq!(messages.len(), 1);
    assert_eq!(read_mail(&messages[0]).subject.as_deref(), Some("mail 02"));
}

#[tokio::test]
async fn a_missing_outbox_holds_no_mails() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    assert!(outbox_messages(&directory.path().join("never-created")).is_empty());
    // The helper waits for mails written by another task, and gives up loudly.
    let test_mailer = mail::testing::TestMailer::file();
    let waited = tokio::spawn(async move {
        test_mailer.wait_for(1, Duration::from_millis(200)).await;
    })
    .await;
    assert!(waited.is_err(), "waiting for a mail that never comes fails");
}
