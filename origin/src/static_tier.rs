//! The `static-main` role: the dashboard and its assets, from `www/` loaded into memory.

use std::future::ready;

use actix_web::http::header::{self, HeaderMap, HeaderValue, HttpDate};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use contract::Tier;
use serde_json::json;

use crate::config::StaticMain;
use crate::metrics::{metrics_endpoint, Metrics};
use crate::www::{lookup_key, Asset, Www};
use crate::{escapes_root, get_or_head, method_not_allowed, OriginError};

/// For assets whose URL names their version (`?v=<hash>`): cache for a year, never revalidate.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Registers `static-main`: `/healthz`, `/metrics` and the files of `www` (loaded from
/// `site.www` by [`Www::load`]).
///
/// Files carry a strong ETag and Last-Modified and answer conditional requests (304, 412) and
/// single byte ranges. HTML and unversioned assets get `Cache-Control: no-cache` (revalidate,
/// cheap with the ETag); requests with a `v` query parameter get [`IMMUTABLE`]. A client that
/// accepts gzip gets the compressed variant made at load, with `Vary: Accept-Encoding`.
pub fn configure_static_main(
    cfg: &mut web::ServiceConfig,
    site: &StaticMain,
    www: &web::Data<Www>,
    metrics: &Metrics,
) {
    let build = site.build_id.clone();
    let healthz = move || {
        let body = json!({"status": "ok", "tier": "static", "build": build});
        async move {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(body)
        }
    };
    let www = web::Data::clone(www);
    let files = move |req: HttpRequest| ready(serve_file(&www, &req));
    cfg.app_data(web::Data::new(metrics.clone())).service(
        web::scope("")
            .wrap(metrics.observe())
            .service(
                web::resource(Tier::Static.health_path())
                    .route(get_or_head().to(healthz))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/metrics")
                    .route(web::get().to(metrics_endpoint))
                    .default_service(web::to(method_not_allowed)),
            )
            .default_service(web::to(files)),
    );
}

/// Answers a request for a file of `www`: every request but `/healthz` and `/metrics`.
fn serve_file(www: &Www, req: &HttpRequest) -> Result<HttpResponse, OriginError> {
    // Here rather than as a route in front (see `reject_escaping_paths`): a `{path:.*}` route
    // costs a regular expression match per request, measurable at this tier's request rates.
    if escapes_root(req.uri().path()) {
        return Err(OriginError::PathEscapesRoot);
    }
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(OriginError::MethodNotAllowed);
    }
    let asset = lookup_key(req.uri().path())
        .and_then(|key| www.get(&key))
        .ok_or(OriginError::NotFound)?;
    let headers = req.headers();

    // A range is cut from the identity bytes: a slice of a gzip stream helps no client.
    let range = match headers.get(header::RANGE) {
        Some(range) if method == Method::GET && if_range_holds(headers, asset) => {
            byte_range(range.as_bytes(), asset.body.len() as u64)
        }
        _ => None,
    };
    let gzip = match (&asset.gzip, &asset.gzip_etag) {
        (Some(body), Some(etag)) if range.is_none() && accepts_gzip(headers) => Some((body, etag)),
        _ => None,
    };
    let (body, etag) = gzip.unwrap_or((&asset.body, &asset.etag));

    let mut res = HttpResponse::Ok();
    res.insert_header((header::ETAG, etag.clone()));
    if let Some(last_modified) = &asset.last_modified {
        res.insert_header((header::LAST_MODIFIED, last_modified.clone()));
    }
    if asset.compressible {
        res.insert_header((header::VARY, HeaderValue::from_static("accept-encoding")));
    }
    let policy = cache_policy(asset.is_html, has_version_param(req.query_string()));
    res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static(policy)));

    // Preconditions in the order of RFC 9110, section 13.2.2.
    let precondition_failed = match headers.get(header::IF_MATCH) {
        Some(_) => !tag_listed(headers, header::IF_MATCH, etag, Comparison::Strong),
        None => date_header(headers, header::IF_UNMODIFIED_SINCE)
            .zip(asset.modified_secs)
            .is_some_and(|(since, modified)| modified > since),
    };
    if precondition_failed {
        return Ok(res
            .status(StatusCode::PRECONDITION_FAILED)
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .finish());
    }
    let not_modified = if headers.contains_key(header::IF_NONE_MATCH) {
        tag_listed(headers, header::IF_NONE_MATCH, etag, Comparison::Weak)
    } else {
        date_header(headers, header::IF_MODIFIED_SINCE)
            .zip(asset.modified_secs)
            .is_some_and(|(since, modified)| modified <= since)
    };
    if not_modified {
        return Ok(res.status(StatusCode::NOT_MODIFIED).finish());
    }

    res.insert_header((header::CONTENT_TYPE, asset.content_type.clone()))
        .insert_header((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")));
    if gzip.is_some() {
        res.insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")));
    }
    let len = body.len() as u64;
    match range {
        None => Ok(res.body(body.clone())),
        Some(ByteRange::Unsatisfiable) => Ok(res
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .insert_header((header::CONTENT_RANGE, format!("bytes */{len}")))
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .finish()),
        Some(ByteRange::Slice { first, last }) => Ok(res
            .status(StatusCode::PARTIAL_CONTENT)
            .insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}")))
            // Both ends lie inside the body: byte_range checked them against its length.
            .body(body.slice(first as usize..=last as usize))),
    }
}

