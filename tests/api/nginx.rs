//! A real nginx (Debian's package) in front of an upstream, asking Tessera's forward-auth
//! endpoint with `auth_request` before every request.

use crate::gateway::upstream;
use crate::helpers::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

fn nginx_binary() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

#[tokio::test]
async fn nginx_auth_request_uses_forward_auth() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nginx: .ci/run installs it"
        );
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let app = TestApp::spawn().await;
    let up = upstream("behind-nginx").await;
    let good = app
        .create_token(
            &app.admin_token,
            json!({"name": "nginx-good", "scopes": ["orders:read"]}),
        )
        .await;
    let narrow = app
        .create_token(
            &app.admin_token,
            json!({"name": "nginx-narrow", "scopes": ["billing:read"]}),
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location = /_tessera_auth {{
            internal;
            proxy_pass {gw}/_tessera/verify?scope=orders:read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location / {{
            auth_request /_tessera_auth;
            auth_request_set $tessera_token $upstream_http_x_tessera_token_id;
            proxy_set_header X-Tessera-Token-Id $tessera_token;
            proxy_set_header X-API-KEY "";
            proxy_pass {up};
        }}
    }}
}}
"#,
        gw = app.gateway_url
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(&nginx)
        .args(["-p", &d.to_string(), "-c", &conf_path.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up_ok = false;
    for _ in 0..50 {
        if reqwest::get(format!("{base}/")).await.is_ok() {
            up_ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        up_ok,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );

    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{base}/orders/7"))
        .header("X-API-KEY", good["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["upstream"], "behind-nginx");
    assert_eq!(echoed["path"], "/orders/7");
    assert_eq!(echoed["headers"]["x-tessera-token-id"], good["id"]);
    assert!(echoed["headers"].get("x-api-key").is_none());
    assert_eq!(
        client
            .get(format!("{base}/orders/7"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(format!("{base}/orders/7"))
            .bearer_auth(narrow["token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        client
            .get(format!("{base}/orders/7"))
            .header("X-API-KEY", "tsr_forged")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let _ = child.kill();
    let _ = child.wait();
}
