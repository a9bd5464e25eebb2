//! `--tls-cert`/`--tls-key`: both listeners speak HTTPS, and session cookies are Secure.

use serde_json::json;
use std::sync::Arc;
use tessera_core::ManualClock;
use tessera_server::http::listen::tls_acceptor;
use tessera_server::{App, ServerConfig};
use tessera_store::AnyStore;

#[tokio::test]
async fn both_listeners_serve_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls = tls_acceptor(&cert_path, &key_path).unwrap();
    assert!(
        tls_acceptor(&key_path, &key_path).is_err(),
        "a key is not a certificate"
    );

    let store = AnyStore::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let app = App::new(
        store,
        Arc::new(ManualClock::new(crate::helpers::start_time())),
        ServerConfig {
            tls: true,
            ..Default::default()
        },
    );
    app.state
        .service
        .bootstrap(Some(crate::helpers::ADMIN_PASSWORD.into()))
        .await
        .unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (admin_port, gateway_port) = (
        admin.local_addr().unwrap().port(),
        gateway.local_addr().unwrap().port(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tessera_server::serve(
        app,
        admin,
        gateway,
        Some(tls),
        async {
            let _ = rx.await;
        },
    ));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{admin_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let gw = client
        .get(format!("https://localhost:{gateway_port}/_tessera/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.status(), 200);
    let login = client
        .post(format!("https://localhost:{admin_port}/api/v1/login"))
        .json(&json!({"username": "admin", "password": crate::helpers::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        reqwest::get(format!("http://localhost:{admin_port}/healthz"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );

    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
