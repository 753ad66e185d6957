//! A real `spooler worker` process for the tests that kill, stop and race them (on SQLite and
//! on PostgreSQL), and the synchronous `spooler` command they start.

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

/// A worker process; killed (SIGKILL) if the test ends without stopping it.
pub struct WorkerProcess {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl WorkerProcess {
    /// Starts `spooler worker --store STORE EXTRA…`, logging JSON to `DIR/NAME.log`.
    pub fn start(store: &str, dir: &Path, name: &str, extra: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = spooler_sync()
            .args(["worker", "--store", store, "--log-format", "json"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start spooler worker");
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
