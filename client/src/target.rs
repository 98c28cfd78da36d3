//! Where the tab goes back to after a recovery, as pure functions of the page's URL parts.
//!
//! HAProxy answers a page URL *in place* with the maintenance page, so the page's own
//! `location.pathname + location.search` is where the user was. When the page is opened as
//! `/maintenance.html` itself, the `return` query parameter says where to go instead.
//!
//! Whatever the source, the result is a same-origin path (`/…`) or `/`. Anything that could
//! leave the origin or run script falls back to `/`: other origins, scheme-relative forms
//! (`//host`, `/\host`, `\\host`), `javascript:`/`data:` and other schemes, control
//! characters, backslashes, and percent-encoded forms of any of these (every decoding layer
//! is checked), as well as inputs longer than [`MAX_LEN`].
//!
//! The fragment is dropped: the server never sees it, and a fresh page load is what we want.
//! Every `v` query parameter (the cache-buster) is removed; other parameters keep their
//! order and spelling; [`with_cache_buster`] then appends one fresh `v`.

use alloc::string::String;
use alloc::vec::Vec;

use crate::recovery::push_decimal;

/// The maintenance page's own path; returning there would be pointless, so it maps to `/`.
pub const MAINTENANCE_PATH: &str = "/maintenance.html";

/// Longer return targets are not trusted (and not useful): they fall back to `/`.
pub const MAX_LEN: usize = 2048;

/// Percent-decoding layers checked before an input counts as too odd to keep.
const DECODE_LAYERS: usize = 4;

/// The sanitised path and query to return to, for a page at `origin` (e.g.
/// `http://127.0.0.1:8080`) whose `location.pathname` and `location.search` are given.
pub fn return_target(origin: &str, pathname: &str, search: &str) -> String {
    if pathname == MAINTENANCE_PATH {
        return query_value(search, "return")
            .and_then(|r| local_target(origin.as_bytes(), &r))
            .unwrap_or_else(root);
    }
    let candidate = [pathname.as_bytes(), search.as_bytes()].concat();
    local_target(origin.as_bytes(), &candidate).unwrap_or_else(root)
}

/// Turns `candidate` (a path, or an absolute URL on `origin`) into a safe same-origin
/// path and query without fragment or `v` parameter, or `/` when it is anything else.
pub fn sanitize(origin: &str, candidate: &str) -> String {
    local_target(origin.as_bytes(), candidate.as_bytes()).unwrap_or_else(root)
}

fn root() -> String {
    String::from("/")
}

// Everything below works on bytes with checked access only: no `str` slicing, searching or
// UTF-8 validation, whose panic paths would drag `core::fmt` into the Wasm.
fn local_target(origin: &[u8], candidate: &[u8]) -> Option<String> {
    if candidate.len() > MAX_LEN {
        return None;
    }
    let local = candidate.strip_prefix(origin).unwrap_or(candidate);
    let (local, _fragment) = split_once(local, b'#');
    let mut layer = local.to_vec();
    let mut layers = 0;
    loop {
        if !plain_local(&layer) {
            return None;
        }
        let decoded = percent_decode(&layer);
        if decoded == layer {
            break;
        }
        layers += 1;
        if layers > DECODE_LAYERS {
            return None;
        }
        layer = decoded;
    }
    let (path, query) = split_once(local, b'?');
    if path == MAINTENANCE_PATH.as_bytes() {
        return None;
    }
    let mut out = String::with_capacity(local.len());
    push_encoded(&mut out, path);
    let mut separator = '?';
    for pair in query.unwrap_or_default().split(|&b| b == b'&') {
        if pair.is_empty() || pair == b"v" || pair.starts_with(b"v=") {
            continue;
        }
        out.push(separator);
        separator = '&';
        push_encoded(&mut out, pair);
    }
    Some(out)
}

