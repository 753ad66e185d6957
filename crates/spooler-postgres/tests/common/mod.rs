//! Shared helpers of the Postgres tests: the server URL, fresh schemas and their teardown.

#![allow(dead_code)]

use spooler_core::testing::TestStore;
use spooler_core::{Clock, ManualClock, Store};
use spooler_postgres::{PgOptions, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The variable naming the test server.
pub const VAR: &str = "SPOOLER_TEST_POSTGRES";

/// The test server's URL, or `None` (after printing why the test is skipped) when it is not set.
pub fn url() -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: set {VAR}=postgres://postgres@127.0.0.1:5432/test to run the PostgreSQL tests"
            );
            None
        }
    }
}

/// A schema name no other test uses.
pub fn fresh_schema(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{prefix}_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xff_ffff_ffff,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Options for a test store on `schema` driven by `clock`.
pub fn options(schema: &str, clock: Arc<dyn Clock>) -> PgOptions {
    PgOptions {
        schema: schema.to_string(),
        clock: Some(clock),
        max_connections: 4,
        listener_ping_interval: Duration::from_millis(500),
        ..PgOptions::default()
    }
}

/// Connects a store on `schema`, panicking with the fix when the server named by
/// `SPOOLER_TEST_POSTGRES` cannot be reached.
pub async fn connect(url: &str, options: PgOptions) -> PgStore {
    match PgStore::connect_with(url, options).await {
        Ok(store) => store,
        Err(e) => panic!(
            "{VAR} is set but PostgreSQL cannot be used: {e}\n\
             fix: start PostgreSQL (e.g. on 127.0.0.1:5432 with user postgres) or correct {VAR}"
        ),
    }
}

/// Connects and migrates a store on a fresh schema.
pub async fn fresh_store(url: &str, clock: Arc<dyn Clock>) -> PgStore {
    let store = connect(url, options(&fresh_schema("spt"), clock)).await;
    store.migrate().await.expect("migrate");
    store
}

/// Connects and migrates a store on a fresh schema with one connection, so every statement runs
/// on the same one.
pub async fn one_connection_store(url: &str) -> PgStore {
    let schema = fresh_schema("spt");
    let store = connect(
        url,
        PgOptions {
            max_connections: 1,
            ..options(&schema, Arc::new(spooler_core::SystemClock))
        },
    )
    .await;
    store.migrate().await.expect("migrate");
    store
}

/// How many jobs of `store` match `filter` (SQL over the `jobs` table).
pub async fn count_jobs(store: &PgStore, filter: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM \"{}\".jobs WHERE {filter}",
        store.schema()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("counting jobs where {filter}: {e}"))
}

/// Drops `schema` and everything in it.
pub async fn drop_schema(store: &PgStore) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("dropping schema {}: {e}", store.schema()));
}

/// A conformance [`TestStore`]: a fresh, migrated schema that is dropped after the case.
pub async fn test_store(url: String, clock: Arc<ManualClock>) -> TestStore {
    let store = fresh_store(&url, clock).await;
    let keep = store.clone();
    TestStore {
        store: Arc::new(store) as Arc<dyn Store>,
        teardown: Some(Box::pin(async move { drop_schema(&keep).await })),
        guard: None,
    }
}
