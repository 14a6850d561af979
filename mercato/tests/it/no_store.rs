//! Only the commands that build a shop (`serve`, `migrate`, `seed`, `generate`) create an event
//! store. Every other one, pointed where there is none, fails with exit 1 naming the path or
//! URL, and creates nothing: an auditor who mistyped a path must not be told an empty history
//! verifies.

use eventstore::testing::TestDatabase;

use crate::common::mercato_async;

/// The read-only commands, each as an operator or auditor types it.
const COMMANDS: &[&[&str]] = &[
    &["audit", "verify"],
    &["audit", "head"],
    &[
        "audit",
        "state",
        "product/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11",
        "--at",
        "1",
    ],
    &["projections"],
    &["events", "tail"],
    &[
        "events",
        "stream",
        "product/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11",
    ],
    &["events", "correlated", "c-1"],
    &["saga", "status"],
    &["replay", "--all"],
];

async fn refused(args: &[&str], dir: &std::path::Path, database_url: Option<&str>, needle: &str) {
    let mut command = mercato_async();
    command.args(args).current_dir(dir);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    } else {
        command.args(["--data-dir", "typo"]);
    }
    let output = command.output().await.expect("the mercato binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
    assert!(
        stderr.contains("there is no event store at") && stderr.contains(needle),
        "{args:?}: {stderr}"
    );
    assert!(
        !stdout.contains("ok"),
        "{args:?} reported success: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_refuse_a_data_dir_without_a_store_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for args in COMMANDS {
        refused(args, dir.path(), None, "sqlite://typo/mercato.db").await;
    }
    assert!(
        !dir.path().join("typo").exists(),
        "a command created the directory"
    );
    // A file that is not a store is no store either.
    std::fs::create_dir(dir.path().join("typo")).unwrap();
    std::fs::write(dir.path().join("typo/mercato.db"), b"").unwrap();
    refused(&["audit", "verify"], dir.path(), None, "typo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_refuse_a_database_without_a_store() {
    let Some(database) = TestDatabase::create("no_store_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for args in COMMANDS {
        refused(args, dir.path(), Some(database.url()), database.name()).await;
    }
    // Nothing was created in the database either: `migrate` is still the one to do it.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("count tables");
    assert_eq!(tables, 0);
}