/// Splits at the first `separator`: the part before it, and the rest after it if found.
fn split_once(bytes: &[u8], separator: u8) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == separator) {
        Some(i) => (bytes.get(..i).unwrap_or_default(), bytes.get(i + 1..)),
        None => (bytes, None),
    }
}

/// A rooted path that no URL parser can read as another host: starts with exactly one `/`,
/// and has no backslash, control character or DEL anywhere (parsers drop tabs and newlines,
/// and treat `\` as `/`).
fn plain_local(bytes: &[u8]) -> bool {
    let rooted = match bytes {
        [b'/'] => true,
        [b'/', second, ..] => *second != b'/',
        _ => false,
    };
    rooted
        && !bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\')
        && !collapses_to_double_slash(bytes)
}

/// Whether the URL parser, removing dot segments, turns this rooted path into one that starts
/// with `//` (`/..//x` and `/.//x` become `//x`): still this origin, but a page served in
/// place at `http://host//x` could not tell its own path from another host's URL. Follows
/// the WHATWG path state: `.` and `%2e` are single dots, `..` in any spelling pops a segment,
/// and a dot segment at the end leaves an empty one.
fn collapses_to_double_slash(bytes: &[u8]) -> bool {
    let (path, _query) = split_once(bytes, b'?');
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    // One entry per segment of the parsed path: whether it is empty.
    let mut empty = Vec::new();
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dots(segment) {
            2 => {
                empty.pop();
                if last {
                    empty.push(true);
                }
            }
            1 => {
                if last {
                    empty.push(true);
                }
            }
            _ => empty.push(segment.is_empty()),
        }
    }
    empty.len() > 1 && empty.first() == Some(&true)
}

/// 1 for a single-dot segment, 2 for a double-dot one (`.` may be spelled `%2e`), else 0.
fn dots(segment: &[u8]) -> usize {
    let mut count = 0;
    let mut rest = segment;
    while !rest.is_empty() {
        if let Some(tail) = rest.strip_prefix(b".") {
            rest = tail;
        } else if let [b'%', b'2', b'e' | b'E', tail @ ..] = rest {
            rest = tail;
        } else {
            return 0;
        }
        count += 1;
        if count > 2 {
            return 0;
        }
    }
    count
}

/// Decodes `%XX` sequences once; malformed ones stay as they are.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if let (b'%', [hi, lo, after @ ..]) = (b, tail) {
            if let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) {
                out.push(hi << 4 | lo);
                rest = after;
                continue;
            }
        }
        out.push(b);
        rest = tail;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `bytes`, percent-encoding spaces and non-ASCII bytes (which can only come from a
/// decoded `return` parameter; `location` parts are already encoded).
fn push_encoded(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b == b' ' || !b.is_ascii() {
            out.push('%');
            for nibble in [b >> 4, b & 0xf] {
                if let Some(&h) = HEX.get(usize::from(nibble)) {
                    out.push(char::from(h));
                }
            }
        } else {
            out.push(char::from(b));
        }
    }
}

/// The bytes of the first `name` parameter in `search` (`?a=1&b=2`), decoded the way
/// `URLSearchParams` does (`+` is a space); `None` when absent.
pub fn query_value(search: &str, name: &str) -> Option<Vec<u8>> {
    let query = search.as_bytes();
    let query = query.strip_prefix(b"?").unwrap_or(query);
    let value = query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = split_once(pair, b'=');
        (key == name.as_bytes()).then(|| value.unwrap_or_default())
    })?;
    let spaced: Vec<u8> = value
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Some(percent_decode(&spaced))
}

