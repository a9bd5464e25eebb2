//! Path normalization against a reference written the plain way (decode what may be
//! decoded, then walk the segments with a stack): the same answer, and a normal form
//! that is its own normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::path::normalize_path;

/// The contract's rules, spelled out without the fast path.
fn reference(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    let mut decoded = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            match v {
                b'.' | b'/' | b'\\' => return None,
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                    decoded.push(char::from(v))
                }
                _ => decoded.push_str(&format!("%{v:02X}")),
            }
            i += 3;
            continue;
        }
        if b <= b' ' || b >= 0x7f || b == b'\\' || b == b';' {
            return None;
        }
        decoded.push(char::from(b));
        i += 1;
    }
    let mut stack: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        match *seg {
            "" => trailing = last && i > 0,
            "." => trailing = last,
            ".." => {
                stack.pop();
                trailing = last;
            }
            s => {
                stack.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::new();
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let ours = normalize_path(raw).ok().map(|p| p.into_owned());
    assert_eq!(ours, reference(raw), "{raw:?}");
    if let Some(normal) = ours {
        assert_eq!(normalize_path(&normal).ok().as_deref(), Some(normal.as_str()));
        assert!(!normal.contains("//"));
    }
});
