//! What a handler logs carries its job (a span per run: job id, kind, queue, attempt, worker),
//! on the async path and on a blocking job's thread; `?` on `anyhow::Error` inside `run`.

use crate::support::{Backend, wait_state};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spooler::{BlockingJob, Job, JobContext, JobError, JobState, Worker};
use std::sync::{Mutex, Once};
use std::time::Duration;

crate::on_every_backend!(spans:
    a_handlers_log_lines_carry_its_job,
    anyhow_errors_work_with_the_question_mark,
);

/// Every JSON log line of this test binary.
static LOG: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON log lines with the current span, as `spooler serve` writes them off a terminal.
fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| Capture)
            .init();
    });
}

fn lines_with(marker: u64) -> Vec<Value> {
    LOG.lock()
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["marker"] == marker)
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Chatty {
    marker: u64,
}

impl Job for Chatty {
    const KIND: &'static str = "chatty";
    const QUEUE: &'static str = "talk";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tracing::info!(marker = self.marker, "a line from the handler");
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct ChattyThread {
    marker: u64,
}

impl BlockingJob for ChattyThread {
    const KIND: &'static str = "chatty_thread";
    const QUEUE: &'static str = "talk";

    fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        tracing::info!(marker = self.marker, "a line from the handler's thread");
        Ok(())
    }
}

async fn a_handlers_log_lines_carry_its_job(b: &Backend) {
    capture_logs();
    let worker = Worker::builder(b.store.clone())
        .id("span-worker")
        .register::<Chatty>()
        .register_blocking::<ChattyThread>()
        .queue("talk", 2)
        .build()
        .unwrap()
        .start();
    let (m1, m2) = (rand::random::<u64>() >> 12, rand::random::<u64>() >> 12);
    let async_id = b.client.enqueue(Chatty { marker: m1 }).await.unwrap();
    let thread_id = b
        .client
        .enqueue_blocking(ChattyThread { marker: m2 })
        .await
        .unwrap();
    for id in [async_id, thread_id] {
        wait_state(&b.client, id, JobState::Completed, Duration::from_secs(10)).await;
    }
    worker.shutdown().await.unwrap();
    for (marker, id, kind) in [(m1, async_id, "chatty"), (m2, thread_id, "chatty_thread")] {
        let lines = lines_with(marker);
        assert_eq!(lines.len(), 1, "the handler logged once: {lines:?}");
        let span = &lines[0]["span"];
        assert_eq!(span["name"], "job", "{span}");
        assert_eq!(span["job"], id);
        assert_eq!(span["kind"], kind);
        assert_eq!(span["queue"], "talk");
        assert_eq!(span["attempt"], 1);
        assert_eq!(span["worker"], "span-worker");
    }
}

#[derive(Serialize, Deserialize)]
struct Fallible {}

fn read_report() -> anyhow::Result<()> {
    use anyhow::Context;
    Err(anyhow::anyhow!("disk full")).context("writing the report")
}

impl Job for Fallible {
    const KIND: &'static str = "fallible";

    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        read_report()?;
        Ok(())
    }
}

async fn anyhow_errors_work_with_the_question_mark(b: &Backend) {
    let worker = Worker::builder(b.store.clone())
        .register::<Fallible>()
        .build()
        .unwrap()
        .start();
    let id = b.client.enqueue(Fallible {}).max_attempts(1).await.unwrap();
    let job = wait_state(&b.client, id, JobState::Failed, Duration::from_secs(10)).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "writing the report: disk full");
}
