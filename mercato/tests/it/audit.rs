//! `mercato audit verify` and `mercato audit head` against a store written directly, on SQLite
//! and on PostgreSQL: clean, tampered in SQL, and compared with a recorded head.

use std::process::Output;

use eventstore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::common::{ServerData, Setup};

fn mercato(data: &ServerData, args: &[&str]) -> Output {
    crate::common::mercato()
        .args(args)
        .current_dir(data.data_dir.path())
        .env("DATABASE_URL", data.store_url())
        .output()
        .expect("the mercato binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn event(label: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "ProductViewed".to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: RawValue::from_string(format!(r#"{{"label":"{label}"}}"#)).unwrap(),
        metadata: EventMetadata {
            correlation_id: "audit-test".to_owned(),
            causation_id: String::new(),
            saga_id: None,
            actor: "test".to_owned(),
            source: "mercato-tests".to_owned(),
            traceparent: None,
            tracestate: None,
        },
    }
}

async fn append(store: &dyn EventStore, stream_id: &str, labels: &[&str]) -> Vec<u64> {
    let result = store
        .append(AppendRequest::new(
            "product_views",
            stream_id,
            ExpectedVersion::Any,
            labels.iter().map(|label| event(label)).collect(),
        ))
        .await
        .unwrap();
    result.positions
}

async fn tamper(data: &ServerData, statement: &str) {
    match &data.database {
        Some(database) => {
            let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
            sqlx::raw_sql(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&data.store_url()).await.unwrap();
            sqlx::raw_sql(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn audit_round_trip(data: ServerData) {
    let store = data.store().await;
    append(&*store, "p1", &["a", "b", "c"]).await;
    let positions = append(&*store, "p2", &["d", "e"]).await;
    append(&*store, "p1", &["f"]).await;
    let head_position = store.head_position().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store
        .read_all(0, 100)
        .await
        .unwrap()
        .last()
        .map(|event| event.position)
        != Some(head_position)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let verified = mercato(&data, &["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(text(&verified).contains("events 6"), "{}", text(&verified));

    let head = mercato(&data, &["audit", "head"]);
    assert_eq!(head.status.code(), Some(0), "{}", text(&head));
    let head_text = text(&head);
    let hash = head_text
        .lines()
        .find_map(|line| line.strip_prefix("hash "))
        .expect("audit head prints the hash")
        .to_owned();
    assert_eq!(hash.len(), 64, "{head_text}");
    assert!(head_text.contains("events 6"), "{head_text}");
    let expected = mercato(&data, &["audit", "verify", "--expect-head", &hash]);
    assert_eq!(expected.status.code(), Some(0), "{}", text(&expected));
    let one = mercato(&data, &["audit", "verify", "--stream", "product_views/p1"]);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one));

    for bad in [
        &["audit", "verify", "--stream", "no-slash"][..],
        &["audit", "verify", "--expect-head", "xyz"],
    ] {
        let output = mercato(&data, bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", text(&output));
    }

    let scoped = mercato(
        &data,
        &[
            "audit",
            "verify",
            "--stream",
            "product_views/p1",
            "--expect-head",
            &hash,
        ],
    );
    assert_eq!(scoped.status.code(), Some(2), "{}", text(&scoped));

    // A recorded head keeps verifying as later events extend the history.
    append(&*store, "p3", &["g"]).await;
    let moved = mercato(&data, &["audit", "verify", "--expect-head", &hash]);
    assert_eq!(moved.status.code(), Some(0), "{}", text(&moved));
    assert!(
        text(&moved).contains("expected head found at position")
            && text(&moved).contains("(6 events; 1 stored since)"),
        "{}",
        text(&moved)
    );

    let target = positions[1];
    tamper(
        &data,
        &format!("UPDATE events SET payload = '{{\"label\":\"E\"}}' WHERE position = {target}"),
    )
    .await;
    let tampered = mercato(&data, &["audit", "verify"]);
    assert_eq!(tampered.status.code(), Some(1), "{}", text(&tampered));
    let output = text(&tampered);
    assert!(output.contains(&format!("position {target}")), "{output}");
    assert!(output.contains("product_views/p2 version 2"), "{output}");
    assert!(output.contains("payload or columns changed"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_head_on_the_embedded_store() {
    let data = ServerData::new(Setup::Embedded, "audit_embedded")
        .await
        .unwrap();
    audit_round_trip(data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_head_on_postgres() {
    let Some(database) = eventstore::testing::TestDatabase::create("audit_postgres").await else {
        return;
    };
    let data = ServerData {
        data_dir: tempfile::TempDir::new().unwrap(),
        database: Some(database),
        redis_url: None,
    };
    audit_round_trip(data).await;
}
