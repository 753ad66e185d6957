//! Embedded, numbered migrations, recorded in `spooler_migrations` and applied inside the writer's
//! `BEGIN IMMEDIATE` transaction, so processes migrating at once apply each exactly once.

use crate::error::OpError;
use rusqlite::{Connection, params};
use spooler_core::StoreError;

/// The migrations, in order: (version, name, SQL). Version numbers match the other backends'.
/// Versions 2, 3, 10, 14 and 15 are PostgreSQL's own.
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
    (
        16,
        "state_check",
        include_str!("../migrations/0016_state_check.sql"),
    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies the migrations up to `version` as `migrate` would have then.
    fn migrated_to(conn: &Connection, version: i64) {
        conn.execute_batch(BOOTSTRAP).unwrap();
        for &(v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= version) {
            conn.execute_batch(sql).unwrap();
            conn.execute(RECORD, params![v, name, 0]).unwrap();
        }
    }

    fn all_rows(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn
            .prepare("SELECT * FROM spooler_jobs ORDER BY id")
            .unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |r| (0..columns).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        conn.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'spooler_jobs' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    /// Version 16 rebuilds the jobs table: every row, column and index is kept, and so is the
    /// AUTOINCREMENT counter when the newest jobs were deleted; the check still refuses a state
    /// no job has.
    #[test]
    fn the_state_check_rebuild_keeps_every_job_index_and_id() {
        let conn = Connection::open_in_memory().unwrap();
        migrated_to(&conn, 13);
        conn.execute_batch(
            "INSERT INTO spooler_jobs (queue, kind, args, state, priority, attempt, max_attempts,
                 run_at, created_at, started_at, finished_at, unique_key, tags, result,
                 lease_expires_at, worker_id, routed_from, fence, origin, meta)
             VALUES
                 ('q', 'a', '{\"n\":1}', 'completed', 0, 1, 3, 10, 10, 11, 12, NULL, '[]', '7',
                  NULL, NULL, NULL, 1, NULL, NULL),
                 ('q', 'b', '{}', 'running', 5, 2, 3, 20, 20, 21, NULL, 'k1', '[\"t\"]', NULL,
                  99, 'w1', 1, 2, 'route', '{\"traceparent\":\"x\"}'),
                 ('r', 'c', '{}', 'scheduled', 0, 0, 1, 90, 30, NULL, NULL, NULL, '[]', NULL,
                  NULL, NULL, NULL, 0, NULL, NULL),
                 ('r', 'd', '{}', 'available', 0, 0, 1, 40, 40, NULL, NULL, NULL, '[]', NULL,
                  NULL, NULL, NULL, 0, NULL, NULL);
             DELETE FROM spooler_jobs WHERE id = 4;",
        )
        .unwrap();
        let before = all_rows(&conn);
        let fresh = Connection::open_in_memory().unwrap();
        migrate(&fresh, 0).unwrap();

        migrate(&conn, 0).unwrap();

        assert_eq!(all_rows(&conn), before);
        assert_eq!(schema(&conn), schema(&fresh));
        let indexes: Vec<String> = schema(&conn).into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            indexes,
            [
                "spooler_jobs",
                "spooler_jobs_claim",
                "spooler_jobs_finished",
                "spooler_jobs_lease",
                "spooler_jobs_routed_from",
                "spooler_jobs_scheduled",
                "spooler_jobs_unique",
            ]
        );
        let next: i64 = conn
            .query_row(
                "INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at)
                 VALUES ('q', 'e', '{}', 'available', 1, 50, 50) RETURNING id",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, 5, "an id of a deleted job was given again");
        let refused = conn.execute(
            "INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at)
             VALUES ('q', 'e', '{}', 'done', 1, 50, 50)",
            [],
        );
        assert!(refused.is_err(), "a state no job has was written");
        for state in [
            "scheduled",
            "available",
            "running",
            "completed",
            "failed",
            "cancelled",
        ] {
            conn.execute("UPDATE spooler_jobs SET state = ?1 WHERE id = 5", [state])
                .unwrap();
        }
        let unique_taken = conn.execute(
            "INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at,
                 unique_key)
             VALUES ('q', 'e', '{}', 'available', 1, 50, 50, 'k1')",
            [],
        );
        assert!(unique_taken.is_err(), "the unique index was not rebuilt");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }
}
