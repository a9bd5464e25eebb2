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
    dir: Arc<tempfile::TempDir>,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = Arc::new(tempfile::tempdir().unwrap());
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
