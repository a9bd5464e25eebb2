//! How long a revocation takes to hold on another node (`bench/cluster.sh`):
//! `propagation CHANGER_URL CHECKER_URL PASSWORD [N]`. For each of N tokens: created on
//! the changer, used on the checker until it is accepted and cached there, deleted on the
//! changer; then the checker is asked again and again until it refuses the token. The
//! delay is from the delete's answer to the first refusal. Prints p50, p99 and the
//! maximum, in milliseconds. The checker must trust this client as a proxy
//! (`--trusted-proxies 127.0.0.1/32`). Benchmark use only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: propagation CHANGER_URL CHECKER_URL PASSWORD [N]");
        std::process::exit(2);
    }
    let (changer, checker, password) = (&args[1], &args[2], &args[3]);
    let n: usize = args.get(4).map_or(500, |n| n.parse().unwrap());
    let client = reqwest::Client::new();
    // An account of its own (the admin's may hold its 50 tokens already), and a token of
    // that account's for the changes (a session cookie would need CSRF care).
    let (session, _) = login(&client, changer, "admin", password).await;
    let made = client
        .post(format!("{changer}/api/v1/accounts"))
        .header("Cookie", session)
        .header("Origin", changer)
        .json(&json!({"username": "propagation", "password": password, "roles": ["developer"]}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.text().await.unwrap());
    let admin = create(&client, changer, None, "propagation-admin", password).await;
    let mut delays = Vec::with_capacity(n);
    for i in 0..n {
        let (id, value) = create(&client, changer, Some(&admin), &format!("p{i}"), password)
            .await
            .split_once(' ')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        // Each revocation's refusals from an address of their own: the checker, which
        // trusts this loopback proxy, would otherwise throttle the address after 100
        // failed authentications a minute.
        let address = format!("10.{}.{}.1", i / 250, i % 250);
        let uses = |token: &str| {
            client
                .get(format!("{checker}/api/v1/user/me"))
                .header("X-API-KEY", token)
                .header("X-Forwarded-For", &address)
                .send()
        };
        // Accepted (once the creation is known there), then once more: cached.
        let created = Instant::now();
        loop {
            let status = uses(&value).await.unwrap().status();
            if status == StatusCode::OK {
                break;
            }
            assert!(
                created.elapsed() < Duration::from_secs(10),
                "checker answers {status}"
            );
        }
        assert_eq!(uses(&value).await.unwrap().status(), StatusCode::OK);
        let deleted = client
            .delete(format!("{changer}/api/v1/tokens/{id}"))
            .header("X-API-KEY", admin.split_once(' ').unwrap().1)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let answered = Instant::now();
        loop {
            let status = uses(&value).await.unwrap().status();
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(status, StatusCode::OK);
            assert!(
                answered.elapsed() < Duration::from_secs(10),
                "never refused"
            );
        }
        delays.push(answered.elapsed());
    }
    delays.sort();
    let at =
        |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} {:.2} {:.2} {:.2}",
        delays.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*delays.last().unwrap())
    );
}

/// Signs in; answers the session cookie (`name=value`) and the answer's body.
async fn login(
    client: &reqwest::Client,
    url: &str,
    username: &str,
    password: &str,
) -> (String, Value) {
    let answer = client
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    (cookie, answer.json().await.unwrap())
}

/// Creates a token named `name` on `url` as the `propagation` account (with its token
/// `admin`, or a fresh session);
/// answers "ID VALUE".
async fn create(
    client: &reqwest::Client,
    url: &str,
    admin: Option<&str>,
    name: &str,
    password: &str,
) -> String {
    let request = client
        .post(format!("{url}/api/v1/tokens"))
        .json(&json!({"name": name}));
    let request = match admin {
        Some(a) => request.header("X-API-KEY", a.split_once(' ').unwrap().1),
        None => {
            let (cookie, _) = login(client, url, "propagation", password).await;
            request.header("Cookie", cookie).header("Origin", url)
        }
    };
    let created: Value = request.send().await.unwrap().json().await.unwrap();
    format!(
        "{} {}",
        created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}")),
        created["token"].as_str().unwrap()
    )
}
