//! Criterion benchmarks of the hot path: verification on a cache hit and on a negative
//! cache hit, token generation, the permission check, and the gateway's reading of a
//! request (head parsing, then judging: method, `Host`, path normalization).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use tessera_core::permission::{EffectivePermissions, Permission, PermissionSet};
use tessera_core::token::TokenValue;
use tessera_core::SystemClock;
use tessera_server::api::CreateTokenRequest;
use tessera_server::verifier::Carriers;
use tessera_server::{App, ServerConfig};
use tessera_store::AnyStore;

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (app, value) = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let app = App::new(
            AnyStore::connect(&url).await.unwrap(),
            Arc::new(SystemClock),
            ServerConfig::default(),
        );
        app.state
            .service
            .bootstrap(Some("benchmark-password".into()))
            .await
            .unwrap();
        let caller = app.state.service.local_caller("admin").await.unwrap();
        let req: CreateTokenRequest =
            serde_json::from_value(json!({"name": "bench", "scopes": ["orders:read"]})).unwrap();
        let created = app
            .state
            .service
            .create_token(&caller.grant().unwrap(), req)
            .await
            .unwrap();
        let value = created.token.0.expose_secret().to_owned();
        (app, value)
    });
    let verifier = app.state.verifier.clone();
    let ip: IpAddr = [127, 0, 0, 1].into();
    let wanted = [Permission::parse("orders:read").unwrap()];
    rt.block_on(async {
        let v = verifier
            .verify(
                Carriers {
                    x_api_key: Some(value.as_bytes()),
                    ..Default::default()
                },
                ip,
            )
            .await;
        assert!(v.result.is_ok());
    });

    c.bench_function("verify: cache hit, with scope check", |b| {
        b.to_async(&rt).iter(|| async {
            let v = verifier
                .verify(
                    Carriers {
                        bearer: Some(black_box(value.as_bytes())),
                        ..Default::default()
                    },
                    ip,
                )
                .await;
            let ok = v.result.unwrap();
            verifier.require(&ok, &wanted).unwrap();
        })
    });

    let fake = TokenValue::from_random_bytes(&[3u8; 32]);
    let fake = fake.expose_secret().to_owned();
    c.bench_function("verify: unknown well-formed token (negative cache)", |b| {
        b.to_async(&rt).iter(|| async {
            let v = verifier
                .verify(
                    Carriers {
                        x_api_key: Some(black_box(fake.as_bytes())),
                        ..Default::default()
                    },
                    ip,
                )
                .await;
            assert!(v.result.is_err());
        })
    });

    let mut typo = value.clone();
    typo.replace_range(10..11, if &value[10..11] == "a" { "b" } else { "a" });
    c.bench_function("verify: bad checksum (no lookup)", |b| {
        b.to_async(&rt).iter(|| async {
            let v = verifier
                .verify(
                    Carriers {
                        x_api_key: Some(black_box(typo.as_bytes())),
                        ..Default::default()
                    },
                    ip,
                )
                .await;
            assert!(v.result.is_err());
        })
    });
}

fn primitives(c: &mut Criterion) {
    c.bench_function("token: generate", |b| {
        b.iter(|| TokenValue::generate().unwrap())
    });
    let v = TokenValue::generate().unwrap();
    let s = v.expose_secret().to_owned();
    c.bench_function("token: parse + checksum + sha256", |b| {
        b.iter(|| TokenValue::parse(black_box(&s)).unwrap().hash())
    });
    let p = |s: &str| Permission::parse(s).unwrap();
    let account = PermissionSet::new(vec![
        p("tokens:*"),
        p("gateway:read"),
        p("orders:read"),
        p("billing:*"),
    ]);
    let scopes = PermissionSet::new(vec![p("orders:read"), p("billing:read")]);
    let eff = EffectivePermissions {
        account: &account,
        token_scopes: Some(&scopes),
    };
    let wanted = p("billing:read");
    c.bench_function("permission check (wildcards, 4 x 2)", |b| {
        b.iter(|| eff.covers(black_box(&wanted)))
    });
}

fn request_reading(c: &mut Criterion) {
    use tessera_server::proxy::GatewayRequest;
    use tessera_wire::h1::{parse_request, Parsed};
    let head = |target: &str| {
        bytes::Bytes::from(format!(
            "GET {target} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\n\
             Accept: */*\r\nX-API-KEY: tsr_00000000000000000000000000000000000000000000MyxfL\r\n\r\n"
        ))
    };
    let request = |bytes: &bytes::Bytes| {
        let Parsed::Head(h, _) = parse_request(bytes) else {
            panic!("not a head")
        };
        GatewayRequest {
            method: h.method,
            uri: h.uri,
            version: axum::http::Version::HTTP_11,
            headers: h.headers,
            body: axum::body::Body::empty(),
        }
    };
    let plain = head("/orders/v1/items/42?expand=lines");
    c.bench_function("gateway: parse a request head", |b| {
        b.iter(|| matches!(parse_request(black_box(&plain)), Parsed::Head(..)))
    });
    for (name, target) in [
        ("normal path", "/orders/v1/items/42?expand=lines"),
        ("path to rewrite", "/orders/%76%31//items/./42?expand=lines"),
    ] {
        let req = request(&head(target));
        c.bench_function(&format!("gateway: judge a request ({name})"), |b| {
            b.iter(|| req.judge(black_box(&req.uri)).map(|p| p.len()).unwrap())
        });
    }
}

criterion_group!(benches, verification, primitives, request_reading);

criterion_main!(benches);
