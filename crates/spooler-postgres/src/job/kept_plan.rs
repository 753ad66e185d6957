//! The plan a function keeps for its one statement (`claim_one`, `finish_jobs`): the statement
//! between the function's markers, read back from the database and prepared under the function's
//! own settings, so `EXPLAIN` shows the generic plan the function keeps on every connection.

use crate::error::map;
use spooler_core::{StoreError, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Postgres, Row};

/// What to explain: the statement marked `-- {marker}:begin` … `-- {marker}:end` in `function`
/// (a signature, `name(type, …)`), prepared as `spooler_{marker}` with the signature's parameter
/// types and run as `EXECUTE` with `args` (SQL literals, quoted by the caller).
pub(crate) struct KeptPlan<'a> {
    pub(crate) function: &'a str,
    pub(crate) marker: &'a str,
    pub(crate) args: String,
}

impl KeptPlan<'_> {
    /// The plan's lines. The prepared statement is deallocated afterwards; a connection that may
    /// still hold it is not returned to the pool.
    pub(crate) async fn explain(
        &self,
        conn: &mut PoolConnection<Postgres>,
    ) -> StoreResult<Vec<PgRow>> {
        let explained = self.explain_in_transaction(conn).await;
        let deallocate = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DEALLOCATE spooler_{}",
            self.marker
        )))
        .execute(&mut **conn)
        .await;
        if deallocate.is_err() {
            conn.close_on_drop();
        }
        explained
    }

    async fn explain_in_transaction(&self, conn: &mut PgConnection) -> StoreResult<Vec<PgRow>> {
        let (source, settings): (String, Option<Vec<String>>) =
            sqlx::query_as("SELECT prosrc, proconfig FROM pg_proc WHERE oid = $1::regprocedure")
                .bind(self.function)
                .fetch_one(&mut *conn)
                .await
                .map_err(map)?;
        let (begin, end) = (
            format!("-- {}:begin", self.marker),
            format!("-- {}:end", self.marker),
        );
        let statement = source
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(statement, _)| statement)
            .ok_or_else(|| StoreError::Database {
                message: format!("{} has no {begin}/{end} markers", self.function),
            })?;
        // The function's `SET name = value` clauses, as `SET LOCAL`s around the prepared copy.
        let set_local: String = settings
            .unwrap_or_default()
            .iter()
            .filter_map(|setting| setting.split_once('='))
            .map(|(name, value)| format!("SET LOCAL {name} = '{value}';\n"))
            .collect();
        let types = self
            .function
            .split_once('(')
            .and_then(|(_, types)| types.strip_suffix(')'))
            .ok_or_else(|| StoreError::Database {
                message: format!("{} is not a signature name(type, ...)", self.function),
            })?;
        let mut tx = conn.begin().await.map_err(map)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "{set_local}PREPARE spooler_{}({types}) AS {statement}",
            self.marker
        )))
        .execute(&mut *tx)
        .await
        .map_err(map)?;
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE spooler_{}({})",
            self.marker, self.args
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(map)?;
        tx.rollback().await.map_err(map)?;
        Ok(rows)
    }
}

/// An `EXPLAIN`'s rows as one text.
pub(crate) fn plan_text(rows: &[PgRow]) -> StoreResult<String> {
    let lines = rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(map)?;
    Ok(lines.join("\n"))
}
