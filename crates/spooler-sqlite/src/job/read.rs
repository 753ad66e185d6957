//! Reading jobs: one by id, and the listing newest first.

use super::*;

pub(crate) async fn get(db: &Db, id: JobId) -> StoreResult<Option<JobRow>> {
    db.read(move |conn| Ok(select_one(conn, id)?))
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

pub(crate) async fn list(db: &Db, list: &JobList) -> StoreResult<Vec<JobRow>> {
    let limit = list.limit.min(LIST_CAP);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let list = list.clone();
    let raws = db
        .read(move |conn| {
            let mut sql = format!("SELECT {COLUMNS} FROM spooler_jobs WHERE 1 = 1");
            let mut args: Vec<Box<dyn ToSql + Send>> = Vec::new();
            let mut filter = |sql: &mut String, column: &str, value: Box<dyn ToSql + Send>| {
                args.push(value);
                sql.push_str(&format!(" AND {column} ?{}", args.len()));
            };
            if let Some(q) = list.queue {
                filter(&mut sql, "queue =", Box::new(q));
            }
            // An unfinished state is written as a literal, so that SQLite sees its partial index
            // (claim, scheduled or lease) applies, and `+id` keeps it from walking the whole
            // table in id order instead: listing running jobs then reads the running jobs, not
            // every finished one (42 ms against 0.06 ms with a million finished jobs).
            let id = match list.state {
                Some(s) if !s.is_finished() => {
                    sql.push_str(&format!(" AND state = '{}'", s.as_str()));
                    "+id"
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
            sql.push_str(&format!(" ORDER BY {id} DESC LIMIT {limit}"));
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
