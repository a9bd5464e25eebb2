//! `--tls-cert`/`--tls-key` on the real binary: both listeners speak HTTPS, the session
//! cookie is `Secure`, the admin origin is `https://…` for the CSRF check, and the
//! gateway tells upstreams `X-Forwarded-Proto: https`.

use crate::binary::free_port;
use crate::helpers::ADMIN_PASSWORD;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use tessera_server::http::listen::tls_acceptor;

/// Kills the server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tls_mode_holds_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    assert!(tls_acceptor(&cert_path, &key_path).is_ok());
    assert!(
        tls_acceptor(&key_path, &key_path).is_err(),
        "a key is not a certificate"
    );

    let (admin_port, gateway_port) = (free_port(), free_port());
    let stderr_path = dir.path().join("stderr.log");
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("serve")
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--gateway-addr", &format!("127.0.0.1:{gateway_port}")])
            .args([
                "--database-url",
                &format!("sqlite://{}", dir.path().join("t.db").display()),
            ])
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .env("TESSERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let admin = format!("https://localhost:{admin_port}");
    let gateway = format!("https://localhost:{gateway_port}");
    let up = crate::binary::comes_up(&client, &format!("{admin}/healthz")).await;
    assert!(up, "{}", std::fs::read_to_string(&stderr_path).unwrap());
    let gw = client
        .get(format!("{gateway}/_tessera/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.status(), 200);

    // The session cookie is Secure.
    let login = client
        .post(format!("{admin}/api/v1/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    // The admin origin is https: an http Origin is refused, the https one accepted.
    let create = |origin: String| {
        client
            .post(format!("{admin}/api/v1/tokens"))
            .header("Cookie", &session)
            .header("Origin", origin)
            .json(&json!({"name": "over-tls"}))
    };
    let refused = create(format!("http://localhost:{admin_port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf", "{body}");
    let created = create(admin.clone()).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let token = created.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The gateway says https to the upstream.
    let upstream = crate::gateway::upstream("tls").await;
    let applied = client
        .put(format!("{admin}/api/v1/gateway/config"))
        .header("X-API-KEY", &token)
        .json(&json!({
            "services": [{"name": "echo", "upstreams": [upstream]}],
            "routes": [{"name": "all", "service": "echo", "path_prefix": "/", "auth": "none"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200);
    let echoed: Value = client
        .get(format!("{gateway}/echo"))
        .header("X-Forwarded-Proto", "http")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https", "{echoed}");

    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        reqwest::get(format!("http://localhost:{admin_port}/healthz"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
}
