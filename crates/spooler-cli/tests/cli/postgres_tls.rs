//! TLS to a PostgreSQL cluster of the test's own: `ssl = on` with a certificate for `localhost`
//! signed by a CA the test makes, and a `pg_hba.conf` that admits TLS connections only.
//! `sslmode=verify-full` with that CA connects and works jobs; a wrong root or a host name the
//! certificate does not name is refused naming host and port; `sslmode=disable` is refused clearly.

use crate::chaos::cluster::Cluster;
use crate::server_support::{cli, spooler};
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs openssl with `args` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e} (apt-get install openssl)"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME.pem`, `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN=spooler test {name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &pem,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_verify_full_works_jobs_and_refusals_name_host_and_port() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other");
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    let cert_dir = dir.to_path_buf();
    let started = tokio::task::spawn_blocking(move || {
        Cluster::start_with(|data| {
            use std::os::unix::fs::PermissionsExt;
            for file in ["server.crt", "server.key"] {
                std::fs::copy(cert_dir.join(file), data.join(file)).unwrap();
            }
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
            // TLS only over TCP; the local socket (for the helper's own setup) stays open.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )
            .unwrap();
        })
    })
    .await
    .unwrap();
    let cluster = match started {
        Ok(cluster) => cluster,
        Err(why) => panic!("cannot start a PostgreSQL cluster of the test's own: {why}"),
    };
    let port = cluster.port;
    let ca = dir.join("ca.pem");
    let url = |host: &str, params: &str| {
        format!("postgres://postgres@{host}:{port}/chaos?schema=tls_test&{params}")
    };
    let good = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );

    // Verified: migrates, and a worker on it runs a job enqueued on it.
    cli(&["migrate", "--store", &good]).await.ok();
    let mut worker = spooler()
        .args(["worker", "--store", &good])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker");
    let run = cli(&["enqueue", "noop", "--store", &good, "--wait", "20s"]).await;
    let _ = worker.kill().await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("completed"), "{}", run.describe());

    // The certificate names localhost, not 127.0.0.1.
    let wrong_host = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let run = cli(&["migrate", "--store", &wrong_host]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("TLS"), "{}", run.describe());

    // A root that did not sign it.
    let wrong_root = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            dir.join("other.pem").display()
        ),
    );
    let run = cli(&["migrate", "--store", &wrong_root]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains(&format!("localhost:{port}")),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("TLS"), "{}", run.describe());

    // Plain text where the server admits TLS only.
    let run = cli(&["migrate", "--store", &url("localhost", "sslmode=disable")]).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(
        run.stderr.contains(&format!("localhost:{port}")),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("pg_hba.conf") && run.stderr.contains("no encryption"),
        "{}",
        run.describe()
    );
    drop(cluster);
}