/// `Cache-Control` of a file answer: HTML always revalidates (it names the assets' versions),
/// versioned assets are immutable, the rest revalidates.
fn cache_policy(is_html: bool, versioned: bool) -> &'static str {
    if versioned && !is_html {
        IMMUTABLE
    } else {
        "no-cache"
    }
}

/// Whether the query string carries a `v` parameter (`?v=3f2a`, `?a=1&v=2`).
fn has_version_param(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == "v" || pair.starts_with("v="))
}

/// Whether the client accepts gzip: listed with a non-zero weight, or `*` is and gzip is not
/// listed at all (RFC 9110, section 12.5.3). Unreadable weights count as zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let weighted = parts
                .filter_map(|param| param.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .is_none_or(|(_, q)| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(weighted);
            } else if coding == "*" {
                any = Some(weighted);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// How two entity tags are compared (RFC 9110, section 8.8.3.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both strong and equal: for If-Match and If-Range.
    Strong,
    /// Equal once any `W/` is ignored: for If-None-Match.
    Weak,
}

/// Whether the `name` header fields list `etag` (or are `*`).
fn tag_listed(
    headers: &HeaderMap,
    name: header::HeaderName,
    etag: &HeaderValue,
    how: Comparison,
) -> bool {
    headers
        .get_all(name)
        .any(|value| list_matches(value.as_bytes(), etag.as_bytes(), how))
}

/// Whether a comma-separated list of entity tags holds `etag` (quoted, strong), or is `*`.
fn list_matches(list: &[u8], etag: &[u8], how: Comparison) -> bool {
    let mut rest = list;
    loop {
        rest = rest.trim_ascii_start();
        match rest {
            [] => return false,
            [b'*', ..] => return true,
            [b',', tail @ ..] => rest = tail,
            _ => {
                let (weak, quoted) = match rest.strip_prefix(b"W/") {
                    Some(tail) => (true, tail),
                    None => (false, rest),
                };
                // An entity tag is a quoted string without inner quotes.
                let Some(end) = quoted
                    .strip_prefix(b"\"")
                    .and_then(|tail| tail.iter().position(|&byte| byte == b'"'))
                else {
                    return false;
                };
                let (tag, tail) = quoted.split_at(end + 2);
                if tag == etag && (how == Comparison::Weak || !weak) {
                    return true;
                }
                rest = tail;
            }
        }
    }
}

/// A header holding an HTTP date, in whole seconds since the Unix epoch.
fn date_header(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let date: HttpDate = headers.get(name)?.to_str().ok()?.parse().ok()?;
    std::time::SystemTime::from(date)
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
}

/// Whether a Range header may be honoured: no If-Range, or one naming the file as it is (its
/// strong ETag, or exactly its Last-Modified date).
fn if_range_holds(headers: &HeaderMap, asset: &Asset) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let bytes = value.as_bytes();
    if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
        list_matches(bytes, asset.etag.as_bytes(), Comparison::Strong)
    } else {
        date_header(headers, header::IF_RANGE).is_some_and(|date| asset.modified_secs == Some(date))
    }
}

/// What a Range header asks of a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// Bytes `first..=last`, both within the body.
    Slice { first: u64, last: u64 },
    /// No byte of the body (answered 416).
    Unsatisfiable,
}

