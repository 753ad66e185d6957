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
];

/// Applies every migration not yet recorded. Runs inside an open write transaction.
pub(crate) fn migrate(conn: &Connection, now_us: i64) -> Result<(), OpError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS spooler_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )?;
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
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO spooler_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, now_us],
                )
            })
            .map_err(|e| StoreError::Migration {
                version,
                message: e.to_string(),
            })?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
