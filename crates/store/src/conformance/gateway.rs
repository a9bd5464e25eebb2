//! Conformance cases: the gateway's configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

pub async fn gateway<S: Store>(store: &S) {
    let v0 = store.gateway_version().await.unwrap();
    let svc = UpstreamService {
        id: "svc_1".into(),
        name: "orders".into(),
        upstreams: vec![
            "http://127.0.0.1:9000".into(),
            "http://127.0.0.1:9001".into(),
        ],
        timeout_ms: 1500,
        created_at: now(),
    };
    let route = Route {
        id: "rte_1".into(),
        name: "orders-api".into(),
        service_id: "svc_1".into(),
        path_prefix: "/orders".into(),
        methods: Some(vec!["GET".into()]),
        auth: RouteAuth::Token,
        scopes: vec![Permission::parse("orders:read").unwrap()],
        rate_limit: Some(RateLimit {
            requests: 10,
            per_seconds: 1,
        }),
        strip_prefix: true,
        created_at: now(),
    };
    let change = GatewayChange {
        upsert_services: vec![svc.clone()],
        upsert_routes: vec![route.clone()],
        ..Default::default()
    };
    applied(
        store
            .save_gateway(
                &change,
                vec![
                    draft(AuditAction::ServiceCreate, "svc_1"),
                    draft(AuditAction::RouteCreate, "rte_1"),
                ],
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.list_services().await.unwrap(), vec![svc.clone()]);
    assert_eq!(store.list_routes().await.unwrap(), vec![route.clone()]);
    assert!(store.gateway_version().await.unwrap() > v0);

    // A used service cannot go, and the failed change leaves nothing behind.
    let bad = GatewayChange {
        delete_services: vec!["svc_1".into()],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&bad, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let dup = UpstreamService {
        id: "svc_2".into(),
        ..svc.clone()
    };
    let half = GatewayChange {
        upsert_services: vec![dup],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&half, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    let orphan = Route {
        id: "rte_2".into(),
        name: "orphan".into(),
        service_id: "svc_none".into(),
        ..route.clone()
    };
    let with_orphan = GatewayChange {
        upsert_routes: vec![orphan],
        ..Default::default()
    };
    assert!(matches!(
        store.save_gateway(&with_orphan, vec![]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.list_routes().await.unwrap().len(), 1);

    // Update in place, then delete both in one change.
    let open = Route {
        auth: RouteAuth::None,
        methods: None,
        scopes: vec![],
        rate_limit: None,
        ..route.clone()
    };
    applied(
        store
            .save_gateway(
                &GatewayChange {
                    upsert_routes: vec![open.clone()],
                    ..Default::default()
                },
                vec![],
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(store.list_routes().await.unwrap(), vec![open]);
    let all = GatewayChange {
        delete_routes: vec!["rte_1".into()],
        delete_services: vec!["svc_1".into()],
        ..Default::default()
    };
    let ((), stale) = applied(
        store
            .save_gateway(&all, vec![draft(AuditAction::RouteDelete, "rte_1")])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stale, Invalidation::gateway());
    assert!(store.list_services().await.unwrap().is_empty());
    assert!(store.list_routes().await.unwrap().is_empty());
}