/// `target` (from [`return_target`], so without `v`) with `v=<now_ms>` appended, so the
/// browser cannot answer from a cached maintenance page.
pub fn with_cache_buster(target: &str, now_ms: u64) -> String {
    let mut url = String::with_capacity(target.len() + 16);
    url.push_str(target);
    url.push(if target.as_bytes().contains(&b'?') {
        '&'
    } else {
        '?'
    });
    url.push_str("v=");
    push_decimal(&mut url, now_ms);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "http://127.0.0.1:8080";

    #[test]
    fn page_served_in_place_returns_to_its_own_url() {
        assert_eq!(return_target(ORIGIN, "/", ""), "/");
        assert_eq!(return_target(ORIGIN, "/dash", ""), "/dash");
        assert_eq!(
            return_target(ORIGIN, "/dash/hosts", "?sort=load&dir=desc"),
            "/dash/hosts?sort=load&dir=desc"
        );
        // `return` means nothing on other pages.
        assert_eq!(
            return_target(ORIGIN, "/dash", "?return=%2Fother"),
            "/dash?return=%2Fother"
        );
    }

    #[test]
    fn maintenance_page_itself_uses_the_return_parameter() {
        assert_eq!(return_target(ORIGIN, MAINTENANCE_PATH, ""), "/");
        assert_eq!(return_target(ORIGIN, MAINTENANCE_PATH, "?x=1"), "/");
        assert_eq!(
            return_target(ORIGIN, MAINTENANCE_PATH, "?return=/dash"),
            "/dash"
        );
        assert_eq!(
            return_target(
                ORIGIN,
                MAINTENANCE_PATH,
                "?a=b&return=%2Fdash%3Fq%3Dcpu+load%26v%3D3"
            ),
            "/dash?q=cpu%20load"
        );
        assert_eq!(
            return_target(
                ORIGIN,
                MAINTENANCE_PATH,
                "?return=http%3A%2F%2F127.0.0.1%3A8080%2Fdash"
            ),
            "/dash"
        );
        assert_eq!(
            return_target(ORIGIN, MAINTENANCE_PATH, "?return=%2Fmaintenance.html"),
            "/"
        );
        // Bytes that are not UTF-8 stay percent-encoded, harmlessly.
        assert_eq!(
            return_target(ORIGIN, MAINTENANCE_PATH, "?return=/%FF"),
            "/%FF"
        );
        assert_eq!(
            return_target(ORIGIN, MAINTENANCE_PATH, "?return=%2Fcaf%C3%A9"),
            "/caf%C3%A9"
        );
    }

    #[test]
    fn hostile_return_parameters_fall_back_to_root() {
        let hostile = [
            "//elsewhere.example",
            "//elsewhere.example/path",
            "https://elsewhere.example/",
            "http://127.0.0.1:8080.elsewhere.example/",
            "http://127.0.0.1:8080@elsewhere.example/",
            "http://127.0.0.1:80800/",
            "HTTP://127.0.0.1:8080/",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "%2F%2Felsewhere.example",
            "%2f%2felsewhere.example",
            "/%2F%2Felsewhere.example",
            "/%2Felsewhere.example",
            "/%252F%252Felsewhere.example",
            "/\\elsewhere.example",
            "\\\\elsewhere.example",
            "\\/elsewhere.example",
            "/%5C%5Cx",
            "/%5cx",
            "/%255C%255Cx",
            "\t//x",
            "/\t/x",
            "/\n/x",
            "/%09/x",
            "/%0d%0a/x",
            "/x%00",
            "java\nscript:alert(1)",
            " /x",
            "x",
            "",
            "?v=1",
            "#top",
            "/%25252525252F%25252525252Fx",
            // Dot segments the URL parser removes, leaving `//x` (found by the property tests).
            "/..//x",
            "/.//x",
            "/a/..//x",
            "/%2e%2e//x",
            "/%2E//x",
            "/.%2e/%2fx",
            "/..//",
        ];
        for input in hostile {
            assert_eq!(sanitize(ORIGIN, input), "/", "{input:?}");
            // Also as a percent-encoded `return` parameter, the way a link would carry it.
            let mut search = String::from("?return=");
            for b in input.bytes() {
                search.push('%');
                search.push_str(&format!("{b:02X}"));
            }
            assert_eq!(
                return_target(ORIGIN, MAINTENANCE_PATH, &search),
                "/",
                "{input:?}"
            );
        }
    }

    #[test]
    fn hostile_page_paths_fall_back_to_root() {
        // `http://host//elsewhere.example` has the pathname `//elsewhere.example`.
        for pathname in [
            "//elsewhere.example",
            "/%2F%2Felsewhere.example",
            "/%5C%5Cx",
            "/%2F%5Cx",
        ] {
            assert_eq!(return_target(ORIGIN, pathname, "?a=1"), "/", "{pathname:?}");
        }
    }

    #[test]
    fn very_long_inputs_fall_back_to_root() {
        let long = "/a".repeat(MAX_LEN);
        assert_eq!(sanitize(ORIGIN, &long), "/");
        let search = "?q=".to_owned() + &"x".repeat(MAX_LEN);
        assert_eq!(return_target(ORIGIN, "/dash", &search), "/");
        let fits = "/".to_owned() + &"a".repeat(MAX_LEN - 1);
        assert_eq!(sanitize(ORIGIN, &fits), fits);
    }

    #[test]
    fn same_origin_absolute_urls_become_paths() {
        assert_eq!(
            sanitize(ORIGIN, "http://127.0.0.1:8080/dash?x=1#frag"),
            "/dash?x=1"
        );
        assert_eq!(sanitize(ORIGIN, "http://127.0.0.1:8080"), "/");
        assert_eq!(sanitize(ORIGIN, "http://127.0.0.1:8080?x=1"), "/");
        assert_eq!(
            sanitize(ORIGIN, "http://127.0.0.1:8080//elsewhere.example"),
            "/"
        );
    }

    #[test]
    fn cache_buster_is_replaced_not_stacked() {
        assert_eq!(sanitize(ORIGIN, "/dash?v=1&v=2"), "/dash");
        assert_eq!(sanitize(ORIGIN, "/dash?a=1&v=1&b=2&v&v=2"), "/dash?a=1&b=2");
        assert_eq!(
            sanitize(ORIGIN, "/dash?vv=1&version=2&v="),
            "/dash?vv=1&version=2"
        );
        assert_eq!(sanitize(ORIGIN, "/dash?&&a=1&"), "/dash?a=1");
        let target = return_target(ORIGIN, "/dash", "?v=1&v=2");
        assert_eq!(
            with_cache_buster(&target, 1_700_000_000_123),
            "/dash?v=1700000000123"
        );
        let target = return_target(ORIGIN, "/dash", "?a=1&v=9");
        assert_eq!(with_cache_buster(&target, 42), "/dash?a=1&v=42");
        assert_eq!(with_cache_buster("/", 7), "/?v=7");
    }

    #[test]
    fn fragment_is_dropped_and_harmless_oddities_are_kept() {
        assert_eq!(sanitize(ORIGIN, "/dash#hosts"), "/dash");
        assert_eq!(sanitize(ORIGIN, "/a/../b/./c"), "/a/../b/./c");
        assert_eq!(sanitize(ORIGIN, "/a//b"), "/a//b");
        assert_eq!(sanitize(ORIGIN, "/search?q=%2F%2Fx"), "/search?q=%2F%2Fx");
        assert_eq!(sanitize(ORIGIN, "/a b"), "/a%20b");
        assert_eq!(sanitize(ORIGIN, "/%zz"), "/%zz");
    }

    #[test]
    fn query_values_decode_like_url_search_params() {
        assert_eq!(
            query_value("?a=1&return=%2Fx+y", "return").as_deref(),
            Some(&b"/x y"[..])
        );
        assert_eq!(
            query_value("return=a&return=b", "return").as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(query_value("?return", "return").as_deref(), Some(&b""[..]));
        assert_eq!(query_value("?returned=1", "return"), None);
        assert_eq!(query_value("", "return"), None);
    }
}

/// Property tests: whatever the input, the target is a path on the page's own origin, as the
/// WHATWG URL parser (the `url` crate, which follows the same standard as browsers) reads it.
/// Native only; tests/web.rs checks a sample against the browser's own parser.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::prelude::*;
    use url::Url;

    use super::*;

    const ORIGIN: &str = "http://127.0.0.1:8080";

    /// Strings built from the characters that matter to URL parsers, so the search reaches
    /// slashes, dot segments, percent escapes, schemes and control characters quickly.
    fn tricky() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            8 => Just("/".to_owned()),
            2 => Just("\\".to_owned()),
            4 => Just(".".to_owned()),
            4 => Just("..".to_owned()),
            1 => Just("%".to_owned()),
            1 => Just("%2f".to_owned()),
            1 => Just("%2F".to_owned()),
            1 => Just("%5c".to_owned()),
            1 => Just("%2e".to_owned()),
            1 => Just("%25".to_owned()),
            1 => Just("?".to_owned()),
            1 => Just("#".to_owned()),
            1 => Just("&".to_owned()),
            1 => Just("=".to_owned()),
            1 => Just(":".to_owned()),
            1 => Just("@".to_owned()),
            1 => Just("v=1".to_owned()),
            1 => Just("return=".to_owned()),
            1 => Just("http:".to_owned()),
            1 => Just("javascript:".to_owned()),
            1 => Just(ORIGIN.to_owned()),
            1 => Just(MAINTENANCE_PATH.to_owned()),
            1 => Just("elsewhere.example".to_owned()),
            1 => "[\t\n\r \u{0}\u{7f}\u{a0}é\u{2044}\u{ff0f}]",
            1 => "[a-z0-9]{1,3}",
        ];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    fn any_input() -> impl Strategy<Value = String> {
        prop_oneof![tricky(), any::<String>()]
    }

    /// Asserts `target` is a same-origin path, also once the browser has parsed it.
    fn assert_same_origin_path(target: &str, input: &str) {
        let bytes = target.as_bytes();
        assert!(
            bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\')),
            "{input:?} gave {target:?}, not a rooted path"
        );
        let base = Url::parse(&format!("{ORIGIN}{MAINTENANCE_PATH}")).unwrap();
        for candidate in [target.to_owned(), with_cache_buster(target, 42)] {
            let url = base
                .join(&candidate)
                .unwrap_or_else(|error| panic!("{input:?} gave {candidate:?}: {error}"));
            assert_eq!(
                url.origin(),
                base.origin(),
                "{input:?} gave {candidate:?}, which leaves the origin: {url}"
            );
            // Served in place at this URL, the maintenance page must find its way back.
            assert!(
                !url.path().starts_with("//"),
                "{input:?} gave {candidate:?}, whose parsed path {:?} reads as another host",
                url.path()
            );
        }
    }

    /// `input` as a link would carry it: every byte percent-encoded.
    fn encoded(input: &str) -> String {
        let mut search = String::from("?return=");
        for b in input.bytes() {
            search.push_str(&format!("%{b:02X}"));
        }
        search
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn sanitize_always_gives_a_same_origin_path(input in any_input()) {
            assert_same_origin_path(&sanitize(ORIGIN, &input), &input);
        }

        #[test]
        fn the_return_parameter_always_gives_a_same_origin_path(input in any_input()) {
            assert_same_origin_path(&return_target(ORIGIN, MAINTENANCE_PATH, &encoded(&input)), &input);
            let raw = format!("?return={input}");
            assert_same_origin_path(&return_target(ORIGIN, MAINTENANCE_PATH, &raw), &raw);
        }

        #[test]
        fn a_page_url_always_gives_a_same_origin_path(path in any_input(), search in any_input()) {
            let input = format!("{path}{search}");
            assert_same_origin_path(&return_target(ORIGIN, &path, &search), &input);
        }
    }
}
