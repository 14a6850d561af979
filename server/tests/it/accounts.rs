//! Accounts over HTTP: registration and email verification, sessions (refresh rotation and
//! reuse, logout), the profile, password changes and resets read from the mail a real mailer
//! sent (the embedded `.eml` outbox, and a real SMTP server), the login throttle, and the same
//! answer for an unknown email as for a wrong password.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Api, Customer, Setup, TestApp, TestData, event_position, eventually};

/// The decoded text of a mail (transfer encodings undone).
fn mail_text(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a mail message");
    message
        .body_text(0)
        .map(|text| text.into_owned())
        .unwrap_or_default()
}

/// The first word of `text` starting with `prefix` (a token of the kind the prefix names).
fn token_in(text: &str, prefix: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '&' || c == '?')
        .find(|word| word.starts_with(prefix) && word.len() > prefix.len() + 20)
        .map(str::to_owned)
}

/// The mails of the embedded outbox (`{data-dir}/mail`), oldest first.
fn outbox(data: &TestData) -> Vec<String> {
    mail::testing::outbox_messages(&data.data_dir.path().join("mail"))
        .iter()
        .map(|raw| mail_text(raw))
        .collect()
}

/// Waits for the `count`th mail of the outbox carrying a token of `prefix`; answers the token.
async fn outbox_token(data: &TestData, prefix: &str, count: usize) -> String {
    let (token, _) = eventually(Duration::from_secs(10), || async {
        let tokens: Vec<String> = outbox(data)
            .iter()
            .filter_map(|text| token_in(text, prefix))
            .collect();
        tokens.get(count - 1).cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no mail with a {prefix} token arrived"));
    token
}

async fn status_and_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn registration_to_profile(setup: Setup, test_name: &str) {
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let anonymous = server.anonymous();
    // Bad input: each refusal names the field to fix.
    for (body, field) in [
        (
            json!({"email": "ann", "password": "a long enough passphrase", "name": "Ann"}),
            "email",
        ),
        (
            json!({"email": "ann@example.com", "password": "short", "name": "Ann"}),
            "password",
        ),
        (
            json!({"email": "ann@example.com", "password": "password123456", "name": "Ann"}),
            "password",
        ),
        (
            json!({"email": "ann@example.com", "password": "a long enough passphrase", "name": " "}),
            "name",
        ),
    ] {
        let (status, problem) = status_and_json(anonymous.post("/users", body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let password = "tea and biscuits at four";
    let registered = anonymous
        .post(
            "/users",
            json!({"email": "Ann.Lee@Example.com", "password": password, "name": "Ann Lee"}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let user_id = registered.json::<Value>().await.expect("json")["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();
    let (status, problem) = status_and_json(
        anonymous
            .post(
                "/users",
                json!({"email": "ann.lee@example.com", "password": password, "name": "Ann"}),
            )
            .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one account per address: {problem}"
    );
    // The verification mail, and the token in it, which works once.
    let token = outbox_token(&data, "ve_", 1).await;
    let verified = anonymous
        .post("/users/verify", json!({"token": token}))
        .await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let verified_at = event_position(&verified);
    let (status, problem) = status_and_json(
        anonymous
            .post("/users/verify", json!({"token": token}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("used"),
        "{problem}"
    );
    // Log in (the address in any case), read and change the profile.
    let session = anonymous.log_in("ann.lee@EXAMPLE.com", password).await;
    let ann = anonymous.with_credentials(&session.access_token);
    let (status, profile) = status_and_json(ann.get_at("/users/me", verified_at).await).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["user_id"], user_id.as_str());
    assert_eq!(profile["email"], "Ann.Lee@example.com");
    assert_eq!(profile["name"], "Ann Lee");
    assert_eq!(profile["email_verified"], true);
    assert_eq!(profile["erased"], false);
    let address = json!({"name": "Ann Lee", "line1": "Via Roma 1", "city": "Roma",
        "postal_code": "00100", "country": "it"});
    // A caller's claim of who it is (the header clients once sent) is not the audit trail's.
    let changed = ann
        .send(
            "/users/me",
            ann.request(reqwest::Method::PATCH, "/users/me")
                .header("x-actor", "admin:mallory")
                .json(&json!({"phone": "+39 06 1234 5678", "addresses": [address]})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let (_, profile) =
        status_and_json(ann.get_at("/users/me", event_position(&changed)).await).await;
    assert_eq!(profile["phone"], "+39 06 1234 5678");
    assert_eq!(profile["addresses"][0]["country"], "IT", "{profile}");
    assert_eq!(profile["name"], "Ann Lee", "an unchanged value stays");
    let (status, problem) = status_and_json(
        ann.patch("/users/me", json!({"addresses": [{"name": "x"}]}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // The event log holds no personal value in the clear.
    let store = data.store().await;
    let events = store
        .read_stream("user", &user_id, 0, 100)
        .await
        .expect("read");
    assert!(
        events.len() >= 4,
        "registered, verified, logged in, changed"
    );
    for event in &events {
        let text = event.payload.get();
        for plain in ["Ann", "ann.lee", "example.com", "1234 5678", "Roma"] {
            assert!(
                !text.contains(plain),
                "{plain} in {}: {text}",
                event.event_type
            );
        }
    }
    assert!(
        events
            .iter()
            .any(|event| event.metadata.actor == format!("user:{user_id}"))
    );
    let profile_changes: Vec<_> = events
        .iter()
        .filter(|event| event.event_type == "UserProfileChanged")
        .collect();
    assert!(!profile_changes.is_empty());
    for event in profile_changes {
        assert_eq!(
            event.metadata.actor,
            format!("user:{user_id}"),
            "X-Actor is ignored"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_registers_verifies_the_email_logs_in_and_keeps_a_profile_embedded() {
    registration_to_profile(Setup::Embedded, "registration_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_registers_verifies_the_email_logs_in_and_keeps_a_profile_on_postgres() {
    registration_to_profile(Setup::PostgresRedis, "registration_on_postgres").await;
}

async fn refresh(api: &Api, refresh_token: &str) -> (StatusCode, Value) {
    status_and_json(
        api.anonymous()
            .post("/sessions/refresh", json!({"refresh_token": refresh_token}))
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "refresh_rotation").await else {
        return;
    };
    let bea = server.register_customer("bea").await;
    let first = bea.session.refresh_token.clone();
    let (status, second) = refresh(&server, &first).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["token_type"], "Bearer");
    assert!(
        second["expires_in"]
            .as_u64()
            .is_some_and(|seconds| seconds <= 900)
    );
    let second_refresh = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(second_refresh, first);
    // The new access token works.
    let renewed = server.with_credentials(second["access_token"].as_str().expect("token"));
    assert_eq!(renewed.get("/users/me").await.status(), StatusCode::OK);
    // The first token again: a copy is in use, so the whole session ends.
    let (status, reused) = refresh(&server, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reused}");
    assert!(
        reused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("used already"),
        "{reused}"
    );
    let (status, _) = refresh(&server, &second_refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the rotated-to token died with its session"
    );
    // Logging out revokes the session's refresh token.
    let session = server.log_in(&bea.email, &bea.password).await;
    let logged_in = server.with_credentials(&session.access_token);
    assert_eq!(
        logged_in.delete("/sessions/current").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        refresh(&server, &session.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&server, "rt_made-up").await.0,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

async fn change_password(customer: &Customer, current: &str, new: &str) -> (StatusCode, Value) {
    status_and_json(
        customer
            .post(
                "/users/me/password",
                json!({"current_password": current, "new_password": new}),
            )
            .await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_current_one_and_ends_every_session() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "password_change").await else {
        return;
    };
    let cleo = server.register_customer("cleo").await;
    let other_session = server.log_in(&cleo.email, &cleo.password).await;
    let (status, problem) =
        change_password(&cleo, "not my password", "a brand new passphrase").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "current_password");
    let (status, problem) = change_password(&cleo, &cleo.password, "qwertyuiop123").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "new_password");
    let (status, _) = change_password(&cleo, &cleo.password, "a brand new passphrase").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for session in [&cleo.session, &other_session] {
        assert_eq!(
            refresh(&server, &session.refresh_token).await.0,
            StatusCode::UNAUTHORIZED,
            "every refresh token of the account is revoked"
        );
    }
    let refused = server
        .anonymous()
        .post(
            "/sessions",
            json!({"email": cleo.email, "password": cleo.password}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    server.log_in(&cleo.email, "a brand new passphrase").await;
    server.stop().await;
}

/// A reset from the request to the new password: the token arrives by mail, works once, only
/// for a reset, only for 30 minutes, and a refused password leaves it usable.
async fn reset_password(server: &TestApp, data: &TestData, read_token: impl AsyncTokens) {
    let dora = server.register_customer("dora").await;
    let anonymous = server.anonymous();
    // An unknown address gets the same answer, and no mail.
    for email in ["nobody@example.com", dora.email.as_str()] {
        let asked = anonymous
            .post("/password-resets", json!({"email": email}))
            .await;
        assert_eq!(asked.status(), StatusCode::ACCEPTED);
    }
    let token = read_token.reset_token(1).await;
    let complete = |token: String, password: &'static str| {
        let anonymous = anonymous.clone();
        async move {
            status_and_json(
                anonymous
                    .post(
                        "/password-resets/complete",
                        json!({"token": token, "new_password": password}),
                    )
                    .await,
            )
            .await
        }
    };
    let (status, problem) = complete(token.clone(), "letmein").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "new_password");
    let (status, problem) = complete(token.clone(), "violets in the window box").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{problem}");
    server
        .log_in(&dora.email, "violets in the window box")
        .await;
    let old = anonymous
        .post(
            "/sessions",
            json!({"email": dora.email, "password": dora.password}),
        )
        .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(server, &dora.session.refresh_token).await.0,
        StatusCode::UNAUTHORIZED,
        "a reset ends every session"
    );
    let (status, problem) = complete(token, "roses on the balcony rail").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "used: {problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("used"),
        "{problem}"
    );
    // A token that expired, and a token for something else, are refused too.
    anonymous
        .post("/password-resets", json!({"email": dora.email}))
        .await;
    let expiring = read_token.reset_token(2).await;
    let secrets = identity::SecretStore::open(&identity::identity_db_url(&data.store_url()))
        .await
        .expect("the secret store");
    identity::sessions::OneTimeTokens::new(secrets)
        .expire(&expiring)
        .await
        .expect("expire");
    let (status, problem) = complete(expiring, "roses on the balcony rail").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{problem}"
    );
    let verification = read_token.verify_token(&dora.email).await;
    let (status, problem) = complete(verification, "roses on the balcony rail").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a foreign token: {problem}"
    );
    let (status, _) = complete(
        "pr_made-up-token-of-no-one-at-all".to_owned(),
        "roses on the balcony rail",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Where a test reads the tokens the shop mailed.
trait AsyncTokens {
    /// The `count`th password-reset token mailed.
    fn reset_token(&self, count: usize) -> impl Future<Output = String>;
    /// The verification token mailed to `email`.
    fn verify_token(&self, email: &str) -> impl Future<Output = String>;
}

struct Outbox<'a>(&'a TestData);

impl AsyncTokens for Outbox<'_> {
    async fn reset_token(&self, count: usize) -> String {
        outbox_token(self.0, "pr_", count).await
    }

    async fn verify_token(&self, email: &str) -> String {
        // The notifier sends it from the log, shortly after the registration.
        let local = email.split('@').next().unwrap_or(email).to_owned();
        let (token, _) = eventually(Duration::from_secs(10), || async {
            let raw = mail::testing::outbox_messages(&self.0.data_dir.path().join("mail"));
            raw.iter()
                .filter(|raw| String::from_utf8_lossy(raw).contains(&local))
                .find_map(|raw| token_in(&mail_text(raw), "ve_"))
        })
        .await
        .expect("the verification mail");
        token
    }
}

struct Smtp<'a>(&'a mail::testing::SmtpServer);

impl Smtp<'_> {
    async fn tokens(&self, prefix: &str, count: usize) -> Vec<String> {
        let (tokens, _) = eventually(Duration::from_secs(10), || async {
            let tokens: Vec<String> = self
                .0
                .messages()
                .await
                .iter()
                .filter_map(|raw| token_in(&mail_text(raw), prefix))
                .collect();
            (tokens.len() >= count).then_some(tokens)
        })
        .await
        .unwrap_or_else(|| panic!("{count} mails with a {prefix} token did not arrive"));
        tokens
    }
}

impl AsyncTokens for Smtp<'_> {
    async fn reset_token(&self, count: usize) -> String {
        self.tokens("pr_", count).await[count - 1].clone()
    }

    async fn verify_token(&self, email: &str) -> String {
        let local = email.split('@').next().unwrap_or(email).to_owned();
        let (token, _) = eventually(Duration::from_secs(10), || async {
            let received = self.0.received().await;
            received
                .iter()
                .filter(|mail| mail.envelope_to.iter().any(|to| to.contains(&local)))
                .find_map(|mail| token_in(&mail_text(&mail.data), "ve_"))
        })
        .await
        .expect("the verification mail");
        token
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_mailed_to_the_outbox_works_once_and_expires() {
    let Some(data) = TestData::new(Setup::Embedded, "reset_outbox").await else {
        return;
    };
    let server = TestApp::start(&data).await;
    reset_password(&server, &data, Outbox(&data)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_mailed_through_a_real_smtp_server_works_once_and_expires() {
    let Some(smtp) = mail::testing::SmtpServer::start("reset_smtp").await else {
        return;
    };
    let Some(data) = TestData::new(Setup::PostgresRedis, "reset_smtp").await else {
        return;
    };
    let server = TestApp::start_with(
        &data,
        "all",
        &[
            "--smtp-url",
            &smtp.url(),
            "--mail-from",
            "shop@mercato.example",
        ],
    )
    .await;
    reset_password(&server, &data, Smtp(&smtp)).await;
    let received = smtp.received().await;
    assert!(
        received
            .iter()
            .all(|mail| mail.envelope_from == "shop@mercato.example")
    );
    assert!(
        !data.data_dir.path().join("mail").exists(),
        "with SMTP_URL nothing goes to the outbox"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_make_the_account_wait_and_an_unknown_email_is_answered_alike() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "login_throttle").await else {
        return;
    };
    let eve = server.register_customer("eve").await;
    let anonymous = server.anonymous();
    let attempt = |email: String, password: &'static str| {
        let anonymous = anonymous.clone();
        async move {
            let started = Instant::now();
            let response = anonymous
                .post("/sessions", json!({"email": email, "password": password}))
                .await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let (status, body) = status_and_json(response).await;
            (status, body, retry_after, started.elapsed())
        }
    };
    // An unknown address and a wrong password: the same answer, after the same work.
    let mut unknown_times = Vec::new();
    let mut wrong_times = Vec::new();
    let mut answers = Vec::new();
    for round in 0..4 {
        let (status, body, _, took) =
            attempt(format!("nobody-{round}@example.com"), "not the password").await;
        unknown_times.push(took);
        answers.push((status, body["detail"].clone()));
        let (status, body, _, took) = attempt(eve.email.clone(), "not the password").await;
        wrong_times.push(took);
        answers.push((status, body["detail"].clone()));
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "the answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    unknown_times.sort();
    wrong_times.sort();
    let ratio = unknown_times[2].as_secs_f64() / wrong_times[2].as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "an unknown email took {unknown_times:?}, a wrong password {wrong_times:?}"
    );
    // The fifth failure of the account starts a wait, which even the right password meets.
    let (status, _, _, _) = attempt(eve.email.clone(), "not the password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, retry_after, _) = attempt(eve.email.clone(), "not the password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=30).contains(&seconds), "{seconds}");
    let leaked = eve.password.clone();
    let refused = anonymous
        .post("/sessions", json!({"email": eve.email, "password": leaked}))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other accounts are not held up.
    let fay = server.register_customer("fay").await;
    server.log_in(&fay.email, &fay.password).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_account_cannot_log_in_or_refresh() {
    let Some((server, _data)) = TestApp::spawn(Setup::Embedded, "deactivation").await else {
        return;
    };
    let gus = server.register_customer("gus").await;
    let deactivated = server
        .post(&format!("/users/{}/deactivate", gus.user_id), json!({}))
        .await;
    assert_eq!(deactivated.status(), StatusCode::OK);
    let refused = server
        .anonymous()
        .post(
            "/sessions",
            json!({"email": gus.email, "password": gus.password}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&server, &gus.session.refresh_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    // An access token of the account, not remembered yet, is refused at once; a remembered one
    // within a minute.
    let refused = gus.get("/users/me").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (_, problem) = status_and_json(refused).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("deactivated or erased"),
        "{problem}"
    );
    let (_, profile) = status_and_json(
        server
            .get_at(
                &format!("/users/{}", gus.user_id),
                event_position(&deactivated),
            )
            .await,
    )
    .await;
    assert_eq!(profile["status"], "deactivated", "{profile}");
    server.stop().await;
}
