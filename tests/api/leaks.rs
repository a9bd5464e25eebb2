//! Leak reports: `POST /api/v1/tokens/leaked` disables every live token among the
//! values, without authentication, bounded per client address.

use crate::helpers::*;
use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `value` with one character of its body changed: the right shape, a wrong checksum.
fn look_alike(value: &str) -> String {
    let mut s = value.to_owned();
    let c = if &s[10..11] == "a" { "b" } else { "a" };
    s.replace_range(10..11, c);
    s
}

#[tokio::test]
async fn a_reported_value_disables_its_token_everywhere_at_once() {
    let app = TestApp::spawn().await;
    let t = &app.admin_token;
    let me = |token: &str| send(app.with(token, Method::GET, "/api/v1/user/me"));
    let leaked = app.create_token(t, json!({"name": "leaked"})).await;
    let a = leaked["token"].as_str().unwrap().to_owned();
    let rotated = app.create_token(t, json!({"name": "rotated"})).await;
    let b_old = rotated["token"].as_str().unwrap().to_owned();
    let (status, regenerated) = send(
        app.admin(
            Method::POST,
            &format!(
                "/api/v1/tokens/{}/regenerate",
                rotated["id"].as_str().unwrap()
            ),
        )
        .json(&json!({"grace_period_seconds": 3600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{regenerated}");
    let b_new = app.remember(&regenerated);
    let bystander = app.create_token(t, json!({"name": "bystander"})).await;
    let c = bystander["token"].as_str().unwrap().to_owned();
    let off = app.create_token(t, json!({"name": "already-off"})).await;
    let off_id = off["id"].as_str().unwrap();
    send(app.admin(Method::POST, &format!("/api/v1/tokens/{off_id}/disable"))).await;
    // Each works (and is cached) before the report.
    for v in [&a, &b_old, &b_new, &c] {
        assert_eq!(me(v).await.0, StatusCode::OK);
    }

    let unknown = tessera_core::token::TokenValue::generate().unwrap();
    let (status, outcome) = send(app.req(Method::POST, "/api/v1/tokens/leaked").json(&json!({
        "tokens": [a, a, b_old, look_alike(&c), "tsr_not-a-token", unknown.expose_secret(),
                   off["token"]]
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome, json!({"received": 7, "revoked": 2}));

    // The old value of the rotated token is gone altogether: its grace ended.
    for (v, code) in [
        (&a, "token_disabled"),
        (&b_new, "token_disabled"),
        (&b_old, "invalid_token"),
    ] {
        let e = error_of(app.with(v, Method::GET, "/api/v1/user/me"), 401, code).await;
        assert!(!e.to_string().contains(v.as_str()));
    }
    assert_eq!(
        me(&c).await.0,
        StatusCode::OK,
        "a look-alike revokes nothing"
    );
    let app = &app;
    let show = |id: &Value| {
        let path = format!("/api/v1/tokens/{}", id.as_str().unwrap());
        async move { send(app.admin(Method::GET, &path)).await.1 }
    };
    let shown = show(&leaked["id"]).await;
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["disabled_reason"], "leaked");
    assert_eq!(show(&rotated["id"]).await["disabled_reason"], "leaked");
    assert_eq!(show(&off["id"]).await["disabled_reason"], "manual");
    assert_eq!(show(&bystander["id"]).await["disabled_reason"], Value::Null);

    // Audited once per token, by nobody known, with the reporter's address, no value.
    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs?action=token.leaked")).await;
    let entries = audit["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    for e in entries {
        assert_eq!(e["actor"]["account_id"], Value::Null);
        assert_eq!(e["ip"], "127.0.0.1");
        for v in [&a, &b_old, &b_new] {
            assert!(!e.to_string().contains(v.as_str()));
        }
    }
    let matched: Vec<&str> = entries
        .iter()
        .map(|e| e["details"]["value"].as_str().unwrap())
        .collect();
    assert!(
        matched.contains(&"current") && matched.contains(&"previous"),
        "{matched:?}"
    );

    // Re-enabled by its owner, the old value of the rotated token stays dead: its grace ended.
    let rotated_id = rotated["id"].as_str().unwrap();
    let (status, enabled) =
        send(app.admin(Method::POST, &format!("/api/v1/tokens/{rotated_id}/enable"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(me(&b_new).await.0, StatusCode::OK);
    assert_eq!(me(&b_old).await.0, StatusCode::UNAUTHORIZED);

    // Reported again: nothing left to revoke.
    let (_, again) = send(
        app.req(Method::POST, "/api/v1/tokens/leaked")
            .json(&json!({"tokens": [a]})),
    )
    .await;
    assert_eq!(again, json!({"received": 1, "revoked": 0}));
}

#[tokio::test]
async fn leak_reports_are_bounded_per_address_and_in_size() {
    let app = TestApp::spawn().await;
    let report = |n: usize| {
        let values = vec!["tsr_x"; n];
        app.req(Method::POST, "/api/v1/tokens/leaked")
            .json(&json!({"tokens": values}))
    };
    let e = error_of(report(101), 422, "validation_failed").await;
    assert!(e["error"]["details"]["fields"]["tokens"].is_string(), "{e}");
    error_of(
        app.req(Method::POST, "/api/v1/tokens/leaked")
            .json(&json!({"values": []})),
        400,
        "invalid_request",
    )
    .await;
    // The refused report counted; the unreadable body did not reach the count.
    for _ in 0..29 {
        assert_eq!(send(report(1)).await.0, StatusCode::OK);
    }
    let resp = report(1).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    expect_error(resp, 429, "rate_limited").await;
    app.clock.advance(Duration::seconds(61));
    assert_eq!(send(report(1)).await.0, StatusCode::OK, "a new minute");
}

/// Runs git in `dir`, asserting success unless `may_fail`.
fn git(dir: &std::path::Path, args: &[&str], may_fail: bool) -> bool {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        may_fail || out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

#[tokio::test]
async fn scan_finds_values_in_files_and_history_and_reports_them() {
    let app = TestApp::spawn().await;
    let t = &app.admin_token;
    let in_tree = app.create_token(t, json!({"name": "in-tree"})).await;
    let v1 = in_tree["token"].as_str().unwrap().to_owned();
    let in_history = app.create_token(t, json!({"name": "in-history"})).await;
    let v2 = in_history["token"].as_str().unwrap().to_owned();
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q", "-b", "main"], false);
    std::fs::write(dir.join("old.txt"), format!("first\nsecond\nTOKEN={v2}\n")).unwrap();
    git(dir, &["add", "."], false);
    git(dir, &["commit", "-q", "-m", "oops"], false);
    std::fs::remove_file(dir.join("old.txt")).unwrap();
    std::fs::write(dir.join(".env"), format!("# settings\nAPI_KEY={v1}\n")).unwrap();
    std::fs::write(
        dir.join("docs.md"),
        format!(
            "Looks like one, is not: {} and tsr_example\n",
            look_alike(&v1)
        ),
    )
    .unwrap();
    git(dir, &["add", "-A"], false);
    git(dir, &["commit", "-q", "-m", "fix"], false);
    std::fs::write(dir.join("ignored.log"), format!("{v1}\n")).unwrap();
    std::fs::write(dir.join(".gitignore"), "*.log\n").unwrap();
    let display = |v: &str| format!("tsr_…{}", &v[49..]);
    let no_value = |out: &str| {
        assert!(
            !out.contains(&v1) && !out.contains(&v2),
            "a value was printed: {out}"
        );
    };

    // Files: the .env file (hidden, not ignored); not the ignored log, not the look-alike.
    let (code, out, err) = run_cli(&app, None, dir, &["scan"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, format!("./.env:2: {}\n", display(&v1)));
    assert!(err.contains("1 token value(s) found"), "{err}");
    no_value(&(out + &err));
    let (code, out, _) = run_cli(&app, None, dir, &["scan", "docs.md"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "a wrong checksum is not a finding"
    );

    // History too: the value that is gone from the files, in the commit that added it.
    let (code, out, err) = run_cli(&app, None, dir, &["--json", "scan", "--git", "."]).await;
    assert_eq!(code, 1, "{err}");
    no_value(&out);
    let found: Value = serde_json::from_str(&out).unwrap();
    let places: Vec<(String, u64, String, bool)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
                f["display"].as_str().unwrap().to_owned(),
                f["commit"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        places,
        vec![
            ("./.env".to_owned(), 2, display(&v1), false),
            (".env".to_owned(), 2, display(&v1), true),
            ("old.txt".to_owned(), 3, display(&v2), true),
        ]
    );

    // Reported: both tokens are disabled as leaked; the token in neither place is not.
    let (code, _, err) = run_cli(&app, None, dir, &["scan", "--git", "--report"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("reported 2 value(s)") && err.contains("2 live token(s) disabled"),
        "{err}"
    );
    for id in [&in_tree["id"], &in_history["id"]] {
        let path = format!("/api/v1/tokens/{}", id.as_str().unwrap());
        assert_eq!(
            send(app.admin(Method::GET, &path)).await.1["disabled_reason"],
            "leaked"
        );
    }
    assert_eq!(
        send(app.admin(Method::GET, "/api/v1/user/me")).await.0,
        StatusCode::OK
    );

    // As a pre-commit hook: a commit that adds a value is refused.
    let hook = dir.join(".git/hooks/pre-commit");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\nexec '{}' scan\n", env!("CARGO_BIN_EXE_tessera")),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .unwrap();
    git(dir, &["add", "-A"], false);
    assert!(
        !git(dir, &["commit", "-q", "-m", "add env"], true),
        "the hook refused the commit"
    );
    std::fs::remove_file(dir.join(".env")).unwrap();
    git(dir, &["add", "-A"], false);
    assert!(
        git(dir, &["commit", "-q", "-m", "clean"], true),
        "a clean tree commits"
    );
}
