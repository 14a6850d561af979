//! What only the SMTP adapter shows: the envelope, the relay's refusals sorted into permanent
//! and transient, servers that are not there or never answer, TLS to a server without it.

use std::time::{Duration, Instant};

use mail::testing::{SmtpServer, TEST_SENDER};
use mail::{Mail, MailError, Mailer, Recipient, SmtpMailer};

/// A send timeout short enough for the tests that wait it out.
const SHORT_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// What a failing send may take beyond its timeout (a loaded machine, the test's own work).
const SLACK: Duration = Duration::from_secs(3);

fn welcome_to(address: &str) -> Mail {
    Mail::text(Recipient::new(address), "Welcome", "Hello\n")
}

fn smtp_mailer(url: &str, send_timeout: Duration) -> SmtpMailer {
    SmtpMailer::new(url, TEST_SENDER, send_timeout)
        .unwrap_or_else(|error| panic!("cannot open the mailer for {url}: {error}"))
}

/// A local port that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("the bound address").port()
}

/// Sends `mail`, returning the failure and how long it took to come.
async fn failed_send(mailer: &SmtpMailer, mail: &Mail) -> (MailError, Duration) {
    let started = Instant::now();
    // The test itself never hangs, whatever the mailer does.
    let sent = tokio::time::timeout(Duration::from_secs(60), mailer.send(mail))
        .await
        .expect("the send came back within a minute");
    (sent.expect_err("the send fails"), started.elapsed())
}

#[tokio::test]
async fn the_envelope_names_the_sender_and_the_recipient_address() {
    let Some(server) =
        SmtpServer::start("smtp::the_envelope_names_the_sender_and_the_recipient_address").await
    else {
        return;
    };
    let mailer = smtp_mailer(&server.url(), Duration::from_secs(10));
    assert_eq!(mailer.kind(), "smtp");
    let mail = Mail::text(
        Recipient::named("Zoë Ünal", "zoe@example.com"),
        "Welcome",
        "Hello\n",
    );
    mailer.send(&mail).await.expect("the mail is sent");

    let received = server.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].envelope_from, "shop@mercato.example");
    assert_eq!(received[0].envelope_to, vec!["zoe@example.com".to_owned()]);
    assert_eq!(
        server.wait_for(1, Duration::from_secs(5)).await,
        vec![received[0].data.clone()]
    );
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_failure_and_nothing_is_delivered() {
    let Some(server) = SmtpServer::start(
        "smtp::a_refused_recipient_is_a_permanent_failure_and_nothing_is_delivered",
    )
    .await
    else {
        return;
    };
    let mailer = smtp_mailer(&server.url(), Duration::from_secs(10));
    let address = format!("nobody@{}", SmtpServer::REFUSED_DOMAIN);
    let (error, _) = failed_send(&mailer, &welcome_to(&address)).await;
    assert!(matches!(error, MailError::Permanent(_)), "{error}");
    assert!(error.is_permanent());
    let message = error.to_string();
    assert!(message.contains("550"), "{message}");
    assert!(message.contains(&server.url()), "{message}");
    assert!(server.messages().await.is_empty(), "nothing was delivered");
}

#[tokio::test]
async fn a_deferred_recipient_is_a_transient_failure_and_nothing_is_delivered() {
    let Some(server) = SmtpServer::start(
        "smtp::a_deferred_recipient_is_a_transient_failure_and_nothing_is_delivered",
    )
    .await
    else {
        return;
    };
    let mailer = smtp_mailer(&server.url(), Duration::from_secs(10));
    let address = format!("somebody@{}", SmtpServer::DEFERRED_DOMAIN);
    let (error, _) = failed_send(&mailer, &welcome_to(&address)).await;
    assert!(matches!(error, MailError::Transient(_)), "{error}");
    assert!(!error.is_permanent());
    assert!(error.to_string().contains("451"), "{error}");
    assert!(server.messages().await.is_empty(), "nothing was delivered");
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_a_transient_failure_within_the_send_timeout() {
    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let mailer = smtp_mailer(&url, SHORT_SEND_TIMEOUT);
    let (error, took) = failed_send(&mailer, &welcome_to("zoe@example.com")).await;
    assert!(matches!(error, MailError::Transient(_)), "{error}");
    assert!(!error.is_permanent());
    assert!(error.to_string().contains(&url), "{error}");
    assert!(took < SHORT_SEND_TIMEOUT + SLACK, "took {took:?}");
}

#[tokio::test]
async fn a_server_that_accepts_the_connection_and_never_answers_is_a_transient_failure_within_the_send_timeout()
 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let url = format!("smtp://{}", listener.local_addr().expect("the address"));
    // Accepts every connection and keeps it open without a word.
    let silent_server = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    let mailer = smtp_mailer(&url, SHORT_SEND_TIMEOUT);
    let (error, took) = failed_send(&mailer, &welcome_to("zoe@example.com")).await;
    silent_server.abort();
    assert!(matches!(error, MailError::Transient(_)), "{error}");
    assert!(
        error.to_string().contains("did not take the mail within"),
        "{error}"
    );
    assert!(took >= SHORT_SEND_TIMEOUT, "took {took:?}");
    assert!(took < SHORT_SEND_TIMEOUT + SLACK, "took {took:?}");
}

#[tokio::test]
async fn an_invalid_recipient_is_refused_without_connecting() {
    // Nothing listens: a mailer that connected first would fail with a transient error.
    let mailer = smtp_mailer(
        &format!("smtp://127.0.0.1:{}", closed_port()),
        SHORT_SEND_TIMEOUT,
    );
    let error = mailer
        .send(&welcome_to("not an address"))
        .await
        .expect_err("an invalid recipient");
    assert!(
        matches!(error, MailError::InvalidRecipient { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn tls_to_a_server_that_speaks_only_plain_smtp_is_a_transient_failure() {
    let Some(server) = SmtpServer::start(
        "smtp::tls_to_a_server_that_speaks_only_plain_smtp_is_a_transient_failure",
    )
    .await
    else {
        return;
    };
    for url in [
        format!("smtps://127.0.0.1:{}", server.port()),
        format!("smtp://127.0.0.1:{}?tls=required", server.port()),
    ] {
        let mailer = smtp_mailer(&url, Duration::from_secs(5));
        let (error, took) = failed_send(&mailer, &welcome_to("zoe@example.com")).await;
        assert!(matches!(error, MailError::Transient(_)), "{url}: {error}");
        assert!(
            took < Duration::from_secs(5) + SLACK,
            "{url}: took {took:?}"
        );
    }
    assert!(server.messages().await.is_empty(), "nothing was delivered");
}
