//! Replay: messages enqueued once per key, the key recorded in the transaction that inserts the job.

use super::*;
use spooler_core::store::{QueueSettingsMap, Replay, Replayed};

pub(crate) async fn replay(
    db: &Db,
    settings: &QueueSettingsMap,
    replays: &[Replay],
) -> StoreResult<Vec<Replayed>> {
    if replays.is_empty() {
        return Ok(Vec::new());
    }
    // Validated and serialized here, as every insert is; a bad message fails the call.
    let jobs: Vec<NewJob> = replays.iter().map(|r| r.job.clone()).collect();
    let prepared = insert::prepare(jobs, settings)?;
    let keys: Vec<String> = replays.iter().map(|r| r.key.clone()).collect();
    db.write(move |ctx| {
        let mut out = Vec::with_capacity(keys.len());
        for (key, prepared) in keys.into_iter().zip(prepared) {
            let claimed = ctx
                .conn
                .prepare_cached(
                    "INSERT INTO spooler_replays (key, replayed_at) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, micros(ctx.now)])?;
            if claimed == 0 {
                let id: Option<JobId> = ctx
                    .conn
                    .prepare_cached("SELECT job_id FROM spooler_replays WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))?;
                out.push(Replayed {
                    id,
                    enqueued: false,
                });
                continue;
            }
            let id = insert::insert_tx(ctx, vec![prepared])?
                .first()
                .map(insert::Insert::id);
            ctx.conn
                .prepare_cached("UPDATE spooler_replays SET job_id = ?2 WHERE key = ?1")?
                .execute(params![key, id])?;
            out.push(Replayed { id, enqueued: true });
        }
        Ok(out)
    })
    .await
}
