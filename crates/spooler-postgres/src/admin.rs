//! Administrative operations outside the `Store` trait: dropping a store's schema (tests, benchmarks).

use crate::PgStore;
use spooler_core::{StoreError, StoreResult};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

impl PgStore {
    /// Drops this store's schema and everything in it. For tests and benchmarks that made a
    /// schema of their own; the store is unusable afterwards. Its pool is closed first (within
    /// 10 s), so that none of its connections holds a lock the drop would wait for, and the drop
    /// runs on a connection of its own without the store's statement timeout (dropping many
    /// objects on a loaded server can take longer than a statement may).
    pub async fn drop_schema(&self) -> StoreResult<()> {
        let fail = |e: sqlx::Error| StoreError::Database {
            message: format!("dropping schema {}: {e}", self.schema()),
        };
        let options = self.pool().connect_options();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.pool().close()).await;
        let mut conn = PgConnection::connect_with(&options).await.map_err(fail)?;
        sqlx::query("SET statement_timeout = '5min'")
            .execute(&mut conn)
            .await
            .map_err(fail)?;
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(fail)?;
        let _ = conn.close().await;
        Ok(())
    }
}
