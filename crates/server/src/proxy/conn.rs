//! The gateway listener's own HTTP/1.1 connections (plain TCP): one task reads a request
//! head, answers it through [`GatewayService`] (whose upstream client reads the answer
//! in the same task) and writes the response, without hyper's per-connection machinery
//! in between. [`tessera_wire::h1`] says why. A malformed head is answered here (JSON, then
//! the connection closes). A request this loop does not take (TLS and HTTP/2 never
//! reach it; request bodies, upgrades and HTTP/1.0 do) hands the connection, with the
//! bytes read so far, to hyper for the rest of its life.

use super::forward::Answer;
use super::headers::write_upstream_headers;
use super::request::GatewayRequest;
use super::upstream::UpstreamResponse;
use super::GatewayService;
use crate::http::error::ApiError;
use crate::http::guard::LINGER;
use crate::http::listen::{Rewind, Served, Timeouts};
use crate::verifier::RateLimitState;
use axum::body::Body;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tessera_wire::h1::{self, Framing, Parsed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Bytes read per read call.
const READ_SIZE: usize = 8 * 1024;
/// Body pieces up to this size are copied next to the head, to go out in one write.
const COALESCE: usize = 16 * 1024;

/// Serves one plain-TCP gateway connection until the client closes it, a request head
/// takes longer than `header_timeout` (less up to 5 s; idling counts) to arrive, or
/// `stop` turns true (after the request in hand); or until a request this loop does
/// not take, when it hands the connection back for hyper to serve.
pub fn serve(
    stream: TcpStream,
    service: GatewayService,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) -> Served<GatewayService> {
    Box::pin(async move {
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::with_capacity(READ_SIZE),
            header_timeout: timeouts.header_read,
            write_stall: timeouts.write_stall,
            deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
        };
        match conn.run(&service, &mut stop).await {
            Ok(Next::Close) => {
                let _ = conn.stream.shutdown().await;
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "gateway connection ended");
                None
            }
            Ok(Next::Hyper) => Some((Rewind::new(conn.buf.freeze(), conn.stream), service)),
        }
    })
}

enum Next {
    Close,
    Hyper,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not parsed yet.
    buf: BytesMut,
    /// A response's bytes before they are written.
    out: Vec<u8>,
    header_timeout: Duration,
    /// How long a write may wait on a client that does not read ([`Timeouts`]).
    write_stall: Duration,
    /// When the head being waited for must be in. Moved only once it is less than
    /// `header_timeout` minus [`DEADLINE_SLACK`] away, so that most requests leave the
    /// timer where it is (a timer set per request cost more than parsing the head).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// How much earlier than `header_timeout` a head may have to arrive (see `deadline`).
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

impl Connection {
    async fn run(
        &mut self,
        service: &GatewayService,
        stop: &mut watch::Receiver<bool>,
    ) -> std::io::Result<Next> {
        loop {
            // The whole head must arrive in time, however it is split up.
            let now = tokio::time::Instant::now();
            // (A timeout under the slack moves the timer for every head.)
            let keep = self.header_timeout.saturating_sub(DEADLINE_SLACK);
            if self.deadline.deadline() < now + keep {
                self.deadline.as_mut().reset(now + self.header_timeout);
            }
            let head = loop {
                if !self.buf.is_empty() {
                    let bytes = self.buf.split().freeze();
                    match h1::parse_request(&bytes) {
                        Parsed::Head(head, len) => {
                            // Pipelined bytes after the head (rare) go back to the front.
                            self.buf.extend_from_slice(&bytes[len..]);
                            break head;
                        }
                        Parsed::Partial => h1::put_back(&mut self.buf, bytes),
                        Parsed::Elsewhere => {
                            h1::put_back(&mut self.buf, bytes);
                            return Ok(Next::Hyper);
                        }
                        Parsed::Refused(code) => {
                            // What follows cannot be told apart from the head: close.
                            let answer = ApiError::code(code).into_response();
                            self.write_response(answer, false, true).await?;
                            self.linger().await;
                            return Ok(Next::Close);
                        }
                    }
                }
                let idle = self.buf.is_empty();
                self.buf.reserve(READ_SIZE);
                let read = tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.buf) => read,
                    () = self.deadline.as_mut() => return Ok(Next::Close),
                    () = stopped(stop), if idle => return Ok(Next::Close),
                };
                match read {
                    Ok(0) => return Ok(Next::Close),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            };
            let head_request = head.method == Method::HEAD;
            let close = head.close;
            let req = GatewayRequest {
                method: head.method,
                uri: head.uri,
                version: axum::http::Version::HTTP_11,
                headers: head.headers,
                body: Body::empty(),
            };
            match service.handle(req).await {
                Answer::Local(response) => {
                    self.write_response(response, head_request, close).await?;
                }
                Answer::Upstream {
                    response,
                    rate_limit,
                } => {
                    self.write_upstream(response, rate_limit, close).await?;
                }
            }
            if close || *stop.borrow() {
                return Ok(Next::Close);
            }
        }
    }

