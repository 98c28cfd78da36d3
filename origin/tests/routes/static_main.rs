//! `static-main`: files, caching headers, compression, health and path safety.

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, web, App, Error};
use origin::config::StaticMain;
use origin::{configure_static_main, Metrics, Www};
use serde_json::{json, Value};

use crate::support::{body_text, header, Site, INDEX_HTML, SECRET};

pub(crate) async fn app(
    site: &Site,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    let settings = StaticMain {
        www: site.www(),
        build_id: "build-42".to_owned(),
    };
    let metrics = Metrics::new("static-main", "build-42").unwrap();
    let www = web::Data::new(Www::load(&settings.www).expect("load the site"));
    test::init_service(
        App::new().configure(|cfg| configure_static_main(cfg, &settings, &www, &metrics)),
    )
    .await
}

#[actix_web::test]
async fn healthz_reports_ok_and_is_never_cached() {
    let site = Site::new();
    let app = app(&site).await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    assert_eq!(header(&res, header::CONTENT_TYPE), "application/json");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        json!({"status": "ok", "tier": "static", "build": "build-42"})
    );
}

#[actix_web::test]
async fn index_is_served_at_the_root_as_revalidated_html() {
    let site = Site::new();
    let app = app(&site).await;
    for uri in ["/", "/index.html", "/?v=123"] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{uri}"
        );
        // HTML must always revalidate, versioned or not: it names the assets' versions.
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache", "{uri}");
        assert!(!header(&res, header::LAST_MODIFIED).is_empty(), "{uri}");
        assert_eq!(body_text(res).await, INDEX_HTML, "{uri}");
    }
}

#[actix_web::test]
async fn assets_have_their_types_and_versioned_ones_are_immutable() {
    let site = Site::new();
    let app = app(&site).await;
    let cases = [
        ("/pkg/client_bg.wasm", "application/wasm", "no-cache"),
        (
            "/pkg/client_bg.wasm?v=ab12",
            "application/wasm",
            origin::static_tier::IMMUTABLE,
        ),
        (
            "/pkg/client.js?x=1&v=ab12",
            "text/javascript",
            origin::static_tier::IMMUTABLE,
        ),
        ("/app.css", "text/css", "no-cache"),
        ("/app.css?version=2", "text/css", "no-cache"),
    ];
    for (uri, content_type, cache_control) in cases {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert!(
            header(&res, header::CONTENT_TYPE).starts_with(content_type),
            "{uri}: {}",
            header(&res, header::CONTENT_TYPE)
        );
        assert_eq!(header(&res, header::CACHE_CONTROL), cache_control, "{uri}");
    }
}

