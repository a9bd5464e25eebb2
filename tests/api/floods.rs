//! Connection floods: idle, slow-head and slow-body clients are cut off on both
//! listeners, and a flood on one listener leaves the other answering.

use crate::binary::free_port;
use crate::helpers::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera_server::http::listen::Timeouts;
use tessera_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `stream` (or resets it) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn idle_slow_head_and_slow_body_connections_are_cut_off_on_both_listeners() {
    let app = TestApp::spawn_with_config(ServerConfig {
        timeouts: Timeouts {
            header_read: Duration::from_secs(1),
            body_grace: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    for base in [&app.url, &app.gateway_url] {
        let addr = base.trim_start_matches("http://").to_owned();
        // Sends nothing.
        let mut idle = TcpStream::connect(&addr).await.unwrap();
        // Sends a head a byte at a time, never finishing it.
        let mut slow_head = TcpStream::connect(&addr).await.unwrap();
        slow_head
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        // Sends a body a byte at a time.
        let mut slow_body = TcpStream::connect(&addr).await.unwrap();
        slow_body
            .write_all(b"POST /api/v1/login HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            .await
            .unwrap();
        // One keep-alive connection that answered a request and then idles.
        let mut kept = TcpStream::connect(&addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let feed = async {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = slow_head.write_all(b"X").await;
                let _ = slow_body.write_all(b" ").await;
            }
        };
        let (idle_closed, kept_closed, _) = tokio::join!(
            closed_within(&mut idle, Duration::from_secs(5)),
            closed_within(&mut kept, Duration::from_secs(5)),
            feed
        );
        assert!(idle_closed, "{base}: an idle connection stayed open");
        assert!(
            kept_closed,
            "{base}: an idle keep-alive connection stayed open"
        );
        assert!(
            closed_within(&mut slow_head, Duration::from_millis(100)).await,
            "{base}: a slow head stayed open"
        );
        assert!(
            closed_within(&mut slow_body, Duration::from_millis(100)).await,
            "{base}: a slow body stayed open"
        );
    }
    // A request that takes its time on the server side is not cut off as idle.
    let resp = app
        .req(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_flood_of_idle_admin_connections_leaves_the_gateway_answering() {
    let prlimit = Command::new("prlimit").arg("--version").output();
    if prlimit.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is missing"
        );
        eprintln!("skipped: no prlimit here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, gateway_port) = (free_port(), free_port());
    // Soft 256, hard 512: the server raises its soft limit to 512 at start.
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:512", "--"])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--gateway-addr", &format!("127.0.0.1:{gateway_port}")])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.path().join("t.db").display()),
        ])
        .env("TESSERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin = format!("127.0.0.1:{admin_port}");
    let gateway = format!("http://127.0.0.1:{gateway_port}/_tessera/healthz");
    let client = reqwest::Client::new();
    assert!(
        crate::binary::comes_up(&client, &gateway).await,
        "the server did not come up"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    assert_eq!(open_files, "512", "{limits}");

    // 600 idle connections to the admin API: more than the process has files for.
    let mut idle = Vec::new();
    for _ in 0..600 {
        if let Ok(s) = TcpStream::connect(&admin).await {
            idle.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let resp = client.get(&gateway).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
