//! Upstreams and their keep-alive connections: one pool of HTTP/1.1 connections per
//! upstream base URL, on hyper's connection-level client.
//!
//! Why not hyper-util's pooled client: per request it hashed a pool key taken from a
//! re-parsed URI, went through a checkout future, and spawned a task to watch the
//! connection become idle again. Here a connection goes back to its pool when the
//! response body has been read to its end (see [`PooledBody`]), and a request takes the
//! most recently returned one that is ready.

use axum::body::Body;
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{HeaderValue, Request, Response, Uri};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tessera_core::gateway::split_upstream;
use tokio::net::TcpStream;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One upstream base URL (`http://host:port[/base]`) and its idle connections.
pub struct Upstream {
    /// The base URL as configured, for logs.
    pub base: String,
    authority: Authority,
    host: HeaderValue,
    /// The base URL's path, without a trailing `/` (often empty).
    base_path: String,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `base` is a URL the configuration validated when it was stored.
    pub fn new(base: &str) -> Result<Self, String> {
        let url = split_upstream(base)?;
        let unusable = |e: &dyn std::fmt::Display| format!("'{base}' cannot be used: {e}");
        Ok(Self {
            base: base.to_owned(),
            authority: url.authority.parse().map_err(|e| unusable(&e))?,
            host: HeaderValue::from_str(url.authority).map_err(|e| unusable(&e))?,
            base_path: url.path.to_owned(),
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The `Host` header for this upstream.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target for `path` (already normalized) and the original query, in
    /// origin form (`/base/path?query`): the form a server expects from a client, with
    /// the authority in `Host` ([`Upstream::host`]).
    pub fn uri(&self, path: &str, query: Option<&str>) -> Option<Uri> {
        let mut target = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(&self.base_path);
        target.push_str(path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        Some(Uri::from(PathAndQuery::from_maybe_shared(target).ok()?))
    }

    /// Sends `req` on an idle connection, or a new one. A request that a reused
    /// connection closed before it was sent is retried once on another.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut retried = false;
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() && reused {
                continue; // it closed while idle
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let upstream = self.clone();
                    return Ok(response.map(|inner| {
                        Body::new(PooledBody {
                            inner,
                            back: Some((sender, upstream)),
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused && !retried => {
                        retried = true;
                        req = unsent;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The most recently returned connection that is ready, else the most recent one
    /// (still finishing its last response, or closed: [`Upstream::send`] then moves on).
    /// Connections come back in time order, so the stale ones are at the front.
    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        let ready = idle
            .iter()
            .rev()
            .take(8)
            .position(|c| c.sender.is_ready())
            .map_or(idle.len().checked_sub(1)?, |from_back| {
                idle.len() - 1 - from_back
            });
        idle.remove(ready).map(|c| c.sender)
    }

    fn give_back(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let host = self.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let base = self.base.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, upstream = %base, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// An upstream response body that hands its connection back to the pool once it has
/// been read to the end. Dropped earlier, it takes the connection down with it, since
/// the rest of the body would still be on the wire.
struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<Incoming>, Arc<Upstream>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((sender, upstream)) = self.back.take() {
            upstream.give_back(sender);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_the_base_path_the_path_and_the_query_in_origin_form() {
        let u = Upstream::new("http://127.0.0.1:8080/base").unwrap();
        assert_eq!(u.uri("/a/b", Some("x=1&y")).unwrap(), "/base/a/b?x=1&y");
        assert_eq!(u.host(), "127.0.0.1:8080");
        let u = Upstream::new("http://svc.internal").unwrap();
        assert_eq!(u.uri("/", None).unwrap(), "/");
        assert_eq!(u.host(), "svc.internal");
    }
}