    async fn write_response(
        &mut self,
        response: Response,
        head_request: bool,
        close: bool,
    ) -> std::io::Result<()> {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        let headers = &mut parts.headers;
        let framing = if h1::is_bodiless(status) {
            Framing::Empty
        } else if head_request {
            // The length of the body a GET would get, as the upstream said it.
            if let (false, Some(n)) = (
                headers.contains_key(header::CONTENT_LENGTH),
                body.size_hint().exact(),
            ) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            Framing::Empty
        } else {
            let framing = h1::frame_body(headers, &body);
            if framing == Framing::Empty {
                // A response without a length or a coding would run until the close.
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            }
            framing
        };
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if !headers.contains_key(header::DATE) {
            headers.insert(header::DATE, http_date());
        }
        self.out.clear();
        h1::write_response_head(status, headers, &mut self.out);
        if framing == Framing::Empty {
            return self.flush().await;
        }
        self.write_body(body, framing == Framing::Chunked).await
    }

    /// Writes an upstream's answer: its header lines as they came, then the gateway's
    /// own (rate limit, framing for this connection, `Date` if it had none).
    async fn write_upstream(
        &mut self,
        response: UpstreamResponse,
        rate_limit: Option<RateLimitState>,
        close: bool,
    ) -> std::io::Result<()> {
        let UpstreamResponse { head, body } = response;
        let out = &mut self.out;
        out.clear();
        h1::write_status_line(head.status, out);
        write_upstream_headers(&head.headers, rate_limit.as_ref(), out);
        // The head's framing already says `Empty` for a `HEAD` answer and a bodiless
        // status, whose length (the upstream's, if any) is the one a GET would get.
        // A body up to the upstream's close is chunked here: this connection stays.
        let chunked = matches!(head.framing, Framing::Chunked | Framing::Close);
        if chunked {
            h1::write_chunked_codings(head.codings.as_deref(), out);
        } else if let Some(n) = head.length {
            h1::write_framing(Framing::Length(n), out);
        }
        if close {
            h1::write_header(b"connection", b"close", out);
        }
        if !head.headers.has_date() {
            h1::write_header(b"date", http_date().as_bytes(), out);
        }
        out.extend_from_slice(b"\r\n");
        if head.framing == Framing::Empty {
            return self.flush().await;
        }
        self.write_body(body, chunked).await
    }

    /// Writes a body after its head (in `out`), chunked or as it is.
    async fn write_body<B>(&mut self, mut body: B, chunked: bool) -> std::io::Result<()>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            // The head (and what is already there) goes out before waiting for a
            // slow body.
            let frame =
                match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)))
                    .await
                {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        self.flush().await?;
                        body.frame().await
                    }
                };
            let Some(frame) = frame else { break };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    // An upstream that breaks off mid-body: the client gets what came
                    // and then sees the connection end, as a body cut short.
                    self.flush().await?;
                    return Err(std::io::Error::other(e));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                h1::chunk_size_line(data.len(), &mut self.out);
            }
            if data.len() <= COALESCE {
                self.out.extend_from_slice(&data);
            } else {
                self.flush().await?;
                write_all(&self.stream, &data, self.write_stall).await?;
            }
            if chunked {
                self.out.extend_from_slice(h1::CHUNK_END);
            }
            if body.is_end_stream() {
                break;
            }
        }
        if chunked {
            self.out.extend_from_slice(h1::LAST_CHUNK);
        }
        self.flush().await
    }

    /// Closes the sending side, then reads and drops what the client still sends for
    /// a while ([`LINGER`]): closing with bytes unread would reset the connection, and
    /// the client could lose the answer just written.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut dropped = 0;
        let _ = tokio::time::timeout(LINGER.0, async {
            while dropped <= LINGER.1 {
                self.buf.clear();
                self.buf.reserve(READ_SIZE);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(n) if n > 0 => dropped += n,
                    _ => return,
                }
            }
        })
        .await;
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            write_all(&self.stream, &self.out, self.write_stall).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Writes all of `bytes`, failing with `TimedOut` when the socket stays full for
/// `stall` (a client that stops reading). A timer is set only when a write has to
/// wait: most answers go out in one write without one.
async fn write_all(stream: &TcpStream, mut bytes: &[u8], stall: Duration) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::timeout(stall, stream.writable())
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `Date` for responses that have none (as hyper adds it), formatted once a second.
/// Wire time, not the domain's injected clock: it stamps the message, not a record.
#[allow(clippy::disallowed_methods)]
fn http_date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            *value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
        }
        value.clone()
    })
}
