//! Embedded, numbered migrations, recorded in `spooler_migrations` and applied inside the writer's
//! `BEGIN IMMEDIATE` transaction, so processes migrating at once apply each exactly once.

use crate::error::OpError;
use rusqlite::{Connection, params};
use spooler_core::StoreError;

/// The migrations, in order: (version, name, SQL). Version numbers match the other backends'.
/// Versions 2 and 3 are PostgreSQL's own.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
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
];

/// The table that records the applied versions.
const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS spooler_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )";

/// Records a version as applied: `?1` version, `?2` name, `?3` time in microseconds.
const RECORD: &str =
    "INSERT INTO spooler_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)";

/// The migrations after version `after` (0 for all), as one SQL script that applies them in a
/// transaction and records each in `spooler_migrations`, as opening the store would: for users
/// who run migrations with their own tool.
pub fn script(after: i64) -> String {
    let mut out = format!(
        "-- spooler's SQLite schema: migrations after version {after}, applied in one transaction.\n\
         BEGIN IMMEDIATE;\n{BOOTSTRAP};\n"
    );
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > after) {
        out.push_str(&format!("\n-- migration {version}: {name}\n"));
        out.push_str(sql.trim_end());
        out.push('\n');
        out.push_str(
            &RECORD
                .replace("?1", &version.to_string())
                .replace("?2", &format!("'{name}'"))
                .replace(
                    "?3",
                    "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
                ),
        );
        out.push_str(";\n");
    }
    out.push_str("\nCOMMIT;\n");
    out
}

/// Applies every migration not yet recorded. Runs inside an open write transaction.
pub(crate) fn migrate(conn: &Connection, now_us: i64) -> Result<(), OpError> {
    conn.execute_batch(BOOTSTRAP)?;
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM spooler_migrations ORDER BY version")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(&newest) = applied.last()
        && newest > known
    {
        tracing::warn!(
            applied = newest,
            known,
            "the database was migrated by a newer spooler; continuing with the older schema"
        );
    }
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        conn.execute_batch(sql)
            .and_then(|_| conn.execute(RECORD, params![version, name, now_us]))
            .map_err(|e| StoreError::Migration {
                version,
                message: e.to_string(),
            })?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