#[actix_web::test]
async fn etag_revalidation_answers_304() {
    let site = Site::new();
    let app = app(&site).await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/app.css").to_request()).await;
    let etag = header(&res, header::ETAG);
    assert!(etag.starts_with('"'), "ETag missing or malformed: {etag:?}");

    let again = test::TestRequest::get()
        .uri("/app.css")
        .insert_header((header::IF_NONE_MATCH, etag.clone()))
        .to_request();
    let res = test::call_service(&app, again).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache");
    assert!(test::read_body(res).await.is_empty());

    let stale = test::TestRequest::get()
        .uri("/app.css")
        .insert_header((header::IF_NONE_MATCH, "\"stale\""))
        .to_request();
    assert_eq!(
        test::call_service(&app, stale).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn compresses_when_the_client_accepts_gzip() {
    let site = Site::new();
    let app = app(&site).await;
    let req = test::TestRequest::get()
        .uri("/app.css")
        .insert_header((header::ACCEPT_ENCODING, "gzip"))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip");
    assert!(header(&res, header::VARY)
        .to_lowercase()
        .contains("accept-encoding"));
    let body = test::read_body(res).await;
    assert_eq!(&body[..2], &[0x1f, 0x8b], "not a gzip stream");
    assert!(
        body.len() < 4800,
        "gzip did not shrink 4800 repetitive bytes: {}",
        body.len()
    );

    let plain =
        test::call_service(&app, test::TestRequest::get().uri("/app.css").to_request()).await;
    assert_eq!(header(&plain, header::CONTENT_ENCODING), "");
}

#[actix_web::test]
async fn unknown_paths_are_404() {
    let site = Site::new();
    let app = app(&site).await;
    for uri in ["/nope.html", "/pkg/nope.js", "/pkg/"] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[actix_web::test]
async fn unknown_methods_get_a_client_error() {
    let site = Site::new();
    let app = app(&site).await;
    for (method, uri) in [
        (Method::POST, "/index.html"),
        (Method::DELETE, "/"),
        (Method::from_bytes(b"BREW").unwrap(), "/"),
        (Method::PUT, "/healthz"),
    ] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(uri)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert!(
            res.status().is_client_error(),
            "{method} {uri}: {}",
            res.status()
        );
    }
}

#[actix_web::test]
async fn head_is_answered_like_get() {
    let site = Site::new();
    let app = app(&site).await;
    for uri in ["/", "/healthz"] {
        let res = test::call_service(
            &app,
            test::TestRequest::default()
                .method(Method::HEAD)
                .uri(uri)
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
}

#[actix_web::test]
async fn traversal_never_escapes_www() {
    let site = Site::new();
    assert!(site.root().join("secret.txt").exists());
    let app = app(&site).await;
    for uri in [
        "/../secret.txt",
        "/pkg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/pkg/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e",
    ] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status();
        let body = body_text(res).await;
        assert!(status.is_client_error(), "{uri}: {status}");
        assert!(!body.contains(SECRET), "{uri} leaked the secret");
    }
}

/// A GET of `uri` with extra request headers.
fn get(uri: &str, headers: &[(header::HeaderName, &str)]) -> actix_http::Request {
    let mut req = test::TestRequest::get().uri(uri);
    for (name, value) in headers {
        req = req.insert_header((name.clone(), *value));
    }
    req.to_request()
}

#[actix_web::test]
async fn if_modified_since_answers_304_unless_if_none_match_decides() {
    let site = Site::new();
    let app = app(&site).await;
    let res = test::call_service(&app, get("/app.css", &[])).await;
    let last_modified = header(&res, header::LAST_MODIFIED);
    assert!(last_modified.ends_with(" GMT"), "{last_modified:?}");

    let res = test::call_service(
        &app,
        get("/app.css", &[(header::IF_MODIFIED_SINCE, &last_modified)]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache");
    assert!(test::read_body(res).await.is_empty());

    // Changed since a date long before the file was written.
    let old = "Thu, 01 Jan 1998 00:00:00 GMT";
    let res = test::call_service(&app, get("/app.css", &[(header::IF_MODIFIED_SINCE, old)])).await;
    assert_eq!(res.status(), StatusCode::OK);

    // If-None-Match, when present, is the only validator that counts (RFC 9110, 13.1.3).
    let res = test::call_service(
        &app,
        get(
            "/app.css",
            &[
                (header::IF_MODIFIED_SINCE, &last_modified),
                (header::IF_NONE_MATCH, "\"stale\""),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    // Unreadable dates are ignored.
    let res = test::call_service(
        &app,
        get("/app.css", &[(header::IF_MODIFIED_SINCE, "yesterday")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_web::test]
async fn if_none_match_takes_lists_star_and_weak_tags() {
    let site = Site::new();
    let app = app(&site).await;
    let etag = header(
        &test::call_service(&app, get("/app.css", &[])).await,
        header::ETAG,
    );
    for value in [
        etag.clone(),
        format!("\"other\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let res =
            test::call_service(&app, get("/app.css", &[(header::IF_NONE_MATCH, &value)])).await;
        assert_eq!(
            res.status(),
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {value}"
        );
        assert_eq!(header(&res, header::ETAG), etag, "{value}");
    }
}

#[actix_web::test]
async fn gzip_refused_with_q_0_gets_the_plain_file() {
    let site = Site::new();
    let app = app(&site).await;
    let plain = "main { display: grid; }\n".repeat(200);
    for accept in [
        "gzip;q=0",
        "gzip;q=0.0, identity",
        "br",
        "*;q=0",
        "*, gzip;q=0",
    ] {
        let res =
            test::call_service(&app, get("/app.css", &[(header::ACCEPT_ENCODING, accept)])).await;
        assert_eq!(res.status(), StatusCode::OK, "{accept}");
        assert_eq!(header(&res, header::CONTENT_ENCODING), "", "{accept}");
        assert_eq!(body_text(res).await, plain, "{accept}");
    }
    for accept in ["gzip;q=0.5", "*", "br, GZIP"] {
        let res =
            test::call_service(&app, get("/app.css", &[(header::ACCEPT_ENCODING, accept)])).await;
        assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip", "{accept}");
    }
}

#[actix_web::test]
async fn the_gzip_variant_has_its_own_etag_and_revalidates() {
    let site = Site::new();
    let app = app(&site).await;
    let gzip = [(header::ACCEPT_ENCODING, "gzip")];
    let plain_etag = header(
        &test::call_service(&app, get("/app.css", &[])).await,
        header::ETAG,
    );
    let gzip_etag = header(
        &test::call_service(&app, get("/app.css", &gzip)).await,
        header::ETAG,
    );
    assert!(gzip_etag.starts_with('"'), "{gzip_etag:?}");
    assert_ne!(
        gzip_etag, plain_etag,
        "two byte sequences under one strong ETag"
    );

    let res = test::call_service(
        &app,
        get(
            "/app.css",
            &[
                (header::ACCEPT_ENCODING, "gzip"),
                (header::IF_NONE_MATCH, &gzip_etag),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    // A client that no longer takes gzip gets the plain file, not a 304 for bytes it lacks.
    let res = test::call_service(
        &app,
        get("/app.css", &[(header::IF_NONE_MATCH, &gzip_etag)]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CONTENT_ENCODING), "");
}

#[actix_web::test]
async fn compressible_types_always_say_vary() {
    let site = Site::new();
    let app = app(&site).await;
    let etag = header(
        &test::call_service(&app, get("/app.css", &[])).await,
        header::ETAG,
    );
    let requests = [
        get("/app.css", &[]),
        get("/app.css", &[(header::ACCEPT_ENCODING, "gzip")]),
        get("/app.css", &[(header::IF_NONE_MATCH, &etag)]),
        test::TestRequest::default()
            .method(Method::HEAD)
            .uri("/app.css")
            .to_request(),
        get("/", &[]),
        // Too small for a gzip variant, but of a type that has them.
        get("/pkg/client_bg.wasm", &[(header::ACCEPT_ENCODING, "gzip")]),
    ];
    for req in requests {
        let what = format!("{} {}", req.method(), req.uri());
        let res = test::call_service(&app, req).await;
        assert_eq!(header(&res, header::VARY), "accept-encoding", "{what}");
    }
    site.write("logo.png", "\u{89}PNG not really");
    let app = self::app(&site).await;
    let res = test::call_service(&app, get("/logo.png", &[])).await;
    assert_eq!(header(&res, header::CONTENT_TYPE), "image/png");
    assert_eq!(
        header(&res, header::VARY),
        "",
        "images are never compressed"
    );
}

#[actix_web::test]
async fn head_answers_the_headers_of_get() {
    let site = Site::new();
    let app = app(&site).await;
    for accept in ["", "gzip"] {
        let get_res =
            test::call_service(&app, get("/app.css", &[(header::ACCEPT_ENCODING, accept)])).await;
        let head = test::TestRequest::default()
            .method(Method::HEAD)
            .uri("/app.css")
            .insert_header((header::ACCEPT_ENCODING, accept))
            .to_request();
        let head_res = test::call_service(&app, head).await;
        assert_eq!(head_res.status(), StatusCode::OK);
        for name in [
            header::ETAG,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CACHE_CONTROL,
            header::LAST_MODIFIED,
            header::VARY,
        ] {
            assert_eq!(
                header(&head_res, name.clone()),
                header(&get_res, name.clone()),
                "{name} with Accept-Encoding: {accept}"
            );
        }
    }
    // That no body goes out on the wire is checked against the real binary (binary.rs).
}

#[actix_web::test]
async fn preconditions_and_ranges_follow_rfc_9110() {
    let site = Site::new();
    let app = app(&site).await;
    let etag = header(
        &test::call_service(&app, get("/app.css", &[])).await,
        header::ETAG,
    );
    let full = "main { display: grid; }\n".repeat(200);

    for (if_match, status) in [
        ("\"stale\"", StatusCode::PRECONDITION_FAILED),
        ("*", StatusCode::OK),
        (etag.as_str(), StatusCode::OK),
    ] {
        let res = test::call_service(&app, get("/app.css", &[(header::IF_MATCH, if_match)])).await;
        assert_eq!(res.status(), status, "If-Match: {if_match}");
    }

    let res = test::call_service(
        &app,
        get(
            "/app.css",
            &[
                (header::RANGE, "bytes=0-3"),
                (header::ACCEPT_ENCODING, "gzip"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&res, header::CONTENT_RANGE), "bytes 0-3/4800");
    assert_eq!(
        header(&res, header::CONTENT_ENCODING),
        "",
        "ranges of the plain file"
    );
    assert_eq!(body_text(res).await, "main");

    let res = test::call_service(&app, get("/app.css", &[(header::RANGE, "bytes=-5")])).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_text(res).await, "d; }\n");

    let res = test::call_service(&app, get("/app.css", &[(header::RANGE, "bytes=9000-")])).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&res, header::CONTENT_RANGE), "bytes */4800");

    // A stale If-Range: the whole, current file.
    let res = test::call_service(
        &app,
        get(
            "/app.css",
            &[
                (header::RANGE, "bytes=0-3"),
                (header::IF_RANGE, "\"stale\""),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, full);
}

#[actix_web::test]
async fn directories_answer_their_index_and_paths_are_normalised() {
    let site = Site::new();
    std::fs::create_dir(site.www().join("docs")).unwrap();
    site.write("docs/index.html", "<p>docs</p>");
    let app = app(&site).await;
    for uri in [
        "/docs",
        "/docs/",
        "/docs/index.html",
        "//docs//index.html",
        "/./docs/",
    ] {
        let res = test::call_service(&app, get(uri, &[])).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_eq!(body_text(res).await, "<p>docs</p>", "{uri}");
    }
    let res = test::call_service(&app, get("/%61pp.css", &[])).await;
    assert_eq!(res.status(), StatusCode::OK, "percent-encoded name");
}

#[actix_web::test]
async fn dotfiles_and_links_out_of_www_are_never_served() {
    let site = Site::new();
    site.write(".env", SECRET);
    std::os::unix::fs::symlink(site.root().join("secret.txt"), site.www().join("leak.txt"))
        .unwrap();
    std::os::unix::fs::symlink(site.www().join("index.html"), site.www().join("home.html"))
        .unwrap();
    let app = app(&site).await;
    for uri in ["/.env", "/%2eenv", "/leak.txt"] {
        let res = test::call_service(&app, get(uri, &[])).await;
        let status = res.status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            !body_text(res).await.contains(SECRET),
            "{uri} leaked the secret"
        );
    }
    // A link that stays inside www/ is an ordinary file.
    let res = test::call_service(&app, get("/home.html", &[])).await;
    assert_eq!(body_text(res).await, INDEX_HTML);
}

#[actix_web::test]
async fn files_are_read_once_at_start() {
    let site = Site::new();
    let app = app(&site).await;
    site.write("index.html", "<p>new build</p>");
    site.write("late.css", "p {}");
    let res = test::call_service(&app, get("/", &[])).await;
    assert_eq!(
        body_text(res).await,
        INDEX_HTML,
        "a new www/ needs a restart"
    );
    let res = test::call_service(&app, get("/late.css", &[])).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn other_methods_are_405_with_allow() {
    let site = Site::new();
    let app = app(&site).await;
    for (method, uri) in [
        (Method::POST, "/index.html"),
        (Method::PUT, "/nope"),
        (Method::DELETE, "/healthz"),
        (Method::POST, "/metrics"),
    ] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(uri)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert_eq!(header(&res, header::ALLOW), "GET, HEAD", "{method} {uri}");
        assert_eq!(
            header(&res, header::CACHE_CONTROL),
            "no-store",
            "{method} {uri}"
        );
    }
}
