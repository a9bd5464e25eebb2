//! Writing heads and the chunked coding's framing.

use super::*;

/// Writes the `Transfer-Encoding` of a chunked answer whose upstream applied other
/// `codings` first (`gzip, chunked`), or plain `chunked`.
pub fn write_chunked_codings(codings: Option<&[u8]>, out: &mut Vec<u8>) {
    match codings {
        Some(c) => {
            out.extend_from_slice(b"transfer-encoding: ");
            out.extend_from_slice(c);
            out.extend_from_slice(b", chunked\r\n");
        }
        None => write_framing(Framing::Chunked, out),
    }
}

/// Writes the lines that say how a message's body is framed ([`body_framing`]).
pub fn write_framing(framing: Framing, out: &mut Vec<u8>) {
    match framing {
        Framing::Length(n) => {
            write_header(
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
                out,
            );
        }
        Framing::Chunked => write_header(b"transfer-encoding", b"chunked", out),
        Framing::Empty | Framing::Close => {}
    }
}

/// The line before a chunk of `len` bytes (`{len:x}\r\n`).
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// The end of a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk, with no trailer fields.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes the status line and the headers.
pub fn write_response_head(status: StatusCode, headers: &HeaderMap, out: &mut Vec<u8>) {
    write_status_line(status, out);
    write_headers(headers, out);
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 <status> <reason>` and CRLF.
pub fn write_status_line(status: StatusCode, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes a header line.
pub fn write_header(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        write_header(name.as_str().as_bytes(), value.as_bytes(), out);
    }
}
