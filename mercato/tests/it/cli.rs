//! The binary's outside surface: subcommands, exit codes, and one-line `error:` messages.

use std::process::Output;

/// Runs the binary with `args` in `data_dir`, without the machine's configuration.
fn mercato(args: &[&str], data_dir: &std::path::Path) -> Output {
    crate::common::mercato()
        .args(args)
        .current_dir(data_dir)
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
fn replay_from_a_position_is_refused_unless_the_operator_says_it_drops_history() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["replay", "--all", "--from", "600"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("positions 1 to 600")
            && stderr.contains("products, orders, carts, popularity, search")
            && stderr.contains("--drop-earlier-events"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was opened");
    let output = mercato(&["replay", "--all", "--drop-earlier-events"], dir.path());
    assert_eq!(output.status.code(), Some(2), "the flag needs --from");
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

/// `mercato projections` shows a parked projection where and why; `retry NAME` clears the park
/// (a running server then applies the event again), says so when there was none, and names the
/// projections when NAME is none of them.
#[tokio::test]
async fn projections_shows_a_park_and_retry_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = mercato(&["migrate", "--data-dir", "shop"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let db = projections::readdb::ReadDb::open(&format!(
        "sqlite://{}",
        dir.path().join("shop/mercato-read.db").display()
    ))
    .await
    .unwrap();
    let park = projections::Park {
        position: 7,
        event_type: "ProductUpdated".to_owned(),
        stream: "product/p-7".to_owned(),
        reason: "read model database: refused".to_owned(),
        parked_at: "2026-12-06T21:00:00Z".to_owned(),
    };
    db.park("products", &park).await.unwrap();

    let listing = mercato(&["projections", "--data-dir", "shop"], dir.path());
    assert_eq!(listing.status.code(), Some(0), "{}", stderr_of(&listing));
    let stdout = String::from_utf8_lossy(&listing.stdout);
    let products = stdout
        .lines()
        .find(|line| line.starts_with("products "))
        .unwrap_or_default();
    assert!(
        products.contains(
            "parked at position 7 (ProductUpdated of product/p-7) since 2026-12-06T21:00:00Z: read model database: refused"
        ) && products.contains("mercato projections retry products"),
        "{stdout}"
    );
    assert!(
        !stdout
            .lines()
            .any(|line| line.starts_with("orders ") && line.contains("parked"))
    );

    let retried = mercato(
        &["projections", "retry", "products", "--data-dir", "shop"],
        dir.path(),
    );
    assert_eq!(retried.status.code(), Some(0), "{}", stderr_of(&retried));
    let stdout = String::from_utf8_lossy(&retried.stdout);
    assert!(
        stdout.starts_with("products: park cleared;") && stdout.contains("position 7"),
        "{stdout}"
    );
    assert_eq!(db.parked("products").await.unwrap(), None);

    let again = mercato(
        &["projections", "retry", "products", "--data-dir", "shop"],
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "products is not parked: nothing to retry\n"
    );

    let unknown = mercato(
        &["projections", "retry", "nope", "--data-dir", "shop"],
        dir.path(),
    );
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = stderr_of(&unknown);
    assert!(
        stderr.starts_with("error: there is no projection named \"nope\"")
            && stderr.contains("products, orders, carts, popularity, search, users, checkout_saga"),
        "{stderr}"
    );
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
        let output = mercato(args, dir.path());
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
    let output = crate::common::mercato()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("OPENSEARCH_URL", "http://admin:hunter2@127.0.0.1:1")
        .output()
        .expect("the mercato binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("OPENSEARCH_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    let output = crate::common::mercato()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("OPENSEARCH_URL", "not a url")
        .output()
        .expect("the mercato binary runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
}

#[test]
fn elasticsearch_url_alone_puts_replay_and_projections_on_the_cluster_it_names() {
    let dir = tempfile::tempdir().unwrap();
    // replay and projections open a store that exists.
    let migrated = mercato(&["migrate", "--data-dir", "shop"], dir.path());
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr_of(&migrated));
    for args in [
        &["replay", "--projection", "search"][..],
        &["projections"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let output = crate::common::mercato()
            .args(args)
            .args(["--data-dir", "shop"])
            .current_dir(dir.path())
            .env("ELASTICSEARCH_URL", "http://elastic:hunter2@127.0.0.1:1")
            .output()
            .expect("the mercato binary runs");
        let stderr = stderr_of(&output);
        if args[0] == "projections" {
            // The projections' checkpoints are in the database; the cluster is not asked.
            assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("127.0.0.1:1"),
            "{args:?} names the URL: {stderr}"
        );
        assert!(stderr.contains("OPENSEARCH_URL"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "{args:?}: the password leaked: {stderr}"
        );
    }
    // An OPENSEARCH_URL set as well wins over the alias.
    let output = crate::common::mercato()
        .args(["config"])
        .env("ELASTICSEARCH_URL", "http://es:9200")
        .env("OPENSEARCH_URL", "http://os:9200")
        .output()
        .expect("the mercato binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains("opensearch_url = \"http://os:9200\""),
        "{stdout}"
    );
}

#[test]
fn config_prints_a_config_file_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let printed = mercato(
        &[
            "config",
            "--role",
            "query-api",
            "--redis-url",
            "redis://user:hunter2@cache:6379/0",
            "--payment-timeout",
            "12.5",
        ],
        dir.path(),
    );
    assert_eq!(printed.status.code(), Some(0), "{}", stderr_of(&printed));
    let text = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("masked"), "{text}");
    std::fs::write(dir.path().join("printed.toml"), &text).unwrap();
    let again = mercato(&["config", "--config", "printed.toml"], dir.path());
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);
}

#[test]
fn a_config_file_value_out_of_range_is_refused_as_the_flag_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mercato.toml"), "kafka_partitions = 0\n").unwrap();
    let from_file = mercato(&["config", "--config", "mercato.toml"], dir.path());
    let from_flag = mercato(&["config", "--kafka-partitions", "0"], dir.path());
    for output in [&from_file, &from_flag] {
        assert_eq!(output.status.code(), Some(2), "{}", stderr_of(output));
        let stderr = stderr_of(output);
        assert!(stderr.contains("from 1 to 1000"), "{stderr}");
    }
    assert!(
        stderr_of(&from_file).contains("kafka_partitions"),
        "{}",
        stderr_of(&from_file)
    );
}
