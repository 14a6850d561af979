//! Leases (`projections::lease`), the same cases on SQLite and on PostgreSQL (when
//! `DATABASE_URL` names one): one holder at a time, a fence that grows with each new holder, a
//! checkpoint that only the current holder can store, renewal that notices a lost lease, and a
//! standby that takes over as soon as the lease is given up.

use eventstore::testing::TestDatabase;
use projections::readdb::ReadDb;
use tempfile::TempDir;

/// A read-model database of the test's own, and what keeps it alive.
struct Db {
    db: ReadDb,
    url: String,
    _directory: Option<TempDir>,
    _database: Option<TestDatabase>,
}

async fn sqlite() -> Db {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("read.db").display());
    Db {
        db: ReadDb::open(&url).await.unwrap(),
        url,
        _directory: Some(directory),
        _database: None,
    }
}

async fn postgres(test_name: &str) -> Option<Db> {
    let database = TestDatabase::create(test_name).await?;
    Some(Db {
        db: ReadDb::open(database.url()).await.unwrap(),
        url: database.url().to_owned(),
        _directory: None,
        _database: Some(database),
    })
}

macro_rules! lease_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = super::sqlite().await;
                    super::cases::$case(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_name = concat!("lease_suite_", stringify!($case));
                    let Some(db) = super::postgres(test_name).await else {
                        return;
                    };
                    super::cases::$case(&db).await;
                }
            )*
        }
    };
}

lease_suite!(
    one_owner_holds_a_lease_until_it_expires_and_each_new_holder_gets_a_greater_fence,
    a_lease_given_up_is_free_at_once_but_only_its_holder_can_give_it_up,
    only_the_current_holder_moves_a_fenced_checkpoint,
    keeping_a_lease_notices_at_once_that_another_process_took_it,
    a_standby_takes_the_lease_over_as_soon_as_its_holder_gives_it_up,
    a_lease_table_made_before_fences_gets_its_fence_column,
);

mod cases {
    use std::time::Duration;

    use projections::ProjectionError;
    use projections::lease::{
        Lease, LeaseRow, Tenure, acquire_lease, lease_row, now_ms, release_lease,
    };
    use projections::readdb::ReadDb;
    use tokio_util::sync::CancellationToken;

    const NAME: &str = "test_lease";

    pub async fn one_owner_holds_a_lease_until_it_expires_and_each_new_holder_gets_a_greater_fence(
        test: &super::Db,
    ) {
        let db = &test.db;
        let now = 1_000_000;
        assert_eq!(
            acquire_lease(db, NAME, "a", now, now + 6_000)
                .await
                .unwrap(),
            Some(1),
            "a free lease is taken"
        );
        assert_eq!(
            acquire_lease(db, NAME, "b", now + 1_000, now + 7_000)
                .await
                .unwrap(),
            None,
            "another process cannot take a lease that holds"
        );
        assert_eq!(
            acquire_lease(db, NAME, "a", now + 2_000, now + 8_000)
                .await
                .unwrap(),
            Some(1),
            "renewing keeps the fence"
        );
        assert_eq!(
            acquire_lease(db, NAME, "b", now + 7_999, now + 13_999)
                .await
                .unwrap(),
            None,
            "the renewal moved the expiry"
        );
        // Another lease of the same table is independent.
        assert_eq!(
            acquire_lease(db, "other", "b", now, now + 6_000)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            acquire_lease(db, NAME, "b", now + 8_001, now + 14_001)
                .await
                .unwrap(),
            Some(2),
            "an expired lease is taken over, with a greater fence"
        );
        assert_eq!(
            acquire_lease(db, NAME, "a", now + 9_000, now + 15_000)
                .await
                .unwrap(),
            None,
            "the holder whose lease expired has lost it"
        );
        assert_eq!(
            lease_row(db, NAME).await.unwrap(),
            Some(LeaseRow {
                owner: "b".to_owned(),
                expires_at: now + 14_001,
                fence: 2
            })
        );
        assert_eq!(lease_row(db, "never").await.unwrap(), None);
    }

    pub async fn a_lease_given_up_is_free_at_once_but_only_its_holder_can_give_it_up(
        test: &super::Db,
    ) {
        let db = &test.db;
        let now = now_ms();
        assert_eq!(
            acquire_lease(db, NAME, "a", now, now + 60_000)
                .await
                .unwrap(),
            Some(1)
        );
        release_lease(db, NAME, "b").await.unwrap();
        assert_eq!(
            acquire_lease(db, NAME, "b", now, now + 60_000)
                .await
                .unwrap(),
            None,
            "only the holder gives a lease up"
        );
        release_lease(db, NAME, "a").await.unwrap();
        assert_eq!(
            acquire_lease(db, NAME, "a", now, now + 60_000)
                .await
                .unwrap(),
            Some(2),
            "taken again after giving it up: a new holding, a greater fence"
        );
        release_lease(db, NAME, "a").await.unwrap();
        assert_eq!(
            acquire_lease(db, NAME, "b", now, now + 60_000)
                .await
                .unwrap(),
            Some(3),
            "a given-up lease is free long before it would have expired"
        );
    }

    /// The holding of `owner`, taken at `now`.
    async fn hold(db: &ReadDb, owner: &str, now: i64) -> Tenure {
        let fence = acquire_lease(db, NAME, owner, now, now + 6_000)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{owner} takes the lease"));
        Tenure {
            name: NAME.to_owned(),
            owner: owner.to_owned(),
            fence,
        }
    }

