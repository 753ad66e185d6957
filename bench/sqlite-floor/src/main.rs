//! The floor of spooler's SQLite drain: the claim and completion statements the store runs, on the
//! table `spooler migrate` makes, in a bare loop with no runtime around them (one writer
//! connection, WAL, `synchronous=NORMAL`, one transaction per claimed batch, each statement in a
//! savepoint as the writer thread runs it).
//!
//! Usage: spooler migrate --store sqlite://floor.db
//!        cargo run --release --manifest-path bench/sqlite-floor/Cargo.toml -- floor.db [N] [BATCH...]
//!
//! For each batch size it copies the migrated file, fills it with N available jobs, drains them
//! and prints `RESULT sqlite-floor batch=B jobs_per_s=… us_per_job=…`. Compare with
//! `../shared/bench/sqlite-raw` (the same loop on a one-index table) and with `spooler bench`.
use rusqlite::{Connection, params};
use std::time::Instant;

/// The claim statement of `spooler-sqlite` (`job/claim.rs`) for one queue and one kind.
const CLAIM: &str = "UPDATE spooler_jobs SET state = 'running', attempt = attempt + 1, \
    fence = fence + 1, started_at = ?1, lease_expires_at = ?2, worker_id = ?3 \
    WHERE id IN (SELECT id FROM (SELECT id, priority, run_at FROM spooler_jobs \
    WHERE state = 'available' AND queue = 'default' AND kind IN ('noop') \
    ORDER BY priority DESC, run_at, id LIMIT ?4)) \
    RETURNING id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, \
    started_at, finished_at, timeout_ms, unique_key, tags, errors, result, lease_expires_at, \
    worker_id, routed_from, cancel_requested, fence, origin, meta";

/// The completion of many jobs in one statement (`job/finish.rs`).
const COMPLETE: &str = "UPDATE spooler_jobs SET state = 'completed', finished_at = ?1, \
    result = f.value ->> 2, worker_id = NULL, lease_expires_at = NULL \
    FROM json_each(?2) AS f \
    WHERE spooler_jobs.id = f.value ->> 0 AND spooler_jobs.fence = f.value ->> 1 \
    AND spooler_jobs.state = 'running' RETURNING spooler_jobs.id, spooler_jobs.queue";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(migrated) = args.get(1) else {
        eprintln!("usage: sqlite-floor MIGRATED_DB [N] [BATCH...]");
        std::process::exit(2);
    };
    let n: i64 = args.get(2).map_or(100_000, |s| s.parse().expect("N"));
    let batches: Vec<i64> = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|s| s.parse().expect("BATCH"))
            .collect()
    } else {
        vec![10, 50, 100]
    };
    println!("sqlite version {}", rusqlite::version());
    for batch in batches {
        let path = format!("{migrated}.floor");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        std::fs::copy(migrated, &path).expect("copy the migrated database");
        let c = Connection::open(&path).expect("open");
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "NORMAL").unwrap();
        c.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO spooler_jobs (queue, kind, args, state, max_attempts, run_at, created_at) \
             SELECT 'default', 'noop', json_object('n', i), 'available', 25, i, i FROM n",
            [n],
        )
        .expect("fill");
        let exec = |sql: &str| c.prepare_cached(sql).unwrap().execute([]).unwrap();
        let t0 = Instant::now();
        let (mut done, mut now) = (0i64, 1_000_000_000i64);
        loop {
            exec("BEGIN IMMEDIATE");
            exec("SAVEPOINT op");
            now += 1;
            let ids: Vec<i64> = c
                .prepare_cached(CLAIM)
                .unwrap()
                .query_map(params![now, now + 30_000_000, "worker", batch], |r| {
                    // Every column read as the store reads it.
                    for i in 1..24 {
                        let _ = r.get_ref(i)?;
                    }
                    r.get(0)
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            exec("RELEASE op");
            if ids.is_empty() {
                exec("COMMIT");
                break;
            }
            exec("SAVEPOINT op");
            let list: Vec<String> = ids.iter().map(|id| format!("[{id},1,null]")).collect();
            let completed = c
                .prepare_cached(COMPLETE)
                .unwrap()
                .query_map(params![now, format!("[{}]", list.join(","))], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
                .count();
            assert_eq!(completed, ids.len());
            exec("RELEASE op");
            exec("COMMIT");
            done += completed as i64;
        }
        let s = t0.elapsed().as_secs_f64();
        println!(
            "RESULT sqlite-floor batch={batch} n={done} jobs_per_s={:.0} us_per_job={:.2}",
            done as f64 / s,
            s * 1e6 / done as f64
        );
    }
}
