//! The notifier as a process: SIGKILL in the middle of a burst of messages loses none, and what
//! it sent again after the crash carries the same Message-ID as the first time.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Server, ServerData, Setup, eventually};

/// The Message-ID and the recipient of a received mail.
fn id_and_recipient(raw: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(raw);
    let header = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    (header("Message-ID"), header("To"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_during_a_burst_loses_no_message() {
    let Some(smtp) = mail::testing::SmtpServer::start("notify_sigkill").await else {
        return;
    };
    let Some(data) = ServerData::new(Setup::PostgresRedis, "notify_sigkill").await else {
        return;
    };
    let smtp_url = smtp.url();
    let notifier_args = ["--smtp-url", smtp_url.as_str()];
    let api = Server::start_role(&data, "command-api").await;
    let mut notifier = Some(Server::start_with(&data, "notifier", &notifier_args).await);
    // The users read model the notifier reads its recipients from.
    let projector = Server::start_role(&data, "projector").await;

    const ACCOUNTS: usize = 60;
    let mut registered = Vec::new();
    let mut killed_at = None;
    for index in 0..ACCOUNTS {
        let email = format!(
            "burst-{index}-{}@example.com",
            uuid::Uuid::new_v4().simple()
        );
        let response = api
            .anonymous()
            .post("/users", json!({ "email": email, "password": "a long enough passphrase 7", "name": format!("Burst {index}") }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        registered.push(email);
        // Once mail flows, kill the notifier in the middle of it, and start it again.
        if killed_at.is_none() && smtp.messages().await.len() >= 10 {
            if let Some(running) = notifier.take() {
                running.kill().await;
            }
            killed_at = Some(smtp.messages().await.len());
            notifier = Some(Server::start_with(&data, "notifier", &notifier_args).await);
        }
    }
    if killed_at.is_none() {
        // The burst outran the notifier: kill it now, while it works through the backlog.
        eventually(Duration::from_secs(30), || async {
            (smtp.messages().await.len() >= 5).then_some(())
        })
        .await;
        if let Some(running) = notifier.take() {
            running.kill().await;
        }
        killed_at = Some(smtp.messages().await.len());
        notifier = Some(Server::start_with(&data, "notifier", &notifier_args).await);
    }
    let killed_at = killed_at.unwrap_or_default();
    assert!(
        killed_at < ACCOUNTS,
        "the notifier was killed after it had sent everything"
    );

    let everyone = eventually(Duration::from_secs(60), || async {
        let received: Vec<(String, String)> = smtp
            .messages()
            .await
            .iter()
            .map(|raw| id_and_recipient(raw))
            .collect();
        registered
            .iter()
            .all(|email| received.iter().any(|(_, to)| to.contains(email.as_str())))
            .then_some(received)
    })
    .await;
    let Some((received, _)) = everyone else {
        panic!("not every account got its verification mail after the notifier was killed");
    };
    // A message the killed process had handed to the server but not yet marked sent is sent
    // again: with the same Message-ID, so it is recognisably the same message.
    let mut per_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, to) in &received {
        per_id.entry(id.as_str()).or_default().push(to.as_str());
    }
    assert_eq!(
        per_id.len(),
        ACCOUNTS,
        "one Message-ID per message: {per_id:?}"
    );
    assert!(
        per_id
            .values()
            .all(|recipients| recipients.windows(2).all(|pair| pair[0] == pair[1]))
    );
    let again = received.len() - ACCOUNTS;
    assert!(
        again <= 16,
        "{again} messages were sent twice: more than the notifier sends at once"
    );
    eprintln!(
        "notify_sigkill: killed after {killed_at} mails; {again} sent again with the same Message-ID"
    );
    drop(projector);
    drop(api);
    if let Some(notifier) = notifier {
        notifier.kill().await;
    }
}

/// Runs `mercato notifications ARGS` on `data`; answers its exit code and output.
async fn notifications(data: &ServerData, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["notifications"];
    full.extend_from_slice(args);
    let output = crate::common::mercato_on(data, &full)
        .output()
        .await
        .expect("run mercato notifications");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_listed_retried_and_resent_from_the_command_line() {
    let Some(smtp) = mail::testing::SmtpServer::start("notify_cli").await else {
        return;
    };
    let Some(data) = ServerData::new(Setup::Embedded, "notify_cli").await else {
        return;
    };
    let server =
        crate::common::TestApp::start_with(&data, "all", &["--smtp-url", &smtp.url()]).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (good, refused) = (
        format!("good-{suffix}@example.com"),
        format!("bad-{suffix}@refused.example"),
    );
    for email in [&good, &refused] {
        let response = server
            .anonymous()
            .post(
                "/users",
                json!({ "email": email, "password": "a long enough passphrase 5", "name": "Cli" }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let listed = eventually(Duration::from_secs(30), || async {
        let (code, stdout, _) = notifications(&data, &["list", "--status", "parked"]).await;
        (code == 0 && stdout.lines().count() == 2).then_some(stdout)
    })
    .await;
    let Some((parked, _)) = listed else {
        panic!(
            "the refused message was not listed as parked: {:?}",
            notifications(&data, &["list"]).await
        );
    };
    let line = parked.lines().nth(1).expect("a row");
    assert!(
        line.contains("\tparked\tverify_email\temail\tuser:") && line.contains("550"),
        "{line}"
    );
    let parked_key = line.split('\t').next().expect("the key").to_owned();

    let (code, stdout, stderr) = notifications(&data, &["retry", &parked_key]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("1 parked message(s) will be sent again"),
        "{stdout}"
    );
    let (code, _, stderr) = notifications(&data, &["list", "--status", "bogus"]).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("pending, sent, parked, skipped, erased"),
        "{stderr}"
    );

    // The good one was sent; sent once more on request, as a message of its own.
    let (sent, _) = eventually(Duration::from_secs(30), || async {
        let (_, stdout, _) = notifications(&data, &["list", "--status", "sent"]).await;
        stdout.lines().nth(1).map(str::to_owned)
    })
    .await
    .expect("a sent message");
    let sent_key = sent.split('\t').next().expect("the key").to_owned();
    let (code, stdout, stderr) = notifications(&data, &["resend", &sent_key]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("message {sent_key} will be sent again as ")),
        "{stdout}"
    );
    let twice = eventually(Duration::from_secs(30), || async {
        let to_good = smtp
            .messages()
            .await
            .iter()
            .filter(|raw| String::from_utf8_lossy(raw).contains(&good))
            .count();
        (to_good == 2).then_some(())
    })
    .await;
    assert!(twice.is_some(), "the resent message did not arrive");
    let (code, _, stderr) = notifications(&data, &["resend", "no-such-key"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("no message has the key"), "{stderr}");
    server.stop().await;
}
