//! Storage faults as an operator's bad day brings them: a full disk answers 503 and
//! `/readyz` says so; once space is freed the service recovers by itself, and nothing it
//! acknowledged is lost.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::ManualClock;

/// A small tmpfs mounted over a temporary folder, unmounted on drop. `None` where this
/// process may not mount (not root): the caller skips, except under CI, where that is a
/// failure.
struct Tmpfs {
    dir: Arc<Storage>,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = Storage::sqlite_in(tempfile::tempdir().unwrap());
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs (run the tests as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (not root)");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` with a file, until it is full.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_disk_answers_503_and_the_service_recovers_when_space_is_freed() {
    let Some(disk) = Tmpfs::mount("6m") else {
        return;
    };
    let app = TestApp::spawn_in(disk.dir.clone(), ManualClock::new(start_time())).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let t = app
            .create_token(&app.admin_token, json!({"name": format!("before-{i}")}))
            .await;
        acknowledged.push(t["id"].as_str().unwrap().to_owned());
    }

    fill(disk.dir.path());
    let mut refused = None;
    for i in 0..2000 {
        let resp = app
            .admin(Method::POST, "/api/v1/tokens")
            .json(&json!({"name": format!("during-{i}"), "note": "x".repeat(900)}))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::CREATED => {
                let body: serde_json::Value = resp.json().await.unwrap();
                app.remember(&body);
                acknowledged.push(body["id"].as_str().unwrap().to_owned());
                // The limit of 50 tokens an account: make room, durably too.
                if acknowledged.len() >= 45 {
                    let id = acknowledged.remove(5);
                    let (s, _) =
                        send(app.admin(Method::DELETE, &format!("/api/v1/tokens/{id}"))).await;
                    if s == StatusCode::SERVICE_UNAVAILABLE {
                        acknowledged.insert(5, id);
                    }
                }
            }
            _ => {
                refused = Some(resp);
                break;
            }
        }
    }
    let refused = refused.expect("the writes never failed on a full disk");
    expect_error(refused, 503, "unavailable").await;
    let ready = app.req(Method::GET, "/readyz").send().await.unwrap();
    expect_error(ready, 503, "unavailable").await;
    // Reads still work.
    let (status, _) = send(app.admin(Method::GET, "/api/v1/tokens")).await;
    assert_eq!(status, 200);

    std::fs::remove_file(disk.dir.path().join("filler")).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if app
            .req(Method::GET, "/readyz")
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "/readyz stayed 503 after space was freed");
    let after = app
        .create_token(&app.admin_token, json!({"name": "after"}))
        .await;
    acknowledged.push(after["id"].as_str().unwrap().to_owned());

    // Nothing acknowledged is lost, and the audit chain holds.
    for id in &acknowledged {
        let (status, body) = send(app.admin(Method::GET, &format!("/api/v1/tokens/{id}"))).await;
        assert_eq!(status, 200, "{id}: {body}");
    }
    let (_, verify) = send(app.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(verify["ok"], true, "{verify}");
}

