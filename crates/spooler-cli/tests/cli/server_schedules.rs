//! Schedules through real `spooler serve` processes sharing one store (SQLite, and Postgres when
//! `SPOOLER_TEST_POSTGRES` is set): one `@every 1s` schedule in every process's config enqueues
//! one job per tick, also after the leader is killed (SIGKILL) in the middle; and the schedule
//! endpoints and `spooler schedules` against a server.

use crate::server_support::{ServeOptions, Server, cli, list_all, wait_for};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use spooler::{Client, JobList, JobRow};
use std::collections::BTreeMap;
use std::time::Duration;

const BEAT: &str = r#"
[[schedules]]
name = "beat"
cron = "@every 1s"
job = { kind = "noop", queue = "beats", args = { from = "schedule" } }
"#;

/// Every job the schedule enqueued, by its tick (parsed from its `unique_key`).
async fn beats(client: &Client) -> BTreeMap<DateTime<Utc>, Vec<JobRow>> {
    let mut by_tick: BTreeMap<DateTime<Utc>, Vec<JobRow>> = BTreeMap::new();
    let all = list_all(
        client,
        JobList {
            queue: Some("beats".into()),
            limit: 1000,
            ..Default::default()
        },
    )
    .await;
    for job in all {
        let key = job.unique_key.clone().expect("a tick's job names its tick");
        let tick = key
            .strip_prefix("schedule:beat@")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .unwrap_or_else(|| panic!("unique_key {key} names the schedule and the tick"))
            .with_timezone(&Utc);
        by_tick.entry(tick).or_default().push(job);
    }
    by_tick
}

/// The server whose log last says it became the maintenance leader.
fn leader(servers: &[Server]) -> usize {
    let last_word = |s: &Server| {
        s.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|v| v["message"] == "maintenance leadership changed")
            .and_then(|v| v["leader"].as_bool())
    };
    let leaders: Vec<usize> = (0..servers.len())
        .filter(|&i| last_word(&servers[i]) == Some(true))
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one server says it leads: {leaders:?}"
    );
    leaders[0]
}

/// Waits until the tick `at` (or a later one) has its job.
async fn wait_tick(client: &Client, at: DateTime<Utc>, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        beats(client).await.range(at..).next().map(|_| ())
    })
    .await;
}

fn count_in(
    by_tick: &BTreeMap<DateTime<Utc>, Vec<JobRow>>,
    from: DateTime<Utc>,
    secs: i64,
) -> usize {
    by_tick
        .range(from..from + TimeDelta::seconds(secs))
        .map(|(_, jobs)| jobs.len())
        .sum()
}

