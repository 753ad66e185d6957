//! Leader election (one row per led name, taken over when it expires), and the leader's housekeeping.

use crate::PgStore;
use crate::error::map;
use async_trait::async_trait;
use spooler_core::clock::add;
use spooler_core::store::LeaderStore;
use spooler_core::{LeaderElect, StoreResult};

/// Takes the row when it is free, held by the asker, or expired; returns a row only on success.
pub(crate) const ELECT_SQL: &str =
    "INSERT INTO {s}.leaders AS l (name, holder, elected_at, expires_at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO UPDATE
       SET holder = EXCLUDED.holder,
           expires_at = EXCLUDED.expires_at,
           elected_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.elected_at
                             ELSE EXCLUDED.elected_at END
     WHERE l.holder = EXCLUDED.holder OR l.expires_at < EXCLUDED.elected_at
    RETURNING holder";

/// Gives the row up, if `$2` holds it.
pub(crate) const RESIGN_SQL: &str = "DELETE FROM {s}.leaders WHERE name = $1 AND holder = $2";

#[async_trait]
impl LeaderStore for PgStore {
    async fn leader_try_elect(&self, elect: &LeaderElect) -> StoreResult<bool> {
        let now = self.inner.clock.now();
        let row = sqlx::query(&self.inner.sql.leader_elect)
            .bind(&elect.name)
            .bind(&elect.holder)
            .bind(now)
            .bind(add(now, elect.ttl))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(row.is_some())
    }

    async fn leader_resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query(&self.inner.sql.leader_resign)
            .bind(name)
            .bind(holder)
            .execute(&self.inner.pool)
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Vacuums and analyzes the job partitions when autovacuum lags (see `vacuum`).
    async fn housekeep(&self) -> StoreResult<()> {
        crate::vacuum::housekeep(self).await
    }
}
