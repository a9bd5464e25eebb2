//! The gateway's one reading of a request: the path normalized once (RFC 3986 §6.2.2),
//! and the spellings refused outright, so that no route is reachable through another
//! spelling of its path and the upstream gets the path the gateway judged.
//!
//! The rules are the contract's ("One request, one meaning"):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - _ ~`) are decoded, other
//!   percent-encodings upper-cased, dot segments removed, repeated `/` collapsed;
//! - refused: a percent-encoded `.`, `/` or `\` (an upstream that decodes them would see
//!   other segments than the gateway), a raw `\` (Windows and some frameworks read it as
//!   `/`), a `;` (path parameters, which some upstreams strip and others keep), a broken
//!   percent-encoding, and a control character or raw non-ASCII byte;
//! - case is kept: paths are case-sensitive, as in nginx and Envoy.

use std::borrow::Cow;

/// Why a request target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("The path does not start with '/'.")]
    NotAbsolute,
    #[error("The path has a percent-encoded '.', '/' or '\\', which no route accepts.")]
    EncodedSeparator,
    #[error("The path has a '\\', which no route accepts.")]
    Backslash,
    #[error("The path has a ';': path parameters are not accepted.")]
    PathParameter,
    #[error("The path has a '%' not followed by two hex digits.")]
    BadPercent,
    #[error("The request target has a control character, a space or a raw non-ASCII byte.")]
    Byte,
}

/// The normalized form of `raw`, or why it is refused. A path already in normal form
/// (nearly all) comes back borrowed, with nothing allocated. The normal form keeps a
/// trailing `/` (`/a/` and `/a` are different resources to most servers).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut rewrite = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = percent_at(bytes, i)?;
                if matches!(decoded, b'.' | b'/' | b'\\') {
                    return Err(PathError::EncodedSeparator);
                }
                rewrite |= is_unreserved(decoded) || bytes[i + 1..i + 3] != upper_hex(decoded);
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'/' => rewrite |= starts_dot_or_empty_segment(&bytes[i + 1..]),
            b => check_target_byte(b)?,
        }
        i += 1;
    }
    if !rewrite {
        return Ok(Cow::Borrowed(raw));
    }
    Ok(Cow::Owned(remove_dot_segments(&decode_unreserved(raw))))
}

/// Refuses a control character, space, DEL or raw non-ASCII byte: what a request
/// target (path or query) may not hold.
pub fn check_target_byte(b: u8) -> Result<(), PathError> {
    if b > b' ' && b < 0x7f {
        Ok(())
    } else {
        Err(PathError::Byte)
    }
}

/// Whether a request's method is an upper-case token: `post` is refused (as nginx
/// does), since a route's methods are upper-case and a lower-case spelling would
/// otherwise miss a method-limited route and fall to a broader one.
pub fn is_upper_case_method(method: &str) -> bool {
    !method.is_empty() && !method.bytes().any(|b| b.is_ascii_lowercase())
}

/// The byte that the percent-encoding at `bytes[i]` (a `%`) stands for.
fn percent_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    let hex = |b: Option<&u8>| {
        b.and_then(|&b| (b as char).to_digit(16))
            .ok_or(PathError::BadPercent)
    };
    Ok((hex(bytes.get(i + 1))? * 16 + hex(bytes.get(i + 2))?) as u8)
}

fn upper_hex(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]
}

/// RFC 3986 §2.3, less `.`, which is refused when encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// Whether the segment after a `/` is empty (`//`) or a dot segment (`.` or `..`).
fn starts_dot_or_empty_segment(rest: &[u8]) -> bool {
    let segment = rest.split(|&b| b == b'/').next().unwrap_or(b"");
    let last = segment.len() == rest.len();
    (segment.is_empty() && !last) || segment == b"." || segment == b".."
}

