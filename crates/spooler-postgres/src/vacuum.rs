//! Upkeep of the job partitions where autovacuum does not keep up (or is off): the maintenance
//! leader vacuums and analyzes it when enough rows changed, so claims never wade through dead
//! index entries or follow a plan made for an empty table.

use crate::PgStore;
use spooler_core::{StoreError, StoreResult};
use std::time::{Duration, Instant};

/// Look at the statistics at most this often.
const EVERY: Duration = Duration::from_secs(5);
/// Act when more rows than `ROWS + live / FRACTION` changed (dead, or modified since analyze).
const ROWS: i64 = 5_000;
const FRACTION: i64 = 20;

/// Looks at the statistics of the job partitions (at most every [`EVERY`]) and vacuums or
/// analyzes those that need it.
pub(crate) async fn housekeep(store: &PgStore) -> StoreResult<()> {
    {
        let mut last = store.inner.last_housekeep.lock().expect("housekeep lock");
        if last.is_some_and(|t| t.elapsed() < EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
    }
    // The hot partition turns over with every job; the finished one grows by inserts and
    // shrinks by pruning, so it rarely needs more than fresh statistics.
    for partition in ["jobs_active", "jobs_done"] {
        store
            .upkeep(&format!("\"{}\".{partition}", store.schema()))
            .await?;
    }
    Ok(())
}

impl PgStore {
    /// Vacuums or analyzes `table` if enough of its rows changed since the last time.
    async fn upkeep(&self, table: &str) -> StoreResult<()> {
        let db = |what: &'static str| {
            move |e: sqlx::Error| StoreError::Database {
                message: format!("{what} {table}: {e}"),
            }
        };
        let stats: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT n_live_tup, n_dead_tup, n_mod_since_analyze
               FROM pg_stat_user_tables WHERE relid = to_regclass($1)",
        )
        .bind(table)
        .fetch_optional(self.pool())
        .await
        .map_err(db("reading the statistics of"))?;
        let Some((live, dead, modified)) = stats else {
            return Ok(());
        };
        let threshold = ROWS + live / FRACTION;
        let command = if dead > threshold {
            "VACUUM (ANALYZE)"
        } else if modified > threshold {
            "ANALYZE"
        } else {
            return Ok(());
        };
        let started = Instant::now();
        let mut conn = self.pool().acquire().await.map_err(db("vacuuming"))?;
        // A vacuum may take longer than the statement timeout of the pool's connections, and
        // must not queue behind a lock (a concurrent vacuum): skip this round instead.
        for set in ["SET statement_timeout = '10min'", "SET lock_timeout = '1s'"] {
            sqlx::query(set)
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(db("vacuuming"))?;
        }
        let result = sqlx::query(sqlx::AssertSqlSafe(format!("{command} {table}")))
            .persistent(false)
            .execute(&mut *conn)
            .await;
        let reset = sqlx::query("RESET ALL")
            .persistent(false)
            .execute(&mut *conn)
            .await;
        if reset.is_err() {
            // Do not hand a connection with odd timeouts back to the pool.
            conn.detach();
        }
        match result {
            Ok(_) => {
                tracing::info!(
                    table = %table,
                    command,
                    live,
                    dead,
                    modified,
                    ms = started.elapsed().as_millis() as u64,
                    "queue table upkeep"
                );
                Ok(())
            }
            Err(e) if is_lock_timeout(&e) => Ok(()),
            Err(e) => Err(db("vacuuming")(e)),
        }
    }
}

fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}
