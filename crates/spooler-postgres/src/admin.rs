//! Administrative operations outside the `Store` trait: dropping a store's schema (tests, benchmarks).

use crate::PgStore;
use spooler_core::{StoreError, StoreResult};

impl PgStore {
    /// Drops this store's schema and everything in it. For tests and benchmarks that made a
    /// schema of their own; the store is unusable afterwards.
    pub async fn drop_schema(&self) -> StoreResult<()> {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema());
        sqlx::query(&sql)
            .execute(self.pool())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Database {
                message: format!("dropping schema {}: {e}", self.schema()),
            })
    }
}
