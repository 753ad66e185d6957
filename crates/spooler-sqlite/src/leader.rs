//! Leader election: one holder per name until its lease lapses.

use crate::SqliteStore;
use crate::job::micros;
use async_trait::async_trait;
use rusqlite::params;
use spooler_core::StoreResult;
use spooler_core::clock::add;
use spooler_core::store::LeaderElect;
use spooler_core::store::prelude::*;

#[async_trait]
impl LeaderStore for SqliteStore {
    async fn leader_try_elect(&self, elect: &LeaderElect) -> StoreResult<bool> {
        let db = &self.db;
        let elect = elect.clone();
        db.write(move |ctx| {
            let now = micros(ctx.now);
            let until = micros(add(ctx.now, elect.ttl));
            // Taken when free, renewed by its holder, taken over once the holder's lease lapsed.
            let changed = ctx
                .conn
                .prepare_cached(
                    "INSERT INTO spooler_leaders (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                         expires_at = excluded.expires_at \
                     WHERE spooler_leaders.holder = excluded.holder OR spooler_leaders.expires_at <= ?4",
                )?
                .execute(params![elect.name, elect.holder, until, now])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn leader_resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        let db = &self.db;
        let (name, holder) = (name.to_string(), holder.to_string());
        db.write(move |ctx| {
            ctx.conn
                .prepare_cached("DELETE FROM spooler_leaders WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
        .await
    }
}
