//! Queue control through real `spooler serve` processes sharing one store (SQLite, and Postgres
//! when `SPOOLER_TEST_POSTGRES` is set): with four processes, a queue limited to 20/s runs
//! 100 ± 10 jobs in 5 s, and a queue with `global_concurrency = 3` never has more than 3 running,
//! sampled every 10 ms, however many slots the processes have; with two, fifty concurrent
//! `POST /v1/jobs` of one job to a queue unique by kind and args make one job, and one of one
//! `unique_key`.

use crate::server_support::{ServeOptions, Server, list_all, wait_for};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use spooler::{Client, JobList, JobRow, JobState, NewJob};
use std::time::Duration;

const CONFIG: &str = r#"
[queues.paced]
rate_limit = "20/s"
concurrency = 10

[queues.capped]
global_concurrency = 3
concurrency = 5
"#;

/// Every job of `queue` in `state`.
async fn jobs(client: &Client, queue: &str, state: Option<JobState>) -> Vec<JobRow> {
    list_all(
        client,
        JobList {
            queue: Some(queue.into()),
            state,
            limit: 1000,
            ..Default::default()
        },
    )
    .await
}

async fn limits_hold_across_four_servers(store_url: String) {
    let options = ServeOptions {
        store: Some(store_url),
        config: Some(CONFIG.into()),
        ..Default::default()
    };
    let first = Server::start_with(options.clone()).await;
    let client = Client::new(first.store().await);
    // Queued before most workers start, so every process finds a backlog waiting.
    let paced: Vec<NewJob> = (0..300)
        .map(|i| NewJob::new("noop", json!({ "i": i })).queue("paced"))
        .collect();
    let capped: Vec<NewJob> = (0..60)
        .map(|_| NewJob::new("sleep", json!({ "duration": "100ms" })).queue("capped"))
        .collect();
    client.enqueue_many(paced).await.expect("enqueue paced");
    client.enqueue_many(capped).await.expect("enqueue capped");
    // The API shows each queue's limits.
    let (status, listed) = first.get("/v1/queues").await;
    assert_eq!(status, 200, "{listed}");
    let queue = |name: &str| {
        listed["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed: {listed}"))
    };
    assert_eq!(queue("paced")["rate_limit"], "20/s");
    assert_eq!(queue("capped")["global_concurrency"], 3);
    assert_eq!(queue("capped")["rate_limit"], serde_json::Value::Null);
    let mut servers = vec![first];
    for _ in 0..3 {
        servers.push(Server::start_with(options.clone()).await);
    }

    // The running count of `capped`, sampled every 10 ms until all its jobs are done.
    let sampler = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut most = 0;
            let mut samples = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let queues = client.queues().await.expect("queue counts");
                let Some(q) = queues.iter().find(|q| q.name == "capped") else {
                    continue;
                };
                most = most.max(q.counts.running);
                samples += 1;
                if q.counts.completed == 60 {
                    return (most, samples);
                }
            }
        })
    };
    let (most, samples) = tokio::time::timeout(Duration::from_secs(120), sampler)
        .await
        .expect("the capped queue's 60 jobs finish within 2 minutes")
        .unwrap();
    assert!(
        most <= 3,
        "global_concurrency = 3, yet {most} ran at once ({samples} samples)"
    );
    assert_eq!(
        most, 3,
        "four processes with five slots each fill the three allowed ({samples} samples)"
    );

    // The rate: jobs started in the first 5 s after the first start.
    let started = |jobs: &[JobRow]| -> Vec<DateTime<Utc>> {
        let mut at: Vec<_> = jobs.iter().filter_map(|j| j.started_at).collect();
        at.sort();
        at
    };
    let begun = wait_for(
        "the paced queue to start",
        Duration::from_secs(60),
        || async {
            started(&jobs(&client, "paced", Some(JobState::Completed)).await)
                .first()
                .copied()
        },
    )
    .await;
    let window_end = begun + TimeDelta::seconds(5);
    wait_for(
        "a paced job to start after the 5 s window",
        Duration::from_secs(60),
        || async {
            let done = jobs(&client, "paced", Some(JobState::Completed)).await;
            started(&done)
                .iter()
                .any(|at| *at >= window_end)
                .then_some(())
        },
    )
    .await;
    let all = jobs(&client, "paced", None).await;
    let in_window = started(&all)
        .iter()
        .filter(|at| **at >= begun && **at < window_end)
        .count();
    assert!(
        (90..=110).contains(&in_window),
        "20/s across four processes: {in_window} jobs started in 5 s, expected 100 ± 10"
    );
    eprintln!("{in_window} paced jobs started in 5 s; at most {most} capped jobs ran at once");
    for mut s in servers {
        s.terminate(Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rate_limit_and_global_concurrency_hold_across_four_servers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    limits_hold_across_four_servers(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rate_limit_and_global_concurrency_hold_across_four_servers() {
    let Some(schema) = crate::postgres_processes::Schema::new() else {
        return;
    };
    limits_hold_across_four_servers(schema.url()).await;
    schema.drop_schema().await;
}

async fn fifty_concurrent_posts_make_one_job(store_url: String) {
    let options = ServeOptions {
        store: Some(store_url),
        config: Some(
            "[queues.mail]\nunique = { by = [\"kind\", \"args\"], period = \"1h\" }\n".into(),
        ),
        no_worker: true,
        ..Default::default()
    };
    let servers = [
        Server::start_with(options.clone()).await,
        Server::start_with(options).await,
    ];
    for (what, body) in [
        (
            "kind and args",
            json!({"kind": "noop", "queue": "mail", "args": {"to": "a@example.com"}}),
        ),
        (
            "unique_key",
            json!({"kind": "noop", "args": {"n": 1}, "unique_key": "one"}),
        ),
    ] {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut posts = Vec::new();
        for i in 0..50 {
            let (http, body) = (http.clone(), body.clone());
            let url = format!("{}/v1/jobs", servers[i % 2].url);
            posts.push(tokio::spawn(async move {
                let answer = http.post(url).json(&body).send().await.expect("POST");
                let status = answer.status();
                (
                    status,
                    answer.json::<serde_json::Value>().await.expect("JSON"),
                )
            }));
        }
        let mut answers = Vec::new();
        for post in posts {
            answers.push(post.await.unwrap());
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut created = 0;
        for (status, job) in &answers {
            match status.as_u16() {
                201 => created += 1,
                200 => assert_eq!(job["duplicate"], true, "{job}"),
                other => panic!("{what}: {other} {job}"),
            }
            ids.insert(job["id"].as_i64().unwrap());
        }
        assert_eq!(ids.len(), 1, "{what}: one job for fifty posts: {ids:?}");
        assert_eq!(created, 1, "{what}: one 201, the rest 200 with that job");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fifty_concurrent_posts_of_one_unique_job_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    fifty_concurrent_posts_make_one_job(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fifty_concurrent_posts_of_one_unique_job_make_one() {
    let Some(schema) = crate::postgres_processes::Schema::new() else {
        return;
    };
    fifty_concurrent_posts_make_one_job(schema.url()).await;
    schema.drop_schema().await;
}