/// Decodes percent-encoded unreserved characters and upper-cases the other
/// encodings; `raw` has been checked by [`normalize_path`].
fn decode_unreserved(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Ok(b) = percent_at(bytes, i) {
                if is_unreserved(b) {
                    out.push(char::from(b));
                } else {
                    out.push('%');
                    out.extend(upper_hex(b).map(char::from));
                }
                i += 3;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 dot-segment removal, with empty segments (`//`) dropped too.
fn remove_dot_segments(raw: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = raw.split('/').collect();
    let last = segments.len() - 1;
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> String {
        normalize_path(s).unwrap().into_owned()
    }

    #[test]
    fn dot_segments_and_repeated_slashes_go() {
        assert_eq!(n("/"), "/");
        assert_eq!(n("/a/b"), "/a/b");
        assert_eq!(n("/a//b"), "/a/b");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/../b"), "/b");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/b/"), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("//_tessera/verify"), "/_tessera/verify");
        assert_eq!(n("/x/../_tessera/healthz"), "/_tessera/healthz");
        assert_eq!(n("/a/.b/..c"), "/a/.b/..c");
    }

    #[test]
    fn unreserved_characters_are_decoded_and_other_encodings_upper_cased() {
        assert_eq!(n("/private/%61dmin/x"), "/private/admin/x");
        assert_eq!(n("/%70rivate/x"), "/private/x");
        assert_eq!(n("/%41%7e%2D%5f%30"), "/A~-_0");
        assert_eq!(n("/a%20b%3f"), "/a%20b%3F");
        assert_eq!(n("/a%C3%A9"), "/a%C3%A9");
        assert!(matches!(normalize_path("/a%C3%A9"), Ok(Cow::Borrowed(_))));
        // Decoding could make a `..` only from encoded dots, which are refused.
        assert_eq!(
            normalize_path("/a/%61/%2e%2e"),
            Err(PathError::EncodedSeparator)
        );
    }

    #[test]
    fn spellings_that_could_mean_another_path_are_refused() {
        use PathError::*;
        for (raw, why) in [
            ("a", NotAbsolute),
            ("", NotAbsolute),
            ("/a/%2e%2e/b", EncodedSeparator),
            ("/a%2Fb", EncodedSeparator),
            ("/a%2fb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/a\\b", Backslash),
            ("/private/admin;x=1/x", PathParameter),
            ("/a;", PathParameter),
            ("/a%zz", BadPercent),
            ("/a%4", BadPercent),
            ("/a%", BadPercent),
            ("/a\u{e9}", Byte),
            ("/a\tb", Byte),
            ("/a b", Byte),
            ("/a\u{7f}", Byte),
        ] {
            assert_eq!(normalize_path(raw), Err(why), "{raw:?}");
        }
    }

    #[test]
    fn methods_must_be_upper_case() {
        assert!(is_upper_case_method("POST"));
        assert!(is_upper_case_method("M-SEARCH"));
        assert!(!is_upper_case_method("post"));
        assert!(!is_upper_case_method("Get"));
    }

    /// A path of plain segments, and a spelling of it that a client may send.
    fn spelled() -> impl Strategy<Value = (String, String)> {
        let segment = "[A-Za-z0-9_~-]{1,6}";
        let spelling = prop_oneof![
            Just(0u8), // as it is
            Just(1),   // one character percent-encoded, lower-case hex
            Just(2),   // one character percent-encoded, upper-case hex
            Just(3),   // a `./` before it
            Just(4),   // `x/../` before it
            Just(5),   // a doubled `/`
        ];
        proptest::collection::vec((segment, spelling, any::<prop::sample::Index>()), 0..6).prop_map(
            |parts| {
                let (mut canonical, mut spelled) = (String::new(), String::new());
                for (seg, how, at) in parts {
                    canonical.push('/');
                    canonical.push_str(&seg);
                    let pos = at.index(seg.len());
                    let byte = seg.as_bytes()[pos];
                    let encoded = match how {
                        1 => format!("%{byte:02x}"),
                        _ => format!("%{byte:02X}"),
                    };
                    let seg = if matches!(how, 1 | 2) {
                        format!("{}{encoded}{}", &seg[..pos], &seg[pos + 1..])
                    } else {
                        seg
                    };
                    spelled.push_str(match how {
                        3 => "/.",
                        4 => "/x/..",
                        5 => "/",
                        _ => "",
                    });
                    spelled.push('/');
                    spelled.push_str(&seg);
                }
                if canonical.is_empty() {
                    canonical.push('/');
                    spelled.push('/');
                }
                (canonical, spelled)
            },
        )
    }

    proptest! {
        /// Any two spellings of a path normalize alike, so they pick the same route and
        /// forward the same bytes (both are functions of the normal form alone).
        #[test]
        fn every_spelling_of_a_path_normalizes_to_it((canonical, spelled) in spelled()) {
            prop_assert_eq!(n(&spelled), canonical.clone());
            prop_assert_eq!(n(&canonical), canonical.clone());
            prop_assert!(matches!(normalize_path(&canonical), Ok(Cow::Borrowed(_))));
        }

        /// The normal form is a fixed point, and refused bytes are refused wherever
        /// they are.
        #[test]
        fn normal_forms_are_fixed_points(raw in "/[ -~]{0,24}") {
            if let Ok(once) = normalize_path(&raw) {
                let twice = normalize_path(&once).map(Cow::into_owned);
                prop_assert_eq!(twice, Ok(once.clone().into_owned()));
                prop_assert!(!once.contains("//") && !once.contains(['\\', ';', ' ']));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
            } else {
                prop_assert!(raw.contains(['%', '\\', ';', ' ']));
            }
        }
    }
}
