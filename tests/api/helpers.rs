//! `TestApp`: a Tessera on two loopback ports over a fresh database, with a manual
//! clock, an admin token, and a record of every token value it handed out, so that it
//! can check on drop that none of them reached the database or the logs.
//!
//! The database is a SQLite file, or, with `TESSERA_TEST_BACKEND=postgres`, a PostgreSQL
//! database of the test's own ([`Storage`]): the whole suite runs against either.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tessera_core::{ManualClock, Timestamp};
use tessera_server::{service::LoginLimits, App, ServerConfig};
use tessera_store::conformance::TestDatabase;
use tessera_store::AnyStore;

/// Where a test server keeps its data, across restarts: a directory for files, and the
/// database (a SQLite file in it, or a PostgreSQL database of its own).
#[derive(Debug)]
pub struct Storage {
    dir: tempfile::TempDir,
    postgres: Option<TestDatabase>,
}

impl Storage {
    /// The backend `TESSERA_TEST_BACKEND` names (`sqlite`, the default, or `postgres`).
    pub async fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let postgres = match std::env::var("TESSERA_TEST_BACKEND").as_deref() {
            Ok("postgres") => Some(TestDatabase::create().await),
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("TESSERA_TEST_BACKEND={other}: expected sqlite or postgres"),
        };
        Arc::new(Self { dir, postgres })
    }

    /// PostgreSQL, whatever the environment says: for tests of several nodes.
    pub async fn postgres() -> Arc<Self> {
        Arc::new(Self {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some(TestDatabase::create().await),
        })
    }

    /// SQLite in `dir`, whatever the environment says: for tests of the file itself.
    pub fn sqlite_in(dir: tempfile::TempDir) -> Arc<Self> {
        Arc::new(Self {
            dir,
            postgres: None,
        })
    }

    /// The PostgreSQL database, for tests that need it.
    pub fn database(&self) -> Option<&TestDatabase> {
        self.postgres.as_ref()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        match &self.postgres {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.sqlite_file().display()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    fn sqlite_file(&self) -> PathBuf {
        self.dir.path().join("tessera.db")
    }

    /// Runs `sql` on the database directly, as another program would.
    pub async fn execute(&self, sql: &str) {
        if self.is_postgres() {
            let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Everything stored, as bytes to search: the SQLite files, or every PostgreSQL
    /// table's rows as text.
    fn contents(&self) -> Vec<(String, Vec<u8>)> {
        if self.postgres.is_none() {
            return ["", "-wal", "-shm"]
                .iter()
                .filter_map(|suffix| {
                    let p = PathBuf::from(format!("{}{suffix}", self.sqlite_file().display()));
                    std::fs::read(&p).ok().map(|b| (p.display().to_string(), b))
                })
                .collect();
        }
        let url = self.url();
        // Called from Drop, inside the test's runtime: a thread with a runtime of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let tables: Vec<(String,)> = sqlx::query_as(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                let mut out = Vec::new();
                for (table,) in tables {
                    let rows: Vec<(String,)> =
                        sqlx::query_as(&format!("SELECT t::text FROM \"{table}\" t"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    let text: Vec<u8> = rows.into_iter().flat_map(|(r,)| r.into_bytes()).collect();
                    out.push((format!("table {table}"), text));
                }
                pool.close().await;
                out
            })
        })
        .join()
        .unwrap()
    }
}

/// Login limits no test trips over unless it means to.
const GENEROUS: LoginLimits = LoginLimits {
    per_username_and_address: 1000,
    per_address: 1000,
    per_username: 1000,
};

/// The configuration of most test servers: defaults, with [`GENEROUS`] login limits.
pub fn generous() -> ServerConfig {
    ServerConfig {
        login_limits: GENEROUS,
        ..Default::default()
    }
}

pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

/// Everything every test server logged, at debug level.
pub fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || CaptureWriter(writer.clone()))
            .try_init();
        buf
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct TestApp {
    pub url: String,
    pub gateway_url: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub dir: Arc<Storage>,
    pub admin_token: String,
    pub admin_id: String,
    pub secrets: Mutex<Vec<String>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn start_time() -> Timestamp {
    Timestamp::from_timestamp(1_800_000_000, 0).unwrap()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(GENEROUS).await
    }

    pub async fn spawn_with(login_limits: LoginLimits) -> Self {
        Self::spawn_with_config(ServerConfig {
            login_limits,
            ..Default::default()
        })
        .await
    }

    /// A server with its own configuration (timeouts, trusted proxies).
    pub async fn spawn_with_config(config: ServerConfig) -> Self {
        let dir = Storage::new().await;
        Self::start(dir, ManualClock::new(start_time()), "test-admin", config).await
    }

    /// A server over `storage` (a new one).
    pub async fn spawn_on(storage: Arc<Storage>) -> Self {
        Self::start(
            storage,
            ManualClock::new(start_time()),
            "test-admin",
            generous(),
        )
        .await
    }

    /// A server whose clock starts at the machine's time, for tests whose other side
    /// (the CLI in its own process) reads the real clock.
    pub async fn spawn_now() -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = chrono::Utc::now();
        let dir = Storage::new().await;
        Self::start(dir, ManualClock::new(now), "test-admin", generous()).await
    }

    /// A server over the database in `dir`, which an earlier one used: a restart.
    pub async fn spawn_in(dir: Arc<Storage>, clock: ManualClock) -> Self {
        Self::spawn_in_with_config(dir, clock, generous()).await
    }

    /// [`Self::spawn_in`] with a configuration of its own.
    pub async fn spawn_in_with_config(
        dir: Arc<Storage>,
        clock: ManualClock,
        config: ServerConfig,
    ) -> Self {
        Self::start(dir, clock, "test-admin-after-restart", config).await
    }

    async fn start(
        dir: Arc<Storage>,
        clock: ManualClock,
        admin_token_name: &str,
        config: ServerConfig,
    ) -> Self {
        captured_logs();
        let store = AnyStore::connect(&dir.url()).await.unwrap();
        let app = App::new(store, Arc::new(clock.clone()), config);
        app.state
            .service
            .bootstrap(Some(ADMIN_PASSWORD.into()))
            .await
            .unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", admin.local_addr().unwrap());
        let gateway_url = format!("http://{}", gateway.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tessera_server::serve(app, admin, gateway, async {
            let _ = rx.await;
        }));
        let mut app = TestApp {
            url,
            gateway_url,
            client: reqwest::Client::new(),
            clock,
            dir,
            admin_token: String::new(),
            admin_id: String::new(),
            secrets: Mutex::new(Vec::new()),
            shutdown: Some(tx),
            server: Some(server),
        };
        let session = app.login("admin", ADMIN_PASSWORD).await;
        let (status, body) = send(
            app.session_req(&session, Method::POST, "/api/v1/tokens")
                .json(&json!({"name": admin_token_name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.admin_token = app.remember(&body);
        app.admin_id = body["account_id"].as_str().unwrap().to_owned();
        app
    }

    /// Stops the server the way SIGTERM does: in-flight requests finish, records are written.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    /// The database's URL, for the CLI's `--database-url`.
    pub fn database_url(&self) -> String {
        self.dir.url()
    }

    /// Runs `sql` on the database directly, as another program would: a change made
    /// behind Tessera's back, which no cache eviction follows.
    pub async fn write_behind_its_back(&self, sql: &str) {
        self.dir.execute(sql).await;
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let resp = self.req(Method::GET, "/metrics").send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// The value of one sample of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name)
    }

    /// Remembers the token value in a create/regenerate answer, and returns it.
    pub fn remember(&self, body: &Value) -> String {
        let value = body["token"].as_str().expect("a token value").to_owned();
        self.secrets.lock().unwrap().push(value.clone());
        value
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{}", self.url, path))
    }

    /// A request carrying `token` in `X-API-KEY`.
    pub fn with(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.req(method, path).header("X-API-KEY", token)
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.with(&self.admin_token, method, path)
    }

    /// A request on a session cookie, with the Origin that state-changing ones need.
    pub fn session_req(&self, session: &str, method: Method, path: &str) -> RequestBuilder {
        self.req(method, path)
            .header("Cookie", format!("tessera_session={session}"))
            .header("Origin", &self.url)
    }

    /// Logs in and answers the session cookie's value.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let resp = self
            .req(Method::POST, "/api/v1/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/")
        );
        cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("tessera_session=")
            .to_owned()
    }

    /// Creates a token with `body` using `token`, asserting 201; answers the whole object.
    pub async fn create_token(&self, token: &str, body: Value) -> Value {
        let (status, created) =
            send(self.with(token, Method::POST, "/api/v1/tokens").json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.remember(&created);
        created
    }

    /// Creates an account with `roles` and a token for it (scopes as given); answers
    /// (account id, token value). The account briefly holds `developer` too, so that it
    /// can create its own token whatever its roles.
    pub async fn account_with_token(
        &self,
        username: &str,
        roles: &[&str],
        token_body: Value,
    ) -> (String, String) {
        let (status, acct) = send(self.admin(Method::POST, "/api/v1/accounts").json(&json!({
            "username": username, "password": ADMIN_PASSWORD, "roles": ["developer"]
        })))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{acct}");
        let id = acct["id"].as_str().unwrap().to_owned();
        let session = self.login(username, ADMIN_PASSWORD).await;
        let (status, tok) = send(
            self.session_req(&session, Method::POST, "/api/v1/tokens")
                .json(&token_body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{tok}");
        let (status, set) = send(
            self.admin(Method::PATCH, &format!("/api/v1/accounts/{id}"))
                .json(&json!({"roles": roles})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{set}");
        (id, self.remember(&tok))
    }

    /// Waits long enough for the access-log writer (which flushes every second) to have
    /// written what was recorded before the call; the contract allows two seconds.
    pub async fn settle(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(1400)).await;
    }

    /// Asserts that no token value this app handed out is in its database files or in
    /// the captured logs.
    pub fn assert_no_secret_leaked(&self) {
        let secrets = self.secrets.lock().unwrap().clone();
        assert!(!secrets.is_empty());
        let mut haystacks = self.dir.contents();
        haystacks.push(("logs".into(), captured_logs().lock().unwrap().clone()));
        for (name, bytes) in &haystacks {
            for s in &secrets {
                assert!(!contains(bytes, s.as_bytes()), "a token value is in {name}");
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() && !self.secrets.lock().unwrap().is_empty() {
            self.assert_no_secret_leaked();
        }
    }
}

/// The value of the sample `name` (with its labels, if any) in a `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends and answers (status, JSON body or Null).
pub async fn send(rb: RequestBuilder) -> (StatusCode, Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the contract's error shape, status and code; answers the body.
pub async fn expect_error(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if status == 401 {
        let challenge = headers["www-authenticate"].to_str().unwrap();
        if code == "unauthenticated" {
            assert_eq!(challenge, "Bearer");
        } else {
            assert_eq!(challenge, "Bearer error=\"invalid_token\"");
        }
    }
    body
}

pub async fn error_of(rb: RequestBuilder, status: u16, code: &str) -> Value {
    expect_error(rb.send().await.unwrap(), status, code).await
}

/// Two nodes over one new PostgreSQL database, each following the other's changes (until
/// its feed is connected a node serves from the database, which would hide what a test
/// of its caches looks for).
pub async fn two_nodes() -> (TestApp, TestApp) {
    two_nodes_with(generous).await
}

/// [`two_nodes`], each with the configuration `config` makes.
pub async fn two_nodes_with(config: impl Fn() -> ServerConfig) -> (TestApp, TestApp) {
    let storage = Storage::postgres().await;
    let clock = ManualClock::new(start_time());
    let a = TestApp::start(storage.clone(), clock.clone(), "test-admin", config()).await;
    let b = TestApp::spawn_in_with_config(storage, clock, config()).await;
    for node in [&a, &b] {
        let connected = holds_within(Duration::from_secs(10), 1.0, async || {
            node.metric("tessera_change_feed_connected").await
        })
        .await;
        assert_eq!(connected, 1.0, "the node follows the change feed");
    }
    (a, b)
}

/// Polls `check` until it answers `want` or `within` has passed (at least once).
pub async fn holds_within<T: PartialEq + std::fmt::Debug>(
    within: Duration,
    want: T,
    mut check: impl AsyncFnMut() -> T,
) -> T {
    let started = std::time::Instant::now();
    loop {
        let got = check().await;
        if got == want || started.elapsed() >= within {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the `tessera` binary with `args` in `dir` against `app` (`TESSERA_URL`), with
/// `token` in `TESSERA_TOKEN`; answers (exit status, stdout, stderr).
pub async fn run_cli(
    app: &TestApp,
    token: Option<&str>,
    dir: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args)
        .current_dir(dir)
        .env("TESSERA_URL", &app.url)
        .env_remove("TESSERA_TOKEN");
    if let Some(t) = token {
        cmd.env("TESSERA_TOKEN", t);
    }
    let out = cmd.output().await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}
