//! `static-main`: files, caching headers, compression, health and path safety.

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, App, Error};
use origin::config::StaticMain;
use origin::{configure_static_main, Metrics};
use serde_json::{json, Value};

use crate::support::{body_text, header, Site, INDEX_HTML, SECRET};

async fn app(
    site: &Site,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    let settings = StaticMain {
        www: site.www(),
        build_id: "build-42".to_owned(),
    };
    let metrics = Metrics::new("static-main", "build-42").unwrap();
    test::init_service(App::new().configure(|cfg| configure_static_main(cfg, &settings, &metrics)))
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
