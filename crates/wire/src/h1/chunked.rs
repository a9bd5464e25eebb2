//! The chunked transfer coding's decoder (RFC 9112 §7.1).

use super::*;

/// Decodes a chunked body as its bytes arrive (RFC 9112 §7.1). Chunk extensions and
/// trailer fields are read past and dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The size of the chunk whose size line is being read.
    size: u64,
    /// Bytes of the current size or trailer line, to bound them.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex digits of a size line.
    #[default]
    Size,
    /// In the extensions of a size line.
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer is used up before the body's end.
    NeedMore,
    /// The body ended; bytes after it are left in the buffer.
    Done,
}

const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedDecoder {
    /// Takes from the front of `buf` the next piece of data, or reads to the end.
    pub fn decode(&mut self, buf: &mut Bytes) -> Result<Decoded, H1Error> {
        use ChunkState::*;
        loop {
            match self.state {
                Done => return Ok(Decoded::Done),
                Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = remaining.min(buf.len() as u64);
                    self.state = if n == remaining {
                        DataCr
                    } else {
                        Data(remaining - n)
                    };
                    return Ok(Decoded::Data(buf.split_to(n as usize)));
                }
                _ => {}
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(H1Error::Chunked);
            }
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or(H1Error::Chunked)?;
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.line > 1 => Extension,
                (Size | Extension, b'\r') if self.line > 1 => SizeLf,
                (Extension, _) => Extension,
                (SizeLf, b'\n') => {
                    self.line = 0;
                    match std::mem::take(&mut self.size) {
                        0 => TrailerStart,
                        size => Data(size),
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.line = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => {
                    self.line = 0;
                    TrailerStart
                }
                (EndLf, b'\n') => Done,
                _ => return Err(H1Error::Chunked),
            };
        }
    }
}