    async fn commit(db: &ReadDb, position: u64, tenure: &Tenure) -> Result<(), ProjectionError> {
        db.begin_write()
            .await
            .unwrap()
            .commit_at_holding("fenced", position, tenure)
            .await
    }

    pub async fn only_the_current_holder_moves_a_fenced_checkpoint(test: &super::Db) {
        let db = &test.db;
        let now = 1_000_000;
        let first = hold(db, "a", now).await;
        commit(db, 10, &first).await.unwrap();
        assert_eq!(db.checkpoint("fenced").await.unwrap(), 10);
        // a stalls past its lease; b takes over and moves on.
        let second = hold(db, "b", now + 7_000).await;
        assert!(second.fence > first.fence);
        let refused = commit(db, 20, &first).await;
        assert!(
            matches!(&refused, Err(ProjectionError::LeaseLost { name }) if name == NAME),
            "{refused:?}"
        );
        assert_eq!(
            db.checkpoint("fenced").await.unwrap(),
            10,
            "the checkpoint of a holder that lost its lease is not stored"
        );
        commit(db, 30, &second).await.unwrap();
        assert_eq!(db.checkpoint("fenced").await.unwrap(), 30);
        // a takes the lease again later: its earlier holding stays refused, its new one is not.
        release_lease(db, NAME, "b").await.unwrap();
        let third = hold(db, "a", now + 8_000).await;
        assert!(commit(db, 40, &first).await.is_err());
        assert!(commit(db, 40, &second).await.is_err());
        commit(db, 50, &third).await.unwrap();
        assert_eq!(db.checkpoint("fenced").await.unwrap(), 50);
    }

    pub async fn keeping_a_lease_notices_at_once_that_another_process_took_it(test: &super::Db) {
        let db = &test.db;
        let ttl = Duration::from_millis(600);
        let lease = Lease::new(db.clone(), NAME, "a".to_owned(), ttl);
        lease.try_acquire().await.unwrap().expect("a free lease");
        let held = CancellationToken::new();
        let keeper = {
            let (lease, held) = (lease.clone(), held.clone());
            tokio::spawn(async move { lease.keep(held).await })
        };
        // Renewed past its first time to live: still held.
        tokio::time::sleep(ttl * 2).await;
        assert!(!held.is_cancelled(), "a renewed lease stays held");
        let row = lease_row(db, NAME).await.unwrap().expect("row");
        assert_eq!(row.owner, "a");
        assert!(row.expires_at > now_ms(), "renewed: {row:?}");
        // Another process takes it (as after a stall of a's renewals: its clock is past any
        // expiry a's renewals could have stored meanwhile).
        let later = now_ms() + 60_000;
        assert!(
            acquire_lease(db, NAME, "b", later, later + 60_000)
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::timeout(ttl, held.cancelled())
            .await
            .expect("the holding is cancelled within a third of the time to live");
        keeper.await.unwrap();
        assert_eq!(lease.try_acquire().await.unwrap(), None);
    }

    pub async fn a_standby_takes_the_lease_over_as_soon_as_its_holder_gives_it_up(
        test: &super::Db,
    ) {
        let db = &test.db;
        let ttl = Duration::from_secs(3);
        let holder = Lease::new(db.clone(), NAME, "a".to_owned(), ttl);
        let standby = Lease::new(db.clone(), NAME, "b".to_owned(), ttl);
        let first = holder.try_acquire().await.unwrap().expect("a free lease");
        let shutdown = CancellationToken::new();
        let waiting = {
            let (standby, shutdown) = (standby.clone(), shutdown.clone());
            tokio::spawn(async move { standby.acquire(&shutdown).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the standby waits while a holds");
        let released = std::time::Instant::now();
        holder.release().await;
        let second = tokio::time::timeout(ttl, waiting)
            .await
            .expect("the standby takes over within a third of the time to live, not at expiry")
            .unwrap()
            .expect("not shut down");
        assert!(released.elapsed() < ttl, "{:?}", released.elapsed());
        assert_eq!(second.owner, "b");
        assert!(second.fence > first.fence);
        // A standby that shuts down stops waiting.
        let waiting = {
            let (holder, shutdown) = (holder.clone(), shutdown.clone());
            tokio::spawn(async move { holder.acquire(&shutdown).await })
        };
        shutdown.cancel();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), waiting)
                .await
                .expect("stops at shutdown")
                .unwrap(),
            None
        );
    }

    pub async fn a_lease_table_made_before_fences_gets_its_fence_column(test: &super::Db) {
        let db = &test.db;
        // The table as the checkout saga made it, with its lease held.
        for statement in [
            "DROP TABLE saga_leases",
            "CREATE TABLE saga_leases (
                name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at BIGINT NOT NULL)",
            "INSERT INTO saga_leases (name, owner, expires_at) VALUES ('checkout', 'old', 5000)",
        ] {
            sqlx::query(statement).execute(db.pool()).await.unwrap();
        }
        let reopened = ReadDb::open(&test.url).await.unwrap();
        assert_eq!(
            lease_row(&reopened, "checkout").await.unwrap(),
            Some(LeaseRow {
                owner: "old".to_owned(),
                expires_at: 5000,
                fence: 0
            })
        );
        assert_eq!(
            acquire_lease(&reopened, "checkout", "new", 6000, 12_000)
                .await
                .unwrap(),
            Some(1),
            "the expired lease of a process of the previous release is taken over"
        );
    }
}
