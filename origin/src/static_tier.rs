//! The `static-main` role: the dashboard and its assets, from `www/` loaded into memory.

use std::future::ready;

use actix_web::http::header::{
    self, AcceptEncoding, ByteRangeSpec, Encoding, EntityTag, Header, HeaderValue, HttpDate,
    IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince, Preference, Quality, Range,
};
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
pub(crate) fn serve_file(www: &Www, req: &HttpRequest) -> Result<HttpResponse, OriginError> {
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
    // A range is cut from the identity bytes: a slice of a gzip stream helps no client.
    let range = match typed::<Range>(req) {
        Some(Ok(range)) if method == Method::GET && if_range_holds(req, asset) => {
            byte_range(&range, asset.body.len() as u64)
        }
        _ => None,
    };
    let gzip = match (&asset.gzip, &asset.gzip_etag) {
        (Some(body), Some(etag)) if range.is_none() && accepts_gzip(req) => Some((body, etag)),
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

    // Preconditions in the order of RFC 9110, section 13.2.2. An If-Match that does not
    // parse matches nothing; an If-None-Match that does not parse matches nothing either.
    let tag = entity_tag(etag);
    let precondition_failed = match typed::<IfMatch>(req) {
        Some(Ok(IfMatch::Any)) => false,
        Some(Ok(IfMatch::Items(tags))) => !tags
            .iter()
            .any(|t| tag.as_ref().is_some_and(|e| t.strong_eq(e))),
        Some(Err(())) => true,
        None => date::<IfUnmodifiedSince>(req, |h| h.0)
            .zip(asset.modified_secs)
            .is_some_and(|(since, modified)| modified > since),
    };
    if precondition_failed {
        return Ok(res
            .status(StatusCode::PRECONDITION_FAILED)
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .finish());
    }
    let not_modified = match typed::<IfNoneMatch>(req) {
        Some(Ok(IfNoneMatch::Any)) => true,
        Some(Ok(IfNoneMatch::Items(tags))) => tags
            .iter()
            .any(|t| tag.as_ref().is_some_and(|e| t.weak_eq(e))),
        Some(Err(())) => false,
        None => date::<IfModifiedSince>(req, |h| h.0)
            .zip(asset.modified_secs)
            .is_some_and(|(since, modified)| modified <= since),
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

/// `H` as actix-web parses it: `None` when the request has no such header, `Some(Err(()))`
/// when it does not parse.
fn typed<H: Header>(req: &HttpRequest) -> Option<Result<H, ()>> {
    req.headers()
        .contains_key(H::name())
        .then(|| H::parse(req).map_err(|_| ()))
}

/// A date header in whole seconds since the Unix epoch; `None` when absent or not a date.
fn date<H: Header>(req: &HttpRequest, value: impl FnOnce(H) -> HttpDate) -> Option<u64> {
    let date = value(typed::<H>(req)?.ok()?);
    std::time::SystemTime::from(date)
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
}

/// A file's ETag header value as an entity tag.
fn entity_tag(etag: &HeaderValue) -> Option<EntityTag> {
    etag.to_str().ok()?.parse().ok()
}

/// Whether the client accepts gzip: listed with a non-zero weight, or `*` is and gzip is not
/// listed at all (RFC 9110, section 12.5.3). A header that does not parse accepts nothing.
fn accepts_gzip(req: &HttpRequest) -> bool {
    let Some(Ok(accepted)) = typed::<AcceptEncoding>(req) else {
        return false;
    };
    let weight = |wanted: &dyn Fn(&Preference<Encoding>) -> bool| {
        accepted
            .iter()
            .find(|item| wanted(&item.item))
            .map(|item| item.quality > Quality::ZERO)
    };
    let gzip = |p: &Preference<Encoding>| match p {
        Preference::Specific(encoding) => {
            *encoding == Encoding::gzip() || encoding.to_string().eq_ignore_ascii_case("x-gzip")
        }
        Preference::Any => false,
    };
    weight(&gzip)
        .or_else(|| weight(&|p| matches!(p, Preference::Any)))
        .unwrap_or(false)
}

/// Whether a Range header may be honoured: no If-Range, or one naming the file as it is (its
/// strong ETag, or exactly its Last-Modified date).
fn if_range_holds(req: &HttpRequest, asset: &Asset) -> bool {
    match typed::<IfRange>(req) {
        None => true,
        Some(Ok(IfRange::EntityTag(tag))) => {
            entity_tag(&asset.etag).is_some_and(|etag| tag.strong_eq(&etag))
        }
        Some(Ok(IfRange::Date(date))) => {
            let secs = std::time::SystemTime::from(date)
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|since| since.as_secs());
            secs.is_some() && asset.modified_secs == secs
        }
        Some(Err(())) => false,
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

/// The single byte range a Range header asks for; `None` (send the whole body) when it is not
/// one valid `bytes=` range, which RFC 9110 lets a server ignore (a range whose last byte
/// comes before its first is invalid, not unsatisfiable).
fn byte_range(range: &Range, len: u64) -> Option<ByteRange> {
    let Range::Bytes(specs) = range else {
        return None;
    };
    match specs.as_slice() {
        [ByteRangeSpec::FromTo(first, last)] if last < first => None,
        [spec] => Some(spec.to_satisfiable_range(len).map_or(
            ByteRange::Unsatisfiable,
            |(first, last)| ByteRange::Slice { first, last },
        )),
        _ => None,
    }
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

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = actix_web::test::TestRequest::default();
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        req.to_http_request()
    }

    #[test]
    fn reads_accept_encoding_weights() {
        let accepts = |values: &[&str]| {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("accept-encoding", *v)).collect();
            accepts_gzip(&request(&headers))
        };
        for accepted in [
            &["gzip"][..],
            &["gzip, deflate, br"],
            &["br;q=1.0, GZIP;q=0.8"],
            &["*"],
            &["br", "gzip"],
            &["gzip;q=0.001"],
            &["x-gzip"],
        ] {
            assert!(accepts(accepted), "{accepted:?}");
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
            assert!(!accepts(refused), "{refused:?}");
        }
    }

    #[test]
    fn reads_single_byte_ranges() {
        let range = |value: &str, len| {
            let req = request(&[("range", value)]);
            typed::<Range>(&req)
                .and_then(Result::ok)
                .and_then(|range| byte_range(&range, len))
        };
        let slice = |first, last| Some(ByteRange::Slice { first, last });
        assert_eq!(range("bytes=0-9", 100), slice(0, 9));
        assert_eq!(range("bytes=90-", 100), slice(90, 99));
        assert_eq!(range("bytes=90-1000", 100), slice(90, 99));
        assert_eq!(range("bytes=-10", 100), slice(90, 99));
        assert_eq!(range("bytes=-1000", 100), slice(0, 99));
        assert_eq!(range("bytes=100-", 100), Some(ByteRange::Unsatisfiable));
        assert_eq!(range("bytes=-0", 100), Some(ByteRange::Unsatisfiable));
        assert_eq!(range("bytes=0-", 0), Some(ByteRange::Unsatisfiable));
        // Not one valid range: the whole body.
        assert_eq!(range("bytes=9-0", 100), None);
        assert_eq!(range("bytes=0-1,5-6", 100), None);
        assert_eq!(range("items=0-1", 100), None);
        assert_eq!(range("bytes=a-2", 100), None);
    }
}
