//! The benchmark's upstream (`bench/gateway.sh`): answers every HTTP/1.1 request on a
//! kept-alive connection with `200 ok`, and does nothing else.
//!
//! Why not nginx `return 200`: it shares the load generator's core, and it cost 4.9 µs
//! of user time a request there, so that core, not the proxy under test, set the pace of
//! the faster proxy's runs (see the script). This one reads whatever requests have
//! arrived and writes as many answers in one write.
//!
//! Usage: `bench_upstream ADDR` (e.g. `127.0.0.1:19001`). Requests must have no body
//! (the benchmark sends GETs).

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const END_OF_HEAD: &[u8] = b"\r\n\r\n";

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19001".into());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(serve(stream));
            }
        })
}

/// The answer, with the same header lines as nginx's `return 200 'ok'` (the proxies
/// pass them on, and the load generator parses them).
fn answer(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nDate: ");
    http_date(|date| out.extend_from_slice(date.as_bytes()));
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
}

/// Calls `f` with `Date`'s value, formatted once a second (as the gateway does for its
/// own answers): this upstream shares the load generator's core, and wrk sends one
/// request a read, so formatting once per read was still once per answer.
#[allow(clippy::disallowed_methods)] // wire time, not a domain clock
fn http_date(f: impl FnOnce(&str)) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            *value = httpdate::fmt_http_date(now);
        }
        f(value)
    })
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete head; keep the partial one that may follow.
        let mut done = 0;
        while let Some(at) = buf[done..]
            .windows(END_OF_HEAD.len())
            .position(|w| w == END_OF_HEAD)
        {
            done += at + END_OF_HEAD.len();
            answer(&mut out);
        }
        buf.drain(..done);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