async fn three_servers_share_one_schedule(store_url: String) {
    let options = ServeOptions {
        store: Some(store_url),
        config: Some(BEAT.into()),
        ..Default::default()
    };
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start_with(options.clone()).await);
    }
    let client = Client::new(servers[0].store().await);
    wait_tick(&client, DateTime::<Utc>::MIN_UTC, "the first tick's job").await;
    let first = *beats(&client).await.keys().next().unwrap();
    // Ten seconds undisturbed: the job of the tick ten seconds after the first exists.
    let start = first + TimeDelta::seconds(1);
    wait_tick(&client, start + TimeDelta::seconds(10), "ten more ticks").await;
    let by_tick = beats(&client).await;
    let ten = count_in(&by_tick, start, 10);
    assert!(
        (9..=11).contains(&ten),
        "10 ± 1 jobs in 10 s of ticks, found {ten}: {:?}",
        by_tick.keys().collect::<Vec<_>>()
    );

    // The leader killed mid-run: another takes over, and still no tick has two jobs.
    let killed = leader(&servers);
    let killed_at = Utc::now();
    servers[killed].kill().await;
    wait_tick(
        &client,
        killed_at + TimeDelta::seconds(12),
        "ticks after the new leader took over",
    )
    .await;
    let by_tick = beats(&client).await;
    let doubled: Vec<_> = by_tick.iter().filter(|(_, jobs)| jobs.len() > 1).collect();
    assert!(doubled.is_empty(), "ticks with two jobs: {doubled:?}");
    let after = count_in(&by_tick, killed_at + TimeDelta::seconds(7), 5);
    assert!(
        (4..=6).contains(&after),
        "one job per tick again once the new leader leads: {after} in 5 s"
    );
    // The workers ran them.
    wait_for(
        "the beats to be completed",
        Duration::from_secs(30),
        || async {
            let queues = client.queues().await.ok()?;
            let beats = queues.iter().find(|q| q.name == "beats")?;
            (beats.counts.completed > 10).then_some(())
        },
    )
    .await;
    for (i, s) in servers.iter_mut().enumerate() {
        if i != killed {
            s.terminate(Duration::from_secs(30)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_three_servers_one_schedule_one_job_per_tick_also_when_the_leader_dies() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    three_servers_share_one_schedule(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_servers_one_schedule_one_job_per_tick_also_when_the_leader_dies() {
    let Some(schema) = crate::postgres_processes::Schema::new() else {
        return;
    };
    three_servers_share_one_schedule(schema.url()).await;
    schema.drop_schema().await;
}

/// `GET /v1/schedules`, run, pause and resume over HTTP and with `spooler schedules`; a schedule
/// dropped from the config is gone after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_run_paused_and_resumed_over_http_and_the_cli() {
    let config = r#"
[[schedules]]
name = "nightly"
cron = "0 3 * * *"
tz = "Europe/Berlin"
job = { kind = "noop", args = { n = 1 }, priority = 3 }
"#;
    let server = Server::start_with(ServeOptions {
        config: Some(config.into()),
        ..Default::default()
    })
    .await;
    let (status, body) = server.get("/v1/schedules").await;
    assert_eq!(status, 200, "{body}");
    let s = &body["schedules"][0];
    assert_eq!(s["name"], "nightly");
    assert_eq!(s["cron"], "0 3 * * *");
    assert_eq!(s["tz"], "Europe/Berlin");
    assert_eq!(s["catch_up"], "one");
    assert_eq!(s["paused"], false);
    assert_eq!(
        s["job"],
        json!({"kind": "noop", "queue": "default", "args": {"n": 1}, "priority": 3})
    );
    assert_eq!(s["upcoming"].as_array().unwrap().len(), 3);
    assert_eq!(s["upcoming"][0], s["next_run_at"]);
    assert!(s["description"].as_str().unwrap().contains("03:00"), "{s}");
    let next = s["next_run_at"].clone();

    let (status, job) = server.post("/v1/schedules/nightly/run", &json!({})).await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["kind"], "noop");
    assert_eq!(job["priority"], 3);
    let (_, body) = server.get("/v1/schedules").await;
    assert_eq!(
        body["schedules"][0]["next_run_at"], next,
        "a run by hand moves nothing"
    );
    assert_eq!(body["schedules"][0]["last_job_id"], job["id"]);

    let (status, paused) = server.post("/v1/schedules/nightly/pause", &json!({})).await;
    assert_eq!(
        (status.as_u16(), &paused["paused"]),
        (200, &json!(true)),
        "{paused}"
    );
    let (status, missing) = server.post("/v1/schedules/nope/resume", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(missing["field"], "name");
    assert!(missing["error"].as_str().unwrap().contains("nope"));

    let listed = cli(&["schedules", "--url", &server.url]).await.ok();
    assert!(
        listed.stdout.contains("nightly") && listed.stdout.contains("Europe/Berlin"),
        "{}",
        listed.describe()
    );
    let resumed = cli(&[
        "schedules",
        "--url",
        &server.url,
        "--json",
        "resume",
        "nightly",
    ])
    .await
    .ok();
    assert_eq!(resumed.json()["paused"], false, "{}", resumed.describe());
    let ran = cli(&["schedules", "--store", &server.store_url, "run", "nightly"])
        .await
        .ok();
    assert!(ran.stdout.contains("enqueued job"), "{}", ran.describe());
}
