//! A real `spooler worker` process for the tests that kill, stop and race them (on SQLite and
//! on PostgreSQL), and the synchronous `spooler` command they start.

use crate::server_support::wait_for;
use serde_json::json;
use spooler::core::{JobFinish, LeaseRef, Outcome};
use spooler::{Client, JobState, NewJob};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `spooler` binary (blocking `std::process`), without the caller's `SPOOLER_STORE`/`SPOOLER_URL`.
pub fn spooler_sync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spooler"));
    cmd.env_remove("SPOOLER_STORE")
        .env_remove("SPOOLER_URL")
        .env("NO_COLOR", "1");
    cmd
}

/// The environment that runs a process with its wall clock `offset` off, through libfaketime's
/// `LD_PRELOAD` (found under /usr/lib/*/faketime; `apt-get install faketime`), so the process
/// started is the one a test kills (the `faketime` command forks); `None` when it is not installed.
pub fn skewed_clock(offset: &str) -> Option<Vec<(String, String)>> {
    let lib = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("faketime/libfaketime.so.1")))
        .find(|p| p.exists())?;
    Some(vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ])
}

/// A worker process (or a server's: [`WorkerProcess::start_subcommand`]); killed (SIGKILL) if the
/// test ends without stopping it.
pub struct WorkerProcess {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl WorkerProcess {
    /// Starts `spooler worker --store STORE EXTRA…`, logging JSON to `DIR/NAME.log`.
    pub fn start(store: &str, dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_subcommand("worker", store, dir, name, extra, &[])
    }

    /// [`WorkerProcess::start`] with environment variables `env` added (e.g. libfaketime's
    /// `LD_PRELOAD` and `FAKETIME`: unlike the `faketime` wrapper, which forks, the process killed
    /// is then the worker itself).
    pub fn start_with_env(
        store: &str,
        dir: &Path,
        name: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Self {
        Self::start_subcommand("worker", store, dir, name, extra, env)
    }

    /// [`WorkerProcess::start`] with its wall clock `offset` off (e.g. `+30s`), through
    /// libfaketime: a process whose clock is wrong. `None` when libfaketime is not installed.
    pub fn start_skewed(
        offset: &str,
        store: &str,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Option<Self> {
        let env = skewed_clock(offset)?;
        Some(Self::start_with_env(store, dir, name, extra, &env))
    }

    /// Starts `spooler SUBCOMMAND --store STORE EXTRA…` (`worker`, or another that takes
    /// `--store`, such as `serve`) with the variables `env` added, logging JSON to `DIR/NAME.log`.
    pub fn start_subcommand(
        subcommand: &str,
        store: &str,
        dir: &Path,
        name: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        // In its directory, as a server is: relative paths (a file job's) land there.
        let child = spooler_sync()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .args([subcommand, "--store", store, "--log-format", "json"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start spooler {subcommand}: {e}"));
        Self {
            child: Some(child),
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM and waits for the exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "worker did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A worker killed (SIGKILL) mid-job on the store `url` loses nothing: a second worker runs the
/// job again once the lease (`lease`, flags of both workers) lapses, the lost lease is recorded,
/// and the killed worker's late result is rejected.
pub async fn a_killed_workers_job_is_rescued(url: &str, dir: &Path, lease: &[&str]) {
    let store = spooler::connect(url).await.expect("open store");
    let client = Client::new(store.clone());
    let id = client
        .enqueue_new(NewJob::new("sleep", json!({ "duration": "3s" })))
        .await
        .unwrap()
        .job
        .id;
    let mut first = WorkerProcess::start(url, dir, "first", lease);
    let claimed = wait_for(
        "the first worker to start the job",
        Duration::from_secs(30),
        || async {
            let job = store.job_get(id).await.ok()??;
            (job.state == JobState::Running).then_some(job)
        },
    )
    .await;
    assert_eq!(claimed.attempt, 1);
    assert!(
        claimed
            .worker_id
            .as_deref()
            .unwrap_or_default()
            .contains(&first.pid().to_string()),
        "{claimed:?}"
    );
    first.kill9();

    let _second = WorkerProcess::start(url, dir, "second", lease);
    let done = wait_for(
        "the job to complete on the second worker",
        Duration::from_secs(60),
        || async {
            let job = store.job_get(id).await.ok()??;
            (job.state == JobState::Completed).then_some(job)
        },
    )
    .await;
    assert_eq!(done.attempt, 2, "run again after the lease expired");
    assert_eq!(done.errors.len(), 1);
    assert!(
        done.errors[0].message.contains("lease expired"),
        "{:?}",
        done.errors
    );
    // The killed worker's result, arriving late, is rejected.
    let late = store
        .job_finish_many(&[JobFinish {
            lease: LeaseRef { id, fence: 1 },
            outcome: Outcome::Completed { result: None },
        }])
        .await
        .unwrap();
    assert_eq!(late, vec![false]);
    assert_eq!(store.job_get(id).await.unwrap().unwrap(), done);
}
