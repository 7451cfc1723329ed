//! The `burrowd` binary itself: admin commands and `serve`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn burrowd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burrowd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run burrowd")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "burrowd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn admin(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_str().expect("utf-8 path");
    let mut all = vec!["admin", "--data-dir", dir];
    all.extend_from_slice(args);
    burrowd(&all)
}

#[test]
fn admin_commands_print_only_tokens_and_the_audit_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let user_token = stdout_of(&admin(dir.path(), &["user", "add", "alice"]));
    let user_token = user_token.trim_end_matches('\n');
    assert!(user_token.starts_with("bu_") && !user_token.contains(char::is_whitespace));

    let agent_token = stdout_of(&admin(
        dir.path(),
        &["workspace", "add", "box", "--owner", "alice"],
    ));
    let agent_token = agent_token.trim_end_matches('\n');
    assert!(agent_token.starts_with("ba_") && !agent_token.contains(char::is_whitespace));

    let table = stdout_of(&admin(dir.path(), &["audit"]));
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("ID") && h.contains("OUTCOME"))
    );

    let json = stdout_of(&admin(dir.path(), &["audit", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json array");
    assert!(rows.is_empty());
}

#[test]
fn admin_errors_exit_non_zero_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = admin(
        dir.path(),
        &["workspace", "add", "box", "--owner", "nobody"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no user named \"nobody\""), "{err}");
    assert!(out.stdout.is_empty());

    stdout_of(&admin(dir.path(), &["user", "add", "alice"]));
    let out = admin(dir.path(), &["user", "add", "alice"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// A free TCP port on 127.0.0.1 (racy in principle; fine for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serve_answers_records_refusals_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_burrowd"))
        .args(["serve", "--listen", &addr, "--relay-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn burrowd serve");

    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(r) = http_get(&addr, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "burrowd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let denied = http_get(&addr, "/api/v1/agent/connect").expect("answer");
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");

    // The relay secret was created private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("turn_secret"))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The admin CLI reads the log of the running server.
    let table = stdout_of(&admin(dir.path(), &["audit"]));
    assert!(table.contains("refused: bad agent token"), "{table}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("burrowd did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let stderr = child.stderr.take().expect("stderr");
    let logs: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("burrowd listening")),
        "{logs:#?}"
    );
}

#[test]
fn serve_with_unusable_listen_address_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = serve_failure(dir.path(), &["--listen", &addr]);
    assert!(err.contains("binding the HTTP listener"), "{err}");
}

#[test]
fn serve_with_an_apps_url_that_is_no_wildcard_origin_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = serve_failure(dir.path(), &["--apps-url", "http://localhost:8080"]);
    assert!(err.contains("expected http(s)://*.DOMAIN[:PORT]"), "{err}");
}

#[test]
fn serve_with_a_public_url_that_has_no_origin_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = serve_failure(dir.path(), &["--public-url", "burrow.example.com"]);
    assert!(err.contains("--public-url"), "{err}");
}

/// Runs `burrowd serve --relay none ARGS`, which must fail; returns its stderr.
fn serve_failure(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_burrowd"))
        .args(["serve", "--relay", "none"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