/// `tessera serve` on `db`, with the admin password set; answers the child and the
/// admin API's base URL once it answers. (A server that never comes up fails the test,
/// and the test's end reaps it.)
#[allow(clippy::zombie_processes)]
async fn serve_binary(db: &Path) -> (std::process::Child, String) {
    let (admin, gateway) = (crate::binary::free_port(), crate::binary::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--gateway-addr", &format!("127.0.0.1:{gateway}")])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .env("TESSERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{admin}");
    let up = crate::binary::comes_up(&reqwest::Client::new(), &format!("{base}/healthz")).await;
    assert!(up, "the server did not come up");
    (child, base)
}

/// A token for the admin, made through a session.
async fn admin_token(client: &reqwest::Client, base: &str) -> String {
    let login = client
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/tokens"))
        .header("Cookie", session)
        .header("Origin", base)
        .json(&json!({"name": "writer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (mut child, base) = serve_binary(&db).await;
    let client = reqwest::Client::new();
    let token = admin_token(&client, &base).await;
    // The account's quota of tokens is the policy's: room for the load.
    let (s, _) = send(
        client
            .put(format!("{base}/api/v1/settings/token-policy"))
            .header("X-API-KEY", &token)
            .json(&json!({"default_expiry_days": 30, "max_expiry_days": 365,
                          "allow_never_expires": false, "max_tokens_per_account": 10000})),
    )
    .await;
    assert_eq!(s, 200);

    // Four writers create tokens until the server dies under them.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base, token, acknowledged) = (
            client.clone(),
            base.clone(),
            token.clone(),
            acknowledged.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let resp = client
                    .post(format!("{base}/api/v1/tokens"))
                    .header("X-API-KEY", &token)
                    .json(&json!({"name": format!("w{w}-{i}")}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(id) = body["id"].as_str() {
                            acknowledged.lock().unwrap().push(id.to_owned());
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let (mut child, base) = serve_binary(&db).await;
    for id in &acknowledged {
        let (status, body) = send(
            client
                .get(format!("{base}/api/v1/tokens/{id}"))
                .header("X-API-KEY", &token),
        )
        .await;
        assert_eq!(status, 200, "{id} was acknowledged and is gone: {body}");
    }
    let (_, verify) = send(
        client
            .get(format!("{base}/api/v1/audit-logs/verify"))
            .header("X-API-KEY", &token),
    )
    .await;
    assert_eq!(verify["ok"], true, "{verify}");
    let (_, creates) = send(
        client
            .get(format!(
                "{base}/api/v1/audit-logs?action=token.create&limit=1000"
            ))
            .header("X-API-KEY", &token),
    )
    .await;
    let audited = creates["items"].as_array().unwrap().len();
    assert!(
        audited > acknowledged.len(),
        "{audited} token.create entries for {} acknowledged creates and the first token",
        acknowledged.len()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// PostgreSQL out of reach (a node's connections closed, new ones refused): the node
/// answers 503 `unavailable` to what needs the database, which, with its feed of other
/// nodes' changes gone too, includes every token verification (it cannot know whether a
/// token was revoked elsewhere); `/readyz` says so. Once the database is back the node
/// recovers by itself.
#[tokio::test]
async fn a_node_cut_off_from_postgres_answers_503_and_recovers() {
    let app = TestApp::spawn_on(Storage::postgres().await).await;
    let db = app.dir.database().unwrap();
    let t = app
        .create_token(&app.admin_token, json!({"name": "t"}))
        .await;
    let v = t["token"].as_str().unwrap().to_owned();
    let uses = async || send(app.with(&v, Method::GET, "/api/v1/tokens")).await;
    assert_eq!(uses().await.0, StatusCode::OK);
    let up = crate::gateway::upstream("up").await;
    app.apply(
        json!({"services": [{"name": "s", "upstreams": [up]}],
               "routes": [{"name": "r", "service": "s", "path_prefix": "/r"},
                          {"name": "o", "service": "s", "path_prefix": "/o", "auth": "none"}]}),
        false,
    )
    .await;
    let through = async || {
        let rb = app.gw(Method::GET, "/r/x").header("X-API-KEY", &v);
        rb.send().await.unwrap().status()
    };
    assert_eq!(through().await, StatusCode::OK);

    db.cut_off(true).await;
    // The node notices when its feed's connection is gone (at once, here).
    let started = std::time::Instant::now();
    while app.metric("tessera_change_feed_connected").await != 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the feed is lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From then on the token, cached a moment ago, is verified against the database.
    let (s, body) = uses().await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(through().await, StatusCode::SERVICE_UNAVAILABLE);
    let open = app.gw(Method::GET, "/o/x").send().await.unwrap();
    assert_eq!(
        open.status(),
        StatusCode::OK,
        "an auth: none route needs no database"
    );
    let ready = app.req(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    db.cut_off(false).await;
    let started = std::time::Instant::now();
    while uses().await.0 != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "recovers once the database is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(through().await, StatusCode::OK);
    let ready = app.req(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
