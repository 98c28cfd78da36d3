//! Loading `www/` into memory: what is kept, what is left out, and the start-up errors.

use std::fs;
use std::io::Write;

use actix_web::http::{header, StatusCode};
use actix_web::test as actix_test;
use actix_web::{web, App};
use flate2::write::GzEncoder;
use flate2::Compression;
use origin::config::StaticMain;
use origin::www::MAX_TOTAL_BYTES;
use origin::{configure_static_main, Metrics, Www, WwwError};

use crate::support::{header, Site};

#[test]
fn counts_the_files_and_bytes_it_loads() {
    let site = Site::new();
    let www = Www::load(&site.www()).unwrap();
    let on_disk: u64 = [
        "index.html",
        "maintenance.html",
        "app.css",
        "pkg/client.js",
        "pkg/client_bg.wasm",
    ]
    .iter()
    .map(|name| fs::metadata(site.www().join(name)).unwrap().len())
    .sum();
    assert_eq!(www.file_count(), 5);
    assert_eq!(www.total_bytes(), on_disk);
    // app.css and client.js shrink; the tiny pages and the 8-byte wasm do not.
    assert_eq!(www.gzip_count(), 2);
}

#[test]
fn too_many_bytes_is_a_clear_error() {
    let site = Site::new();
    let err = Www::load_with_limit(&site.www(), 1000).unwrap_err();
    assert!(matches!(err, WwwError::TooLarge { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("add up to more than 1000 bytes")
            && message.contains("keeps every file in memory"),
        "{message}"
    );
    assert_eq!(MAX_TOTAL_BYTES, 64 * 1024 * 1024);
}

#[test]
fn a_missing_or_wrong_directory_is_a_clear_error() {
    let site = Site::new();
    let missing = site.root().join("no-www");
    let message = Www::load(&missing).unwrap_err().to_string();
    assert!(
        message.contains("does not exist") && message.contains(&*missing.to_string_lossy()),
        "{message}"
    );
    let file = site.root().join("secret.txt");
    let message = Www::load(&file).unwrap_err().to_string();
    assert!(message.contains("is not a directory"), "{message}");
}

#[actix_web::test]
async fn a_gz_file_beside_its_source_is_sent_as_is() {
    let site = Site::new();
    let js = fs::read(site.www().join("pkg/client.js")).unwrap();
    // A gzip stream of the same bytes that a fresh compression would not reproduce: it carries
    // a file name in its header.
    let mut encoder = flate2::GzBuilder::new()
        .filename("client.js")
        .write(Vec::new(), Compression::fast());
    encoder.write_all(&js).unwrap();
    let shipped = encoder.finish().unwrap();
    fs::write(site.www().join("pkg/client.js.gz"), &shipped).unwrap();
    // A stale one is not trusted.
    let mut stale = GzEncoder::new(Vec::new(), Compression::best());
    stale.write_all(b"old contents").unwrap();
    fs::write(site.www().join("app.css.gz"), stale.finish().unwrap()).unwrap();

    let settings = StaticMain {
        www: site.www(),
        build_id: "build-42".to_owned(),
    };
    let metrics = Metrics::new("static-main", "build-42").unwrap();
    let www = web::Data::new(Www::load(&settings.www).unwrap());
    let app = actix_test::init_service(
        App::new().configure(|cfg| configure_static_main(cfg, &settings, &www, &metrics)),
    )
    .await;
    let gzip = |uri: &str| {
        actix_test::TestRequest::get()
            .uri(uri)
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request()
    };

    let res = actix_test::call_service(&app, gzip("/pkg/client.js")).await;
    assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip");
    assert_eq!(actix_test::read_body(res).await, shipped);

    let res = actix_test::call_service(&app, gzip("/app.css")).await;
    assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&actix_test::read_body(res).await[..]),
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, fs::read(site.www().join("app.css")).unwrap());

    // The .gz file itself is still a file of the site.
    let res = actix_test::call_service(
        &app,
        actix_test::TestRequest::get()
            .uri("/pkg/client.js.gz")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CONTENT_TYPE), "application/gzip");
}
