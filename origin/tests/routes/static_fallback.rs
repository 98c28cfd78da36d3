//! `static-fallback`: the maintenance page at every URL, its own assets served normally.

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, web, App, Error};
use origin::config::StaticFallback;
use origin::{configure_static_fallback, Metrics, Www};
use serde_json::{json, Value};

use crate::support::{body_text, header, Site, MAINTENANCE_HTML, SECRET};

pub(crate) async fn app(
    site: &Site,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    let settings = StaticFallback {
        www: site.www(),
        build_id: "build-42".to_owned(),
        retry_after: 7,
    };
    let metrics = Metrics::new("static-fallback", "build-42").unwrap();
    let files = web::Data::new(Www::load(&settings.www).unwrap());
    test::init_service(
        App::new().configure(|cfg| configure_static_fallback(cfg, &settings, &files, &metrics)),
    )
    .await
}

#[actix_web::test]
async fn healthz_is_503_maintenance() {
    let site = Site::new();
    let app = app(&site).await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    assert_eq!(header(&res, header::RETRY_AFTER), "7");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        json!({"status": "maintenance", "tier": "static", "build": "build-42"})
    );
}

#[actix_web::test]
async fn livez_is_200_for_haproxys_liveness_check() {
    let site = Site::new();
    let app = app(&site).await;
    for method in [Method::GET, Method::HEAD] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(contract::LIVENESS_PATH)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{method}");
        if method == Method::GET {
            let body: Value = test::read_body_json(res).await;
            assert_eq!(body, json!({"status": "alive"}));
        }
    }
}

#[actix_web::test]
async fn every_other_url_is_the_maintenance_page() {
    let site = Site::new();
    let app = app(&site).await;
    for (method, uri) in [
        (Method::GET, "/"),
        (Method::GET, "/index.html"),
        (Method::GET, "/some/deep/page?x=1"),
        (Method::POST, "/form"),
        (Method::GET, "/app.css"),
    ] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(uri)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{uri}"
        );
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{uri}");
        assert_eq!(header(&res, header::RETRY_AFTER), "7", "{uri}");
        assert_eq!(body_text(res).await, MAINTENANCE_HTML, "{uri}");
    }
}

#[actix_web::test]
async fn the_page_is_read_per_request() {
    let site = Site::new();
    let app = app(&site).await;
    site.write("maintenance.html", "<p>new build</p>");
    let res = test::call_service(&app, test::TestRequest::get().uri("/x").to_request()).await;
    assert_eq!(body_text(res).await, "<p>new build</p>");
}

#[actix_web::test]
async fn the_page_s_own_assets_are_served_but_never_cached() {
    let site = Site::new();
    let app = app(&site).await;
    for (uri, content_type) in [
        ("/maintenance.html", "text/html"),
        ("/pkg/client.js", "text/javascript"),
        ("/pkg/client_bg.wasm", "application/wasm"),
    ] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert!(
            header(&res, header::CONTENT_TYPE).starts_with(content_type),
            "{uri}"
        );
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{uri}");
    }
    let res = test::call_service(
        &app,
        test::TestRequest::get().uri("/pkg/nope.js").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn a_missing_page_is_replaced_by_a_built_in_one() {
    let site = Site::without_maintenance_page();
    let app = app(&site).await;
    for uri in ["/", "/maintenance.html"] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
        assert!(body_text(res).await.contains("under maintenance"), "{uri}");
    }
}

#[actix_web::test]
async fn traversal_never_escapes_www() {
    let site = Site::new();
    let app = app(&site).await;
    for uri in [
        "/pkg/../../secret.txt",
        "/pkg/%2e%2e/%2e%2e/secret.txt",
        "/pkg/..%5c..%5csecret.txt",
    ] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status();
        assert!(status.is_client_error(), "{uri}: {status}");
        assert!(
            !body_text(res).await.contains(SECRET),
            "{uri} leaked the secret"
        );
    }
}

/// A file has the same validators whichever server of the tier sends it, so a browser's
/// cached copy from one revalidates against the other.
#[actix_web::test]
async fn assets_have_the_same_validators_as_from_static_main() {
    let site = Site::new();
    let fallback = app(&site).await;
    let main = crate::static_main::app(&site).await;
    for uri in ["/maintenance.html", "/pkg/client.js", "/pkg/client_bg.wasm"] {
        let get = || test::TestRequest::get().uri(uri).to_request();
        let from_fallback = test::call_service(&fallback, get()).await;
        let from_main = test::call_service(&main, get()).await;
        for name in [header::ETAG, header::LAST_MODIFIED] {
            assert!(from_main.headers().contains_key(&name), "{uri}: {name}");
            assert_eq!(
                header(&from_fallback, name.clone()),
                header(&from_main, name.clone()),
                "{uri}: {name}"
            );
        }
        // And a conditional request with static-main's tag is answered 304 by the fallback.
        let etag = header(&from_main, header::ETAG);
        let revalidate = test::TestRequest::get()
            .uri(uri)
            .insert_header((header::IF_NONE_MATCH, etag))
            .to_request();
        let res = test::call_service(&fallback, revalidate).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{uri}");
    }
}
