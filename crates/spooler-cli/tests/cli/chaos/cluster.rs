//! A PostgreSQL cluster of the test's own (initdb and pg_ctl as the `postgres` user, on a free
//! port, its data in a temporary directory), so the test may restart it: the shared server other
//! tests use is never touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster; stopped (immediate) and deleted when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Creates and starts a cluster with a database `chaos`; `Err` says why it cannot run here
    /// (no PostgreSQL binaries, no `postgres` user, no `runuser`).
    pub fn start() -> Result<Self, String> {
        Self::start_with(|_| {})
    }

    /// Like [`Cluster::start`], with `setup` run on the data directory after initdb and before the
    /// server starts (to write TLS files, `postgresql.conf` settings or `pg_hba.conf`); what it
    /// writes is handed to the postgres user.
    pub fn start_with(setup: impl FnOnce(&Path)) -> Result<Self, String> {
        let bin = find_bin().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin",
        )?;
        let as_postgres = Command::new("runuser")
            .args(["-u", "postgres", "--", "true"])
            .status();
        if !as_postgres.is_ok_and(|s| s.success()) {
            return Err("cannot run commands as the postgres user (runuser -u postgres)".into());
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "chown the cluster's directory to postgres");
        let port = free_port();
        let cluster = Self { dir, bin, port };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        setup(&data);
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&data)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown the cluster's data to postgres");
        cluster.pg_start();
        cluster.psql("CREATE DATABASE chaos");
        Ok(cluster)
    }

    /// The URL of database `chaos`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/chaos", self.port)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops it as a crash would (`pg_ctl stop -m immediate`: every connection dropped, no
    /// checkpoint), leaves it down for `down`, and starts it again on the same port; returns once
    /// it accepts connections.
    pub fn restart(&self, down: std::time::Duration) {
        self.pg_stop();
        std::thread::sleep(down);
        self.pg_start();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_start(&self) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_buffers=64MB",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    fn pg_stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    fn psql(&self, sql: &str) {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
    }

    /// Runs `TOOL ARGS` as the postgres user; panics with its output when it fails.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        out
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding initdb and pg_ctl.
fn find_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