/// The single byte range a Range header asks for; `None` (send the whole body) when the header
/// is not one `bytes=` range, which RFC 9110 lets a server ignore.
fn byte_range(header: &[u8], len: u64) -> Option<ByteRange> {
    let spec = std::str::from_utf8(header)
        .ok()?
        .trim()
        .strip_prefix("bytes=")?;
    let (first, last) = spec.trim().split_once('-')?;
    let number = |text: &str| {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        text.parse::<u64>().ok()
    };
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-500`: the last 500 bytes.
        (true, false) => match number(last)? {
            0 => ByteRange::Unsatisfiable,
            suffix => ByteRange::Slice {
                first: len.saturating_sub(suffix),
                last: len.checked_sub(1)?,
            },
        },
        (false, true) => ByteRange::Slice {
            first: number(first)?,
            last: len.saturating_sub(1),
        },
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return None;
            }
            ByteRange::Slice {
                first,
                last: last.min(len.saturating_sub(1)),
            }
        }
        (true, true) => return None,
    };
    Some(match range {
        ByteRange::Slice { first, .. } if first >= len => ByteRange::Unsatisfiable,
        range => range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_version_params() {
        assert!(has_version_param("v=abc"));
        assert!(has_version_param("a=1&v=2"));
        assert!(has_version_param("v"));
        assert!(!has_version_param("vv=1"));
        assert!(!has_version_param(""));
    }

    fn accept_encoding(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn reads_accept_encoding_weights() {
        for accepted in [
            &["gzip"][..],
            &["gzip, deflate, br"],
            &["br;q=1.0, GZIP;q=0.8"],
            &["*"],
            &["br", "gzip"],
            &["gzip;q=0.001"],
        ] {
            assert!(accepts_gzip(&accept_encoding(accepted)), "{accepted:?}");
        }
        for refused in [
            &[][..],
            &["br"],
            &["gzip;q=0"],
            &["gzip; q=0.000, identity"],
            &["gzip;Q=0"],
            &["*;q=0"],
            &["*, gzip;q=0"],
            &["gzip;q=nonsense"],
            &["gzipped"],
        ] {
            assert!(!accepts_gzip(&accept_encoding(refused)), "{refused:?}");
        }
    }

    #[test]
    fn compares_entity_tags() {
        let etag = b"\"abc\"";
        assert!(list_matches(b"\"abc\"", etag, Comparison::Strong));
        assert!(list_matches(b"\"x\", \"abc\"", etag, Comparison::Strong));
        assert!(list_matches(b"*", etag, Comparison::Strong));
        assert!(list_matches(b"W/\"abc\"", etag, Comparison::Weak));
        assert!(!list_matches(b"W/\"abc\"", etag, Comparison::Strong));
        assert!(!list_matches(b"\"abcd\", \"ab\"", etag, Comparison::Weak));
        assert!(!list_matches(b"abc", etag, Comparison::Weak));
        assert!(!list_matches(b"\"abc", etag, Comparison::Weak));
        assert!(!list_matches(b"", etag, Comparison::Weak));
    }

    #[test]
    fn reads_single_byte_ranges() {
        let slice = |first, last| Some(ByteRange::Slice { first, last });
        assert_eq!(byte_range(b"bytes=0-9", 100), slice(0, 9));
        assert_eq!(byte_range(b"bytes=90-", 100), slice(90, 99));
        assert_eq!(byte_range(b"bytes=90-1000", 100), slice(90, 99));
        assert_eq!(byte_range(b"bytes=-10", 100), slice(90, 99));
        assert_eq!(byte_range(b"bytes=-1000", 100), slice(0, 99));
        assert_eq!(
            byte_range(b"bytes=100-", 100),
            Some(ByteRange::Unsatisfiable)
        );
        assert_eq!(byte_range(b"bytes=-0", 100), Some(ByteRange::Unsatisfiable));
        assert_eq!(byte_range(b"bytes=0-", 0), Some(ByteRange::Unsatisfiable));
        // Not one well-formed range: the whole body.
        assert_eq!(byte_range(b"bytes=9-0", 100), None);
        assert_eq!(byte_range(b"bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range(b"items=0-1", 100), None);
        assert_eq!(byte_range(b"bytes=+1-2", 100), None);
    }
}
