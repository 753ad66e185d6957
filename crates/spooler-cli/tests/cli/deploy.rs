//! The deployment kit in `deploy/` and what it relies on: `systemd-analyze verify` accepts the
//! unit; `spooler serve` and `spooler worker` send `READY=1` to `NOTIFY_SOCKET` once they accept
//! connections, ping the watchdog and say `STOPPING=1`; the `spooler check` lines of the Nomad job
//! and the Kubernetes probes pass against a real server; `spooler migrate --print` makes the same
//! schema as `spooler migrate`, on both stores.

use crate::postgres_processes::Schema;
use crate::server_support::{Server, cli, spooler};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read_deploy(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn systemd_analyze_verify_accepts_the_unit() {
    // verify checks that ExecStart names an executable: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("spooler.service");
    let text = read_deploy("spooler.service");
    assert!(text.contains("Type=notify"), "the unit waits for READY=1");
    assert!(text.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/spooler", env!("CARGO_BIN_EXE_spooler")),
    )
    .unwrap();
    let out = tokio::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze: {e} (install it: apt-get install systemd; .ci/run does)")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings (an unknown key, a value it ignored) do not fail verify: fail on them here.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("spooler.service"))
        .collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

/// A socket standing in for the service manager's, in its own directory.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self {
            _dir: dir,
            path,
            socket,
        }
    }

    /// The next message holding `state` (`READY=1`), as text; panics after `timeout`.
    async fn wait_for(&self, state: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {state} on NOTIFY_SOCKET within {timeout:?}"))
                .expect("receive on the notify socket");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == state) {
                return text;
            }
        }
    }
}

/// The address in a `STATUS=… http://ADDR…` line.
fn status_addr(message: &str) -> SocketAddr {
    let status = message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {message:?}"));
    let addr = status
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split([';', ' ']).next())
        .unwrap_or_else(|| panic!("no address in {status:?}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {status:?}: {e}"))
}

/// Runs `spooler ARGS` as systemd would (`NOTIFY_SOCKET`, `WATCHDOG_USEC` of 400 ms), and checks
/// READY=1 comes when the announced port already accepts connections, the watchdog is pinged,
/// and SIGTERM is answered with STOPPING=1 and a clean exit.
async fn notifies_like_a_systemd_service(args: &[&str]) {
    let notify = NotifySocket::bind();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let mut child = spooler()
        .args(args)
        .args(["--store", &store])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start spooler");
    let ready = notify.wait_for("READY=1", Duration::from_secs(30)).await;
    let addr = status_addr(&ready);
    // Readiness means the port accepts connections now: no retry.
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("READY=1 was sent ({ready:?}) but {addr} refused: {e}"));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer))
        .await
        .expect("an answer to /healthz")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    notify.wait_for("WATCHDOG=1", Duration::from_secs(10)).await;
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(30)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn serve_sends_ready_once_its_port_accepts_connections() {
    notifies_like_a_systemd_service(&["serve", "--listen", "127.0.0.1:0"]).await;
}

#[tokio::test]
async fn worker_sends_ready_once_its_probes_accept_connections() {
    notifies_like_a_systemd_service(&["worker", "--listen", "127.0.0.1:0"]).await;
}

/// The first JSON-ish string array on a line holding `"check"` in `text`, as arguments.
fn check_args(text: &str, file: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.contains("\"check\"") && l.contains('['))
        .unwrap_or_else(|| panic!("{file} has no `spooler check` line"));
    let array = &line[line.find('[').unwrap()..=line.rfind(']').unwrap()];
    let args: Vec<String> =
        serde_json::from_str(array).unwrap_or_else(|e| panic!("{file}: {array}: {e}"));
    let start = args.iter().position(|a| a == "check").unwrap();
    args[start..].to_vec()
}

#[tokio::test]
async fn the_deploy_kits_check_commands_pass_against_a_server() {
    let server = Server::start().await;
    for file in ["spooler.nomad.hcl", "kubernetes.yaml"] {
        let args = check_args(&read_deploy(file), file);
        assert!(
            args.iter().any(|a| a == "http://127.0.0.1:7700"),
            "{file}: {args:?}"
        );
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.replace("http://127.0.0.1:7700", &server.url))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = cli(&args).await;
        assert_eq!(
            run.code,
            Some(0),
            "{file}: spooler {args:?}: {}",
            run.describe()
        );
        assert!(run.stdout.starts_with("OK"), "{}", run.describe());
    }
}

