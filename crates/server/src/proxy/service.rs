//! The gateway listener's service: its own endpoints under the reserved `/_tessera/`,
//! and the proxy for everything else, for requests from hyper's connections and from
//! the gateway's own ([`super::conn`]).

use super::forward::{Answer, Proxy};
use super::request::{GatewayRequest, Peer};
use crate::http::error::ApiError;
use crate::http::routes;
use crate::metrics::Metrics;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_core::ErrorCode;

/// The gateway listener's service for one connection ([`crate::App::gateway_service`]).
#[derive(Clone, Debug)]
pub struct GatewayService {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    peer: Arc<Peer>,
}

impl GatewayService {
    pub fn new(proxy: Arc<Proxy>, metrics: Arc<Metrics>, peer: SocketAddr) -> Self {
        Self {
            peer: Arc::new(proxy.peer(peer.ip())),
            proxy,
            metrics,
        }
    }

    /// Answers one request, from hyper's connections or the gateway's own.
    pub async fn handle(&self, req: GatewayRequest) -> Answer {
        let started = quanta::Instant::now();
        // A clone of a URI shares its bytes: it lets the normalized path borrow from it
        // while the request moves on.
        let uri = req.uri.clone();
        // The reserved prefix is judged on the normalized path, as the routes are.
        let answer = match req.judge(&uri) {
            Err(e) => e.into(),
            Ok(path) => match &*path {
                "/_tessera/healthz" if req.method == axum::http::Method::GET => {
                    routes::ops::healthz().await.into_response().into()
                }
                "/_tessera/healthz" => ApiError::code(ErrorCode::MethodNotAllowed).into(),
                "/_tessera/verify" => self.proxy.forward_auth(req, &self.peer, started).await,
                p if p == "/_tessera" || p.starts_with("/_tessera/") => {
                    ApiError::code(ErrorCode::NotFound).into()
                }
                _ => self.proxy.handle(req, path, &self.peer, started).await,
            },
        };
        self.metrics
            .gateway_request_seconds
            .observe(started.elapsed().as_secs_f64());
        answer
    }
}

impl tower::Service<hyper::Request<Incoming>> for GatewayService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let req = GatewayRequest::from_http(req.map(Body::new));
            Ok(this.handle(req).await.into_response())
        })
    }
}
