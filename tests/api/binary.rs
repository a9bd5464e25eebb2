//! The real `tessera serve` binary: first-start banner and password, SIGTERM with
//! in-flight requests and buffered records, and no token value in its output or files.

use crate::helpers::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `url` answers within ten seconds: a server process just started is up.
pub async fn comes_up(client: &reqwest::Client, url: &str) -> bool {
    for _ in 0..100 {
        if client.get(url).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serve_bootstraps_logs_safely_and_stops_cleanly() {
    serve_and_stop(false).await;
}

/// On one core the binary runs a single-threaded runtime: the same checks hold there.
#[tokio::test]
async fn serve_on_one_core_works_the_same() {
    let taskset = Command::new("taskset").arg("--version").output();
    if taskset.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "taskset (util-linux) is missing"
        );
        eprintln!("skipped: no taskset here");
        return;
    }
    serve_and_stop(true).await;
}

async fn serve_and_stop(one_core: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bin.db");
    let (admin_port, gateway_port) = (free_port(), free_port());
    let stderr_path = dir.path().join("stderr.log");
    let mut command = if one_core {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", env!("CARGO_BIN_EXE_tessera")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
    };
    let mut child = command
        .args(["serve", "--log-format", "json"])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--gateway-addr", &format!("127.0.0.1:{gateway_port}")])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .env("RUST_LOG", "debug")
        .env_remove("TESSERA_ADMIN_PASSWORD")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "server did not come up: {}",
        std::fs::read_to_string(&stderr_path).unwrap()
    );
    let banner = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        banner.contains(&format!("http://127.0.0.1:{admin_port}")),
        "{banner}"
    );
    assert!(banner.contains(&format!("http://127.0.0.1:{gateway_port}")));
    assert!(banner.contains(&db.display().to_string()));
    let lines: Vec<&str> = banner.lines().collect();
    let idx = lines
        .iter()
        .position(|l| l.contains("created the account 'admin'"))
        .expect("first-start notice");
    let password = lines[idx + 1].trim().to_owned();
    assert!(password.len() >= 16);

    let resp = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/tokens"))
        .header("Cookie", &session)
        .header("Origin", &base)
        .json(&json!({"name": "bin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // Uses, good and bad, with the value in every carrier and in a failing body, on
    // both listeners.
    let verified = client
        .get(format!("http://127.0.0.1:{gateway_port}/_tessera/verify"))
        .header("X-API-KEY", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 204);
    assert_eq!(verified.headers()["x-tessera-token-id"], id.as_str());
    for _ in 0..3 {
        client
            .get(format!("{base}/api/v1/user/me"))
            .header("X-API-KEY", &value)
            .send()
            .await
            .unwrap();
    }
    client
        .get(format!("{base}/api/v1/user/me"))
        .bearer_auth(&value)
        .header("X-API-KEY", "tsr_other")
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/api/v1/tokens/verify"))
        .bearer_auth(&value)
        .json(&json!({"token": value, "bogus": true}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&value)
        .header("Content-Type", "application/json")
        .body(format!("{{\"name\": \"{value}"))
        .send()
        .await
        .unwrap();

    // SIGTERM with a request in flight (a login hashes a password for a while).
    let inflight = {
        let client = client.clone();
        let base = base.clone();
        let password = password.clone();
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/login"))
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        inflight.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.contains("Tessera stopped."), "{stderr}");

    // Buffered records were written before exit (read back through the store).
    {
        use tessera_core::store::{AccessFilter, AccessLogStore, Page};
        let store = tessera_store::sqlite::SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let filter = AccessFilter {
            token_id: Some(tessera_core::ids::TokenId::from_trusted(id.clone())),
            ..Default::default()
        };
        let page = Page {
            limit: 1000,
            after: None,
        };
        let uses = store.list_access(&filter, &page).await.unwrap().len();
        assert!(uses >= 6, "{uses}");
    }

    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{}", db.display(), suffix)) {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "token value in bin.db{suffix}"
            );
        }
    }
    assert!(
        !stderr.contains(&value),
        "token value in the server's output"
    );
    assert!(
        !stderr.contains(&session["tessera_session=".len()..]),
        "session id in the server's output"
    );
    assert!(
        stderr.contains("\"level\":\"DEBUG\"") || stderr.contains("DEBUG"),
        "debug logging was on"
    );
}

/// Two nodes on one PostgreSQL database, one a real process killed with SIGKILL in the
/// middle of forty token creates (four clients): every create it acknowledged (201) is there on the
/// other node, and the audit chain verifies.
#[tokio::test]
async fn a_node_killed_under_load_loses_nothing_it_acknowledged() {
    let storage = Storage::postgres().await;
    let admin_port = free_port();
    let mut killed = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--database-url", &storage.url()])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--gateway-addr", &format!("127.0.0.1:{}", free_port())])
        .env("TESSERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let a = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    assert!(comes_up(&client, &format!("{a}/healthz")).await);
    #[allow(clippy::disallowed_methods)] // the other node's clock must agree with the process's
    let now = chrono::Utc::now();
    let b = TestApp::spawn_in(storage.clone(), tessera_core::ManualClock::new(now)).await;

    // Four clients creating tokens one after another; the node is killed once ten
    // creates have been answered, with more in flight.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for worker in 0..4 {
        let (client, a, token, tx) = (client.clone(), a.clone(), b.admin_token.clone(), tx.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                let answer = client
                    .post(format!("{a}/api/v1/tokens"))
                    .header("X-API-KEY", &token)
                    .json(&json!({"name": format!("w{worker}-{i}")}))
                    .send()
                    .await;
                let Ok(answer) = answer else { return };
                if answer.status() != reqwest::StatusCode::CREATED {
                    return;
                }
                let Ok(body) = answer.json::<serde_json::Value>().await else {
                    return;
                };
                let _ = tx.send((
                    body["id"].as_str().unwrap().to_owned(),
                    body["token"].as_str().unwrap().to_owned(),
                ));
            }
        });
    }
    drop(tx);
    let mut acknowledged = Vec::new();
    while let Some((id, value)) = rx.recv().await {
        b.remember(&json!({"token": value}));
        acknowledged.push(id);
        if acknowledged.len() == 10 {
            killed.kill().unwrap();
        }
    }
    killed.wait().unwrap();
    assert!(acknowledged.len() >= 10, "killed under load");
    assert!(acknowledged.len() < 40, "killed before the load ended");
    for id in &acknowledged {
        let (s, t) = send(b.admin(reqwest::Method::GET, &format!("/api/v1/tokens/{id}"))).await;
        assert_eq!(s, reqwest::StatusCode::OK, "acknowledged, then lost: {t}");
    }
    let (_, verified) = send(b.admin(reqwest::Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(verified["ok"], true, "{verified}");
    eprintln!(
        "{} of 40 creates acknowledged before the kill",
        acknowledged.len()
    );
}
