//! The binary's outside surface: subcommands, exit codes, and one-line `error:` messages.

use std::process::{Command, Output};

fn mercato(args: &[&str], data_dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mercato"))
        .args(args)
        .current_dir(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("MERCATO_CONFIG")
        .env_remove("MERCATO_DATA_DIR")
        .output()
        .expect("the mercato binary runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand_of_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["--help"], dir.path());
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["serve", "seed", "replay", "events", "audit", "migrate"] {
        assert!(
            help.contains(subcommand),
            "{subcommand} missing from:\n{help}"
        );
    }
}

#[test]
fn bad_usage_exits_2_with_one_error_line_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["replay"][..],
        &["serve", "--listen", "nowhere"],
        &["no-such-command"],
    ] {
        let output = mercato(args, dir.path());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn replay_needs_a_target_and_names_the_read_models_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["replay", "--projection", "nope"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("error: there is no read model named \"nope\"")
            && stderr.contains("products, orders, carts, popularity, search"),
        "{stderr}"
    );
}

#[test]
fn seed_loads_the_shipped_catalogue_once() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["seed", "--data-dir", "shop"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        stdout.starts_with("seeded 280 products (0 were there already)"),
        "{stdout}"
    );
    let again = mercato(&["seed", "--data-dir", "shop"], dir.path());
    let stdout = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(
        stdout.starts_with("seeded 0 products (280 were there already)"),
        "{stdout}"
    );
}

#[test]
fn seed_refuses_a_catalogue_that_is_not_a_list_of_products() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.json"),
        r#"[{"name":"x","price":"free"}]"#,
    )
    .unwrap();
    let output = mercato(
        &["seed", "--data-dir", "shop", "--file", "bad.json"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("error: the catalogue is not a JSON array"),
        "{stderr}"
    );
    assert!(stderr.contains("price"), "{stderr}");
}

#[test]
fn migrate_creates_the_embedded_store_under_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["migrate", "--data-dir", "shop"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(dir.path().join("shop/mercato.db").exists());
    assert!(
        dir.path().join("shop/mercato-read.db").exists(),
        "the read models' database is created too"
    );
    // Applying them again changes nothing and succeeds.
    let again = mercato(&["migrate", "--data-dir", "shop"], dir.path());
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
}

#[test]
fn migrate_against_an_unreachable_database_exits_1_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(
        &[
            "migrate",
            "--database-url",
            "postgres://mercato:secret@127.0.0.1:1/shop",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot apply migrations"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
}

#[test]
fn an_unsupported_database_url_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(
        &["migrate", "--database-url", "mysql://db/shop"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("postgres://"));
}

#[test]
fn kafka_roles_and_commands_without_brokers_are_bad_usage_naming_kafka_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--role", "relay", "--listen", "127.0.0.1:0"][..],
        &[
            "serve",
            "--role",
            "projector",
            "--source",
            "kafka",
            "--listen",
            "127.0.0.1:0",
        ],
        &["dlq", "list"],
        &["dlq", "replay"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mercato"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("KAFKA_BOOTSTRAP")
            .env_remove("DATABASE_URL")
            .output()
            .expect("the mercato binary runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains("KAFKA_BOOTSTRAP"), "{args:?}: {stderr}");
    }
    let output = mercato(
        &[
            "dlq",
            "list",
            "--topic",
            "refunds.events",
            "--kafka-bootstrap",
            "127.0.0.1:1",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("orders.events"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn an_unreachable_search_cluster_stops_serve_naming_opensearch_url() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mercato"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("OPENSEARCH_URL", "http://admin:hunter2@127.0.0.1:1")
        .output()
        .expect("the mercato binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("OPENSEARCH_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_mercato"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("OPENSEARCH_URL", "not a url")
        .output()
        .expect("the mercato binary runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
}
