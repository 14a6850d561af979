//! The operator's commands for identity, run beside a server on the same data: `mercato users
//! add` (the password on standard input), `mercato api-keys create|list|revoke`, `mercato
//! signing-keys list|rotate`, and the line `serve` prints while no admin exists.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{Server, ServerData, Setup, eventually, mercato_on};

/// Runs the binary on `data` with `stdin` as its standard input; answers its exit code, stdout
/// and stderr.
pub(crate) async fn run_with_input(
    data: &ServerData,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut command = mercato_on(data, args);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run mercato");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("wait");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn run(data: &ServerData, args: &[&str]) -> (i32, String, String) {
    run_with_input(data, args, "").await
}

async fn accounts_from_the_command_line(setup: Setup, test_name: &str) {
    let Some(data) = ServerData::new(setup, test_name).await else {
        return;
    };
    // Before any admin exists, `serve` says how to make one, in one line.
    let mut serve = mercato_on(&data, &["serve", "--listen", "127.0.0.1:0"]);
    serve
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut serving = serve.spawn().expect("mercato serve");
    let mut lines = BufReader::new(serving.stderr.take().expect("stderr")).lines();
    let hint = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("no admin account") {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("serve printed no line about the missing admin");
    assert!(
        hint.contains("mercato users add --email you@example.com --role admin"),
        "{hint}"
    );
    let _ = serving.kill().await;
    // A weak password, an unknown role: bad usage, nothing made.
    let (code, _, stderr) = run_with_input(
        &data,
        &[
            "users",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
        ],
        "password\n",
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error: password:"), "{stderr}");
    let (code, _, stderr) = run_with_input(
        &data,
        &[
            "users",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "root",
        ],
        "a long admin passphrase\n",
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown role \"root\""), "{stderr}");
    // An admin and an auditor.
    let (code, admin_id, stderr) = run_with_input(
        &data,
        &[
            "users",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
        ],
        "a long admin passphrase\n",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let admin_id = admin_id.trim().to_owned();
    let (code, _, stderr) = run_with_input(
        &data,
        &[
            "users",
            "add",
            "--email",
            "books@example.com",
            "--role",
            "auditor",
            "--name",
            "Bea Books",
        ],
        "ledgers all the way down\n",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let server = Server::start_with(&data, "all", &["--log-format", "text"]).await;
    let anonymous = server.anonymous();
    let admin = server
        .log_in("ops@example.com", "a long admin passphrase")
        .await;
    let admin = server.with_credentials(&admin.access_token);
    let profile: Value = admin.get("/users/me").await.json().await.expect("json");
    assert_eq!(profile["user_id"], admin_id.as_str(), "{profile}");
    assert_eq!(profile["roles"], json!(["admin"]));
    assert_eq!(profile["email_verified"], true);
    let auditor = server
        .log_in("books@example.com", "ledgers all the way down")
        .await;
    let auditor = server.with_credentials(&auditor.access_token);
    assert_eq!(
        auditor.get("/events?limit=1").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        auditor
            .post(
                "/products",
                json!({"name": "x", "description": "x", "price": 1, "stock_qty": 1})
            )
            .await
            .status(),
        StatusCode::FORBIDDEN,
        "an auditor never writes"
    );
    // An API key: shown once, listed without its secret, refused within seconds once revoked.
    let (code, key, stderr) = run(
        &data,
        &[
            "api-keys", "create", "--role", "catalog", "--name", "importer",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("mk_"), "{key}");
    let importer = anonymous.with_credentials(&key);
    let created = importer
        .post(
            "/products",
            json!({"name": "Imported", "description": "x", "price": 2, "stock_qty": 1}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let event: Value = admin
        .get(&format!(
            "/events?after={}&limit=1",
            crate::common::event_position(&created) - 1
        ))
        .await
        .json()
        .await
        .expect("json");
    let key_id = &key[3..19];
    assert_eq!(
        event["events"][0]["metadata"]["actor"],
        format!("service:{key_id}"),
        "{event}"
    );
    let (code, listed, _) = run(&data, &["api-keys", "list"]).await;
    assert_eq!(code, 0);
    assert!(listed.contains(key_id) && listed.contains("importer") && listed.contains("catalog"));
    assert!(!listed.contains(&key), "the secret is never shown again");
    let (code, _, stderr) = run(&data, &["api-keys", "revoke", key_id]).await;
    assert_eq!(code, 0, "{stderr}");
    let refused = eventually(Duration::from_secs(10), || async {
        let status = importer.get("/search").await.status();
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "a revoked key keeps working");
    let (code, _, stderr) = run(&data, &["api-keys", "revoke", key_id]).await;
    assert_eq!(code, 1, "revoking twice: {stderr}");
    // A key rotation: old tokens keep working, the JWKS publishes both keys.
    let (code, before, _) = run(&data, &["signing-keys", "list"]).await;
    assert_eq!(code, 0);
    assert_eq!(before.lines().count(), 2, "a header and one key: {before}");
    let (code, new_kid, stderr) = run(&data, &["signing-keys", "rotate"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (_, after, _) = run(&data, &["signing-keys", "list"]).await;
    assert_eq!(after.lines().count(), 3, "{after}");
    assert!(after.contains(new_kid.trim()));
    assert_eq!(admin.get("/users/me").await.status(), StatusCode::OK);
    let published = eventually(Duration::from_secs(15), || async {
        let jwks: Value = anonymous
            .get("/.well-known/jwks.json")
            .await
            .json()
            .await
            .ok()?;
        (jwks["keys"].as_array()?.len() == 2).then_some(())
    })
    .await;
    assert!(published.is_some(), "the JWKS did not publish the new key");
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_make_accounts_keys_and_rotations_from_the_command_line_embedded() {
    accounts_from_the_command_line(Setup::Embedded, "accounts_cli_embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_make_accounts_keys_and_rotations_from_the_command_line_on_postgres() {
    accounts_from_the_command_line(Setup::PostgresRedis, "accounts_cli_on_postgres").await;
}
