//! Embedded, versioned migrations, applied under a transaction-scoped advisory lock keyed on the
//! schema name, so several processes starting at once is safe: one migrates, the others wait and
//! find nothing left to do.

use crate::error::map;
use chrono::{DateTime, Utc};
use spooler_core::{StoreError, StoreResult};
use sqlx::{Acquire, Executor, PgPool};

/// Every migration: version, name and SQL with a `{schema}` placeholder. Version 1 is the SQLite
/// store's version 1; versions 2 (finished jobs in their own partition) and 3 (the claim from one
/// queue as a function with a kept plan) are this store's own; versions 4 (operations by filter) and 5
/// (queue defaults) are both stores'; versions 10 (enqueue from SQL) and 14 (the
/// write of outcomes as a function with a kept plan) are this store's own.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "split_finished",
        include_str!("../migrations/0002_split_finished.sql"),
    ),
    (
        3,
        "claim_function",
        include_str!("../migrations/0003_claim_function.sql"),
    ),
    (
        4,
        "operations",
        include_str!("../migrations/0004_operations.sql"),
    ),
    (
        5,
        "queue_settings",
        include_str!("../migrations/0005_queue_settings.sql"),
    ),
    (
        6,
        "schedules",
        include_str!("../migrations/0006_schedules.sql"),
    ),
    (
        7,
        "queue_retention",
        include_str!("../migrations/0007_queue_retention.sql"),
    ),
    (8, "routes", include_str!("../migrations/0008_routes.sql")),
    (
        9,
        "queue_control",
        include_str!("../migrations/0009_queue_control.sql"),
    ),
    (
        10,
        "sql_enqueue",
        include_str!("../migrations/0010_sql_enqueue.sql"),
    ),
    (
        11,
        "job_meta",
        include_str!("../migrations/0011_job_meta.sql"),
    ),
    (
        12,
        "routed_from_index",
        include_str!("../migrations/0012_routed_from_index.sql"),
    ),
    (13, "stats", include_str!("../migrations/0013_stats.sql")),
    (
        14,
        "finish_function",
        include_str!("../migrations/0014_finish_function.sql"),
    ),
    (
        15,
        "lease_index",
        include_str!("../migrations/0015_lease_index.sql"),
    ),
];

/// Maps a failure of `version` (0 for the bookkeeping around migrations) to a [`StoreError`].
fn fail(schema: &str, version: i64, e: sqlx::Error) -> StoreError {
    match map(e) {
        StoreError::Unavailable { message } => StoreError::Unavailable { message },
        other => StoreError::Migration {
            version,
            message: format!("schema {schema}: {other}"),
        },
    }
}

/// The statements around the migrations of `schema` (a validated identifier), shared by
/// [`run`] and [`script`].
struct Bookkeeping {
    name: String,
    quoted: String,
}

impl Bookkeeping {
    fn new(schema: &str) -> Self {
        Self {
            name: schema.to_string(),
            quoted: format!("\"{schema}\""),
        }
    }

    /// Serialises migrators of one schema until the transaction ends.
    const LOCK: &'static str =
        "SELECT pg_advisory_xact_lock(hashtextextended('spooler.migrate.' || $1, 0))";

    /// The schema and the table that records the applied versions.
    fn bootstrap(&self) -> String {
        let quoted = &self.quoted;
        format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.spooler_migrations (
             version    bigint PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL
         );"
        )
    }

    /// One migration's SQL for this schema: `{schema}` is the quoted identifier, `{name}` the bare
    /// name (in channel names).
    fn migration(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.quoted)
            .replace("{name}", &self.name)
    }

    /// Records a version as applied: `$1` version, `$2` name, `$3` time.
    fn record(&self) -> String {
        format!(
            "INSERT INTO {}.spooler_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            self.quoted
        )
    }
}

/// The migrations after version `after` (0 for all) of `schema`, as one SQL script that applies
/// them in a transaction and records each in `spooler_migrations`, as `spooler migrate` would: for
/// users who run migrations with their own tool. `schema` must be a validated identifier.
pub fn script(schema: &str, after: i64) -> String {
    let book = Bookkeeping::new(schema);
    let mut out = format!(
        "-- spooler's PostgreSQL schema {quoted}: migrations after version {after}, applied in one transaction.\n\
         BEGIN;\n\
         SET LOCAL statement_timeout = 0;\n\
         {lock};\n\
         {bootstrap}\n",
        quoted = book.quoted,
        lock = Bookkeeping::LOCK.replace("$1", &format!("'{schema}'")),
        bootstrap = book.bootstrap(),
    );
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > after) {
        out.push_str(&format!("\n-- migration {version}: {name}\n"));
        out.push_str(book.migration(sql).trim_end());
        out.push('\n');
        out.push_str(
            &book
                .record()
                .replace("$1", &version.to_string())
                .replace("$2", &format!("'{name}'"))
                .replace("$3", "now()"),
        );
        out.push_str(";\n");
    }
    out.push_str("\nCOMMIT;\n");
    out
}

/// Applies pending migrations to `schema` (a validated identifier).
pub(crate) async fn run(pool: &PgPool, schema: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let book = Bookkeeping::new(schema);
    let quoted = &book.quoted;
    let bootstrap = book.bootstrap();
    let applied_sql = format!("SELECT version FROM {quoted}.spooler_migrations ORDER BY version");
    let record_sql = book.record();
    let mut conn = pool.acquire().await.map_err(map)?;
    let mut tx = conn.begin().await.map_err(map)?;
    // Migrating a large table may take longer than the statement timeout used for queue work.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(|e| fail(schema, 0, e))?;
    sqlx::query(Bookkeeping::LOCK)
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail(schema, 0, e))?;
    tx.execute(sqlx::AssertSqlSafe(bootstrap))
        .await
        .map_err(|e| fail(schema, 0, e))?;
    let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(applied_sql))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| fail(schema, 0, e))?;
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        tracing::info!(schema, version, name, "applying migration");
        let sql = book.migration(sql);
        tx.execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| fail(schema, version, e))?;
        sqlx::query(sqlx::AssertSqlSafe(record_sql.as_str()))
            .bind(version)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(schema, version, e))?;
    }
    tx.commit().await.map_err(|e| fail(schema, 0, e))?;
    Ok(())
}
