//! The real `tessera` binary as a client: every command against a real server, each
//! exit status, the value alone on stdout, `--json` equal to the API's JSON, `apply`'s
//! diff, dry run and idempotence, and the offline `admin` commands on the database.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Asserts exit status `code`, showing the output when it is another.
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit {} instead of {code}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `tessera ARGS` against `url` with `token` in TESSERA_TOKEN and `stdin` on stdin.
async fn tessera_at(url: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .env("TESSERA_URL", url)
        .env_remove("TESSERA_TOKEN")
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_CA_CERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("TESSERA_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn tessera(app: &TestApp, args: &[&str]) -> Run {
    tessera_at(&app.url, Some(&app.admin_token), args, None).await
}

/// The value printed by `token create` / `regenerate`: alone on stdout, one line.
fn value_only(app: &TestApp, run: &Run) -> String {
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout holds more than the value: {}",
        run.stdout
    );
    let value = lines[0].to_owned();
    assert!(value.starts_with("tsr_") && value.len() == 53, "{value}");
    app.remember(&json!({ "token": value }));
    value
}

async fn status_with(app: &TestApp, token: &str) -> (StatusCode, Value) {
    send(app.with(token, Method::GET, "/api/v1/user/me")).await
}

#[tokio::test]
async fn token_commands_cover_the_lifecycle() {
    let app = TestApp::spawn_now().await;

    let me = tessera(&app, &["whoami"]).await.expect(0);
    assert!(
        me.stdout.contains("admin") && me.stdout.contains("test-admin"),
        "{}",
        me.stdout
    );
    let me = tessera(&app, &["whoami", "--json"]).await.expect(0).json();
    let (_, api_me) = send(app.admin(Method::GET, "/api/v1/user/me")).await;
    assert_eq!(me, api_me);

    // create: the value alone on stdout, the warning on stderr, and the value works.
    let run = tessera(
        &app,
        &[
            "token",
            "create",
            "--name",
            "ci-deploy",
            "--expires-in-days",
            "7",
            "--scope",
            "tokens:read",
            "--allow-cidr",
            "127.0.0.0/8",
            "--rate-limit",
            "100/60s",
            "--quota",
            "1000/daily",
            "--note",
            "GitOps pipeline",
        ],
    )
    .await
    .expect(0);
    let value = value_only(&app, &run);
    assert!(run.stderr.contains("shown only once"), "{}", run.stderr);
    assert!(!run.stderr.contains(&value));
    let (status, me) = status_with(&app, &value).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["auth"]["token_name"], "ci-deploy");

    // list: a table for people, the API's JSON for scripts.
    let table = tessera(&app, &["token", "list"]).await.expect(0).stdout;
    let header = table.lines().next().unwrap();
    for col in ["ID", "NAME", "STATUS", "SCOPES", "EXPIRES", "LAST USED"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table.lines().find(|l| l.contains("ci-deploy")).unwrap();
    assert!(
        row.contains("in 6 days") && row.contains("tokens:read"),
        "{row}"
    );
    let listed = tessera(&app, &["token", "list", "--json"])
        .await
        .expect(0)
        .json();
    let (_, api_list) = send(app.admin(Method::GET, "/api/v1/tokens")).await;
    assert_eq!(listed["items"], api_list["items"]);
    assert_eq!(listed["next_cursor"], Value::Null);
    // --expiring: only what expires within the span (the 7-day token, not the admin's
    // 30-day one); 24h counts as a day.
    let soon = tessera(&app, &["token", "list", "--expiring", "7d", "--json"])
        .await
        .expect(0)
        .json();
    let names: Vec<_> = soon["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, ["ci-deploy"]);
    let day = tessera(&app, &["token", "list", "--expiring", "24h", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(day["items"], json!([]));
    tessera(&app, &["token", "list", "--expiring", "0s"])
        .await
        .expect(2);

    // show, by name and by id, equal to the API's object (once the use above is counted).
    app.settle().await;
    let id = me["auth"]["token_id"].as_str().unwrap().to_owned();
    let shown = tessera(&app, &["token", "show", "ci-deploy"])
        .await
        .expect(0)
        .stdout;
    for want in [
        id.as_str(),
        "GitOps pipeline",
        "100/60s",
        "127.0.0.0/8",
        "in 6 days",
        "999 of 1000 left, refills daily",
        "recent addresses: 127.0.0.1",
    ] {
        assert!(shown.contains(want), "{want} missing from:\n{shown}");
    }
    let by_id = tessera(&app, &["token", "show", &id, "--json"])
        .await
        .expect(0)
        .json();
    let (_, api_tok) = send(app.admin(Method::GET, &format!("/api/v1/tokens/{id}"))).await;
    assert_eq!(by_id, api_tok);

    // rename keeps the value working; the old name is gone.
    tessera(&app, &["token", "rename", "ci-deploy", "ci"])
        .await
        .expect(0);
    assert_eq!(status_with(&app, &value).await.0, StatusCode::OK);
    let gone = tessera(&app, &["token", "show", "ci-deploy"])
        .await
        .expect(1);
    assert!(gone.stderr.contains("not_found"), "{}", gone.stderr);

    // regenerate with a grace period: both values work; without one the old one dies.
    let run = tessera(&app, &["token", "regenerate", "ci", "--grace", "1h"])
        .await
        .expect(0);
    let second = value_only(&app, &run);
    assert!(
        run.stderr.contains("keeps working for 1 hour"),
        "{}",
        run.stderr
    );
    assert_eq!(status_with(&app, &value).await.0, StatusCode::OK);
    assert_eq!(status_with(&app, &second).await.0, StatusCode::OK);
    let run = tessera(&app, &["token", "regenerate", &id]).await.expect(0);
    let third = value_only(&app, &run);
    assert_eq!(status_with(&app, &second).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&app, &third).await.0, StatusCode::OK);

    // disable / enable / delete.
    let run = tessera(&app, &["token", "disable", "ci"]).await.expect(0);
    assert!(run.stdout.contains("disabled"), "{}", run.stdout);
    let (status, body) = status_with(&app, &third).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_disabled"))
    );
    let enabled = tessera(&app, &["token", "enable", "ci", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(enabled["status"], "active");
    assert_eq!(status_with(&app, &third).await.0, StatusCode::OK);
    tessera(&app, &["token", "delete", "ci"]).await.expect(0);
    assert_eq!(status_with(&app, &third).await.0, StatusCode::UNAUTHORIZED);

    // --json on create carries the value in the API's shape.
    let created = tessera(&app, &["token", "create", "--name", "scripted", "--json"])
        .await
        .expect(0)
        .json();
    let scripted = app.remember(&created);
    assert_eq!(created["name"], "scripted");
    assert_eq!(status_with(&app, &scripted).await.0, StatusCode::OK);

    // delete --all needs --yes (a usage error), then deletes every token of the caller,
    // the one it runs with included.
    let run = tessera(&app, &["token", "delete", "--all"]).await.expect(2);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(status_with(&app, &scripted).await.0, StatusCode::OK);
    let run = tessera(&app, &["token", "delete", "--all", "--yes"])
        .await
        .expect(0);
    assert!(run.stdout.contains("Deleted 2 tokens"), "{}", run.stdout);
    assert_eq!(
        status_with(&app, &scripted).await.0,
        StatusCode::UNAUTHORIZED
    );
    let run = tessera(&app, &["whoami"]).await.expect(1);
    assert!(run.stderr.contains("(invalid_token)"), "{}", run.stderr);
}

#[tokio::test]
async fn exit_statuses_tell_refused_usage_and_unreachable_apart() {
    let app = TestApp::spawn_now().await;

    // 2: usage — a missing flag, a malformed rate limit, two expiries, a bad URL.
    for args in [
        &["token", "create"][..],
        &["token", "create", "--name", "x", "--rate-limit", "lots"],
        &[
            "token",
            "create",
            "--name",
            "x",
            "--never-expires",
            "--expires-in-days",
            "7",
        ],
        &["frobnicate"],
    ] {
        let run = tessera(&app, args).await.expect(2);
        assert!(!run.stderr.is_empty());
    }
    let run = tessera_at("not a url", Some(&app.admin_token), &["whoami"], None)
        .await
        .expect(2);
    assert!(run.stderr.contains("TESSERA_URL"), "{}", run.stderr);

    // 1: refused — its code and message, fields named, no debug dump.
    let run = tessera(
        &app,
        &[
            "token",
            "create",
            "--name",
            "long",
            "--expires-in-days",
            "9999",
        ],
    )
    .await
    .expect(1);
    assert!(run.stderr.starts_with("tessera: "), "{}", run.stderr);
    assert!(run.stderr.contains("(validation_failed)"), "{}", run.stderr);
    assert!(run.stderr.contains("expires_in_days:"), "{}", run.stderr);
    assert!(!run.stderr.contains("Refused {"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = tessera_at(&app.url, None, &["whoami"], None)
        .await
        .expect(1);
    assert!(
        run.stderr.contains("(unauthenticated)") && run.stderr.contains("TESSERA_TOKEN"),
        "{}",
        run.stderr
    );
    let run = tessera_at(&app.url, Some("tsr_nope"), &["token", "list"], None)
        .await
        .expect(1);
    assert!(run.stderr.contains("(invalid_token)"), "{}", run.stderr);

    // 3: unreachable — nothing listens on that port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}");
    let run = tessera_at(&url, Some(&app.admin_token), &["whoami"], None)
        .await
        .expect(3);
    assert!(
        run.stderr.contains("cannot reach") && run.stderr.contains(&url),
        "{}",
        run.stderr
    );

    assert!(!run.stderr.contains(&app.admin_token));

    let script = tessera(&app, &["completions", "bash"]).await.expect(0);
    assert!(script.stdout.contains("tessera") && script.stdout.contains("regenerate"));
    tessera(&app, &["completions", "zsh"]).await.expect(0);
    tessera(&app, &["completions", "fish"]).await.expect(0);
}

#[tokio::test]
async fn account_role_policy_and_audit_commands() {
    let app = TestApp::spawn_now().await;

    let run = tessera(
        &app,
        &[
            "role",
            "create",
            "orders-reader",
            "--permission",
            "orders:read",
        ],
    )
    .await
    .expect(0);
    assert!(run.stdout.contains("orders-reader"));
    tessera(
        &app,
        &[
            "role",
            "update",
            "orders-reader",
            "--permission",
            "orders:read",
            "--permission",
            "orders:list",
        ],
    )
    .await
    .expect(0);
    let roles = tessera(&app, &["role", "list", "--json"])
        .await
        .expect(0)
        .json();
    let (_, api_roles) = send(app.admin(Method::GET, "/api/v1/roles")).await;
    assert_eq!(roles, api_roles);
    let table = tessera(&app, &["role", "list"]).await.expect(0).stdout;
    assert!(
        table
            .lines()
            .any(|l| l.contains("orders-reader") && l.contains("orders:list")),
        "{table}"
    );

    // A generated password is printed alone and works; one from stdin works too.
    let run = tessera(
        &app,
        &[
            "account",
            "create",
            "bob",
            "--role",
            "orders-reader",
            "--role",
            "developer",
        ],
    )
    .await
    .expect(0);
    let password = run.stdout.trim().to_owned();
    assert_eq!(run.stdout.lines().count(), 1);
    assert!(run.stderr.contains("shown only once"));
    app.login("bob", &password).await;
    let run = tessera_at(
        &app.url,
        Some(&app.admin_token),
        &["account", "create", "carol", "--password-stdin", "--json"],
        Some("a-long-enough-password\n"),
    )
    .await
    .expect(0);
    assert_eq!(run.json()["username"], "carol");
    app.login("carol", "a-long-enough-password").await;

    let shown = tessera(&app, &["account", "show", "bob"])
        .await
        .expect(0)
        .stdout;
    assert!(
        shown.contains("orders:read") && shown.contains("active"),
        "{shown}"
    );
    tessera(&app, &["account", "update", "bob", "--disable"])
        .await
        .expect(0);
    let bob = tessera(&app, &["account", "show", "bob", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(bob["disabled"], true);
    let run = tessera(&app, &["account", "update", "bob"]).await.expect(2);
    assert!(run.stderr.contains("nothing to change"));
    let accounts = tessera(&app, &["account", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(accounts["items"].as_array().unwrap().len(), 3);
    tessera(&app, &["account", "delete", "carol"])
        .await
        .expect(0);
    tessera(&app, &["account", "show", "carol"]).await.expect(1);
    // The last super_admin cannot be disabled: the server's conflict, exit 1.
    let run = tessera(&app, &["account", "update", "admin", "--disable"])
        .await
        .expect(1);
    assert!(run.stderr.contains("(conflict)"), "{}", run.stderr);
    tessera(&app, &["role", "delete", "orders-reader"])
        .await
        .expect(1); // bob still has it
    tessera(&app, &["account", "delete", "bob"]).await.expect(0);
    tessera(&app, &["role", "delete", "orders-reader"])
        .await
        .expect(0);

    // Policy: set changes only the given fields.
    let policy = tessera(
        &app,
        &[
            "policy",
            "set",
            "--max-tokens-per-account",
            "5",
            "--max-expiry-days",
            "none",
            "--json",
        ],
    )
    .await
    .expect(0)
    .json();
    let (_, api_policy) = send(app.admin(Method::GET, "/api/v1/settings/token-policy")).await;
    assert_eq!(policy, api_policy);
    assert_eq!(
        policy,
        json!({"default_expiry_days": 30, "max_expiry_days": null, "allow_never_expires": false, "max_tokens_per_account": 5})
    );
    let shown = tessera(&app, &["policy", "show"]).await.expect(0).stdout;
    assert!(shown.contains("no limit") && shown.contains("5"), "{shown}");

    // Audit: list filters, verify passes, then fails (exit 1) once a row is edited.
    let list = tessera(
        &app,
        &["audit", "list", "--action", "role.create", "--json"],
    )
    .await
    .expect(0)
    .json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["target"]["name"], "orders-reader");
    let table = tessera(&app, &["audit", "list", "--since", "1h", "--limit", "3"])
        .await
        .expect(0);
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);
    assert!(table.stderr.contains("--cursor"), "{}", table.stderr);
    let ok = tessera(&app, &["audit", "verify"]).await.expect(0);
    assert!(ok.stdout.contains("intact"), "{}", ok.stdout);

    app.write_behind_its_back("UPDATE audit_log SET action = 'token.delete' WHERE seq = 2")
        .await;
    let bad = tessera(&app, &["audit", "verify"]).await.expect(1);
    assert!(bad.stderr.contains("entry 2"), "{}", bad.stderr);
}

const GATEWAY_YAML: &str = r#"
services:
  - name: orders
    upstreams: ["http://127.0.0.1:9"]
    timeout_ms: 5000
routes:
  - name: orders-api
    service: orders
    path_prefix: /orders
    scopes: ["orders:read"]
  - name: health
    service: orders
    path_prefix: /health
    auth: none
"#;

#[tokio::test]
async fn apply_prints_the_diff_dry_runs_and_is_idempotent() {
    let app = TestApp::spawn_now().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, GATEWAY_YAML).unwrap();
    let path = file.to_str().unwrap();

    let dry = tessera(&app, &["apply", "-f", path, "--dry-run"])
        .await
        .expect(0)
        .stdout;
    for want in [
        "+ service orders",
        "+ route orders-api",
        "+ route health",
        "Dry run",
    ] {
        assert!(dry.contains(want), "{want} missing from:\n{dry}");
    }
    let (_, services) = send(app.admin(Method::GET, "/api/v1/services")).await;
    assert_eq!(services["items"], json!([]));

    let applied = tessera(&app, &["apply", "-f", path, "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        applied,
        json!({"services": {"create": ["orders"], "update": [], "delete": []},
               "routes": {"create": ["orders-api", "health"], "update": [], "delete": []}})
    );
    let (_, routes) = send(app.admin(Method::GET, "/api/v1/routes")).await;
    assert_eq!(routes["items"].as_array().unwrap().len(), 2);

    let again = tessera(&app, &["apply", "-f", path]).await.expect(0).stdout;
    assert!(again.contains("No changes"), "{again}");

    // A change and a removal, read from stdin.
    let changed = GATEWAY_YAML.replace("timeout_ms: 5000", "timeout_ms: 7000");
    let changed = &changed[..changed.find("  - name: health").unwrap()];
    let run = tessera_at(
        &app.url,
        Some(&app.admin_token),
        &["apply", "-f", "-"],
        Some(changed),
    )
    .await
    .expect(0);
    assert!(
        run.stdout.contains("~ service orders") && run.stdout.contains("- route health"),
        "{}",
        run.stdout
    );

    // Broken YAML is a usage error; a field the API does not know is its refusal.
    std::fs::write(&file, "services: [").unwrap();
    tessera(&app, &["apply", "-f", path]).await.expect(2);
    std::fs::write(
        &file,
        "services:\n  - name: x\n    upstreams: []\n    colour: red\n",
    )
    .unwrap();
    let run = tessera(&app, &["apply", "-f", path]).await.expect(1);
    assert!(
        run.stderr.contains("(invalid_request)") || run.stderr.contains("(validation_failed)"),
        "{}",
        run.stderr
    );
    let run = tessera(&app, &["apply", "-f", "/no/such/file.yaml"])
        .await
        .expect(2);
    assert!(run.stderr.contains("/no/such/file.yaml"));
}

#[tokio::test]
async fn admin_commands_work_on_the_database_beside_a_running_server() {
    let app = TestApp::spawn_now().await;
    let db = app.database_url();
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--database-url", db.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run_admin = |args: Vec<String>, stdin: Option<&'static str>| {
        let url = app.url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tessera_at(&url, None, &args, stdin).await
        }
    };

    // create-token: the value alone, usable on the running server, audited as local.
    let run = run_admin(
        admin(&[
            "create-token",
            "--account",
            "admin",
            "--name",
            "ops",
            "--scope",
            "tokens:read",
        ]),
        None,
    )
    .await
    .expect(0);
    let value = value_only(&app, &run);
    let (status, me) = status_with(&app, &value).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["auth"]["scopes"], json!(["tokens:read"]));
    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs?action=token.create")).await;
    let entry = &audit["items"][0];
    assert_eq!(entry["target"]["name"], "ops");
    assert_eq!(entry["user_agent"], "tessera admin (local)");
    assert_eq!(entry["actor"]["username"], "admin");
    // The policy and validation still apply.
    let run = run_admin(
        admin(&["create-token", "--account", "admin", "--name", "ops"]),
        None,
    )
    .await
    .expect(1);
    assert!(
        run.stderr.contains("ops") || run.stderr.contains("exists"),
        "{}",
        run.stderr
    );
    run_admin(
        admin(&["create-token", "--account", "nobody", "--name", "x"]),
        None,
    )
    .await
    .expect(1);

    // reset-password: a generated one works, the old one and the old session do not.
    let session = app.login("admin", ADMIN_PASSWORD).await;
    let run = run_admin(admin(&["reset-password", "admin"]), None)
        .await
        .expect(0);
    let password = run.stdout.trim().to_owned();
    assert!(
        password.len() >= 20 && run.stdout.lines().count() == 1,
        "{}",
        run.stdout
    );
    let (status, _) = send(
        app.req(Method::POST, "/api/v1/login")
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.login("admin", &password).await;
    let (status, _) = send(app.session_req(&session, Method::GET, "/api/v1/user/me")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let run = run_admin(
        admin(&["reset-password", "admin", "--password-stdin"]),
        Some("short\n"),
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("password"), "{}", run.stderr);
    run_admin(
        admin(&["reset-password", "admin", "--password-stdin"]),
        Some("back-to-the-old-one\n"),
    )
    .await
    .expect(0);
    app.login("admin", "back-to-the-old-one").await;
    let (_, audit) = send(app.admin(Method::GET, "/api/v1/audit-logs?action=account.update")).await;
    assert_eq!(audit["items"][0]["actor"]["username"], "system");
    assert_eq!(audit["items"][0]["details"], json!({"password": "reset"}));

    // No database there: exit 3, and nothing created.
    let missing = app.dir.path().join("missing.db");
    let url = format!("sqlite://{}", missing.display());
    let run = tessera_at(
        &app.url,
        None,
        &["admin", "--database-url", &url, "reset-password", "admin"],
        None,
    )
    .await
    .expect(3);
    assert!(run.stderr.contains("no database"), "{}", run.stderr);
    assert!(!missing.exists());
}

/// `tessera admin migrate-db`: a SQLite deployment moves to PostgreSQL whole. A node on
/// the new database accepts the same tokens, keeps their usage, and verifies the same
/// audit chain; a second copy into it is refused.
#[tokio::test]
async fn admin_migrate_db_moves_a_sqlite_deployment_to_postgres() {
    let mut old = TestApp::spawn_on(Storage::sqlite_in(tempfile::tempdir().unwrap())).await;
    let t = old
        .create_token(&old.admin_token, json!({"name": "moved"}))
        .await;
    let (id, v) = (
        t["id"].as_str().unwrap().to_owned(),
        t["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        send(old.with(&v, Method::GET, "/api/v1/tokens")).await.0,
        200
    );
    let (_, chain) = send(old.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    old.stop().await;

    let new = Storage::postgres().await;
    let migrate = [
        "admin",
        "migrate-db",
        "--from",
        &old.database_url(),
        "--to",
        &new.url(),
    ];
    let run = tessera_at(&old.url, None, &migrate, None).await.expect(0);
    assert!(run.stderr.contains("verified"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("postgres:postgres"),
        "no password shown"
    );

    let node = TestApp::spawn_in(new.clone(), old.clock.clone()).await;
    let (s, shown) = send(node.with(&v, Method::GET, &format!("/api/v1/tokens/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["usage"]["allowed"], 1, "usage came along");
    let (s, verified) = send(node.admin(Method::GET, "/api/v1/audit-logs/verify")).await;
    assert_eq!(s, StatusCode::OK, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified["entries"].as_i64().unwrap() > chain["entries"].as_i64().unwrap(),
        "the old chain and the new node's own entries: {chain} {verified}"
    );

    let again = tessera_at(&old.url, None, &migrate, None).await;
    assert_ne!(again.code, 0, "a second copy is refused");
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
}