#[tokio::test]
async fn migrate_print_makes_the_schema_migrate_makes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printed.db");
    let migrated = dir.path().join("migrated.db");
    let script = cli(&[
        "migrate",
        "--print",
        "--store",
        &format!("sqlite://{}", printed.display()),
    ])
    .await
    .ok()
    .stdout;
    assert!(!printed.exists(), "--print opened the store");
    assert!(script.contains("-- migration 1: init"), "{script}");
    sqlite3(&printed, &script).await;
    cli(&[
        "migrate",
        "--store",
        &format!("sqlite://{}", migrated.display()),
    ])
    .await
    .ok();
    let schema_of = |db: PathBuf| async move {
        sqlite3(
            &db,
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name;
             SELECT version, name FROM spooler_migrations ORDER BY version;",
        )
        .await
    };
    let (a, b) = (schema_of(printed.clone()).await, schema_of(migrated).await);
    assert!(a.contains("spooler_migrations"), "{a}");
    assert_eq!(a, b, "the printed script and spooler migrate differ");
    // The store made by the script is up to date and works.
    let run = cli(&[
        "migrate",
        "--store",
        &format!("sqlite://{}", printed.display()),
    ])
    .await
    .ok();
    assert!(
        run.stdout.contains("schema is up to date"),
        "{}",
        run.describe()
    );
    let run = cli(&[
        "enqueue",
        "noop",
        "--store",
        &format!("sqlite://{}", printed.display()),
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    // --after prints only what comes later.
    let later = cli(&[
        "migrate",
        "--print",
        "--after",
        "5",
        "--store",
        "sqlite://x.db",
    ])
    .await
    .ok()
    .stdout;
    assert!(later.contains("-- migration 6: "), "{later}");
    assert!(!later.contains("-- migration 5: "), "{later}");
}

/// Runs `sql` with the sqlite3 shell on `db`; its output.
async fn sqlite3(db: &Path, sql: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run sqlite3: {e} (apt-get install sqlite3; .ci/run does)")
        });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(sql.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "sqlite3 {}: {stderr}",
        db.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn postgres_migrate_print_makes_the_schema_migrate_makes() {
    let (Some(printed), Some(migrated)) = (Schema::new(), Schema::new()) else {
        return;
    };
    let script = cli(&["migrate", "--print", "--store", &printed.url()])
        .await
        .ok()
        .stdout;
    let pool = printed.pool().await;
    let applied = sqlx::raw_sql(sqlx::AssertSqlSafe(script.clone()))
        .execute(&pool)
        .await;
    cli(&["migrate", "--store", &migrated.url()]).await.ok();
    let describe = |schema: String| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT 'column', table_name || '.' || column_name, data_type || coalesce(' default ' || column_default, '')
                   FROM information_schema.columns WHERE table_schema = $1
                 UNION ALL
                 SELECT 'index', tablename || '.' || indexname, indexdef FROM pg_indexes WHERE schemaname = $1
                 UNION ALL
                 SELECT 'function', p.proname, pg_get_function_identity_arguments(p.oid)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
                 ORDER BY 1, 2, 3",
            )
            .bind(&schema)
            .fetch_all(&pool)
            .await
            .expect("describe schema");
            rows.into_iter()
                .map(|(what, name, def)| format!("{what} {name} {}", def.replace(&schema, "S")))
                .collect::<Vec<_>>()
        }
    };
    let versions = |schema: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM \"{schema}\".spooler_migrations ORDER BY version"
            )))
            .fetch_all(&pool)
            .await
            .expect("applied versions")
        }
    };
    // Read everything, drop both schemas, then judge.
    let (a, b) = (
        describe(printed.name().to_string()).await,
        describe(migrated.name().to_string()).await,
    );
    let (va, vb) = if applied.is_ok() {
        (
            versions(printed.name().to_string()).await,
            versions(migrated.name().to_string()).await,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let again = cli(&["migrate", "--store", &printed.url()]).await;
    let enqueue = cli(&["enqueue", "noop", "--store", &printed.url()]).await;
    printed.drop_schema().await;
    migrated.drop_schema().await;
    applied.unwrap_or_else(|e| panic!("the printed script failed: {e}\n{script}"));
    assert!(a.iter().any(|l| l.contains("jobs_active")), "{a:?}");
    assert_eq!(a, b, "the printed script and spooler migrate differ");
    assert!(!va.is_empty());
    assert_eq!(va, vb);
    assert!(
        again.stdout.contains("schema is up to date"),
        "{}",
        again.describe()
    );
    assert_eq!(enqueue.code, Some(0), "{}", enqueue.describe());
}

#[tokio::test]
async fn serve_refuses_a_non_loopback_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let run = cli(&["serve", "--store", &store, "--listen", "0.0.0.0:0"]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("without a token") && run.stderr.contains("--token"),
        "{}",
        run.describe()
    );
}

#[tokio::test]
async fn a_read_only_token_alone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let run = cli(&[
        "serve",
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--read-token",
        "r",
    ])
    .await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains("needs a token beside it"),
        "{}",
        run.describe()
    );
}
