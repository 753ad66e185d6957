//! Reading jobs: one by id, and the listing newest first.

use super::*;

pub(crate) async fn get(db: &Db, id: JobId) -> StoreResult<Option<JobRow>> {
    db.read_point(move |conn| Ok(select_one(conn, id)?))
        .await?
        .map(RawJob::decode)
        .transpose()
}

/// The jobs routed from `id`, oldest first, at most `limit` (a partial index on `routed_from`).
pub(crate) async fn routed_from(db: &Db, id: JobId, limit: u32) -> StoreResult<Vec<JobRow>> {
    let limit = limit.min(LIST_CAP);
    let raws = db
        .read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM spooler_jobs WHERE routed_from = ?1 ORDER BY id LIMIT ?2"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map(rusqlite::params![id, limit], RawJob::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    raws.into_iter().map(RawJob::decode).collect()
}

/// A listing of an unfinished state sorts that state's jobs when there are fewer than this.
const SORT_AT_MOST: i64 = 2000;

pub(crate) async fn list(db: &Db, list: &JobList) -> StoreResult<Vec<JobRow>> {
    let limit = list.limit.min(LIST_CAP);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let list = list.clone();
    let raws = db
        .read(move |conn| {
            // The conditions after `WHERE 1 = 1`, and the table with any hint for the planner.
            let mut sql = String::new();
            let mut from = "spooler_jobs";
            let mut args: Vec<Box<dyn ToSql + Send>> = Vec::new();
            let mut filter = |sql: &mut String, column: &str, value: Box<dyn ToSql + Send>| {
                args.push(value);
                sql.push_str(&format!(" AND {column} ?{}", args.len()));
            };
            if let Some(q) = list.queue.clone() {
                filter(&mut sql, "queue =", Box::new(q));
            }
            // An unfinished state is written as a literal, so that SQLite sees its partial index
            // (claim, scheduled or lease) applies. While that state holds few jobs (of the queue,
            // if one is asked for), `+id` makes SQLite read them all from that index and sort
            // them, instead of walking the table in id order: listing running jobs then reads
            // the running jobs, not every finished one (42 ms against 0.06 ms with a million
            // finished jobs). A big backlog is walked in id order (by queue, or the table), where
            // its jobs are the newest: sorting 400,000 available jobs took 227 ms.
            let id = match list.state {
                Some(s) if !s.is_finished() => {
                    let state = format!(" AND state = '{}'", s.as_str());
                    sql.push_str(&state);
                    let probe = format!(
                        "SELECT count(*) FROM (SELECT 1 FROM spooler_jobs WHERE {} {state} LIMIT {SORT_AT_MOST})",
                        if list.queue.is_some() { "queue = ?1" } else { "1 = 1" }
                    );
                    let few: i64 = match &list.queue {
                        Some(q) => conn.prepare_cached(&probe)?.query_row([q], |r| r.get(0))?,
                        None => conn.prepare_cached(&probe)?.query_row([], |r| r.get(0))?,
                    };
                    if few < SORT_AT_MOST {
                        "+id"
                    } else {
                        // Ids only: the planner would still read the backlog from its partial
                        // index and sort it (113 ms for 400,000 within a window of ids).
                        from = "spooler_jobs NOT INDEXED";
                        "id"
                    }
                }
                Some(s) => {
                    filter(&mut sql, "state =", Box::new(s.as_str()));
                    "id"
                }
                None => "id",
            };
            if let Some(k) = list.kind {
                filter(&mut sql, "kind =", Box::new(k));
            }
            if let Some(before) = list.before_id {
                filter(&mut sql, &format!("{id} <"), Box::new(before));
            }
            if let Some(after) = list.after_id {
                filter(&mut sql, &format!("{id} >"), Box::new(after));
            }
            let sql = format!(
                "SELECT {COLUMNS} FROM {from} WHERE 1 = 1{sql} ORDER BY {id} DESC LIMIT {limit}"
            );
            let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref() as &dyn ToSql).collect();
            let rows = conn
                .prepare_cached(&sql)?
                .query_map(&refs[..], RawJob::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await?;
    decode_all(raws)
}
