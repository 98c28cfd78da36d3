//! `/metrics` on every role: build info, request counts by status class, latency.

use actix_web::http::{header, StatusCode};
use actix_web::{test, web, App};
use origin::config::{
    ApiFallback, ApiMain, StaticFallback, StaticMain, StatsSocket, DEFAULT_STATS_TIMEOUT,
};
use origin::{Metrics, Role};

use crate::support::{body_text, header, Site};

fn roles(site: &Site) -> Vec<Role> {
    let server = origin::config::ServerArgs {
        listen: "127.0.0.1:0".to_owned(),
        shutdown_timeout: 1,
    };
    let build_id = "build-42".to_owned();
    vec![
        Role::StaticMain {
            server: server.clone(),
            site: StaticMain {
                www: site.www(),
                build_id: build_id.clone(),
            },
        },
        Role::StaticFallback {
            server: server.clone(),
            site: StaticFallback {
                www: site.www(),
                build_id: build_id.clone(),
                retry_after: 5,
            },
        },
        Role::ApiMain {
            server: server.clone(),
            api: ApiMain {
                stats: StatsSocket {
                    path: site.root().join("haproxy.sock"),
                    timeout: DEFAULT_STATS_TIMEOUT,
                    peers: Vec::new(),
                },
                build_id: build_id.clone(),
                health_delay_ms: 0,
            },
        },
        Role::ApiFallback {
            server,
            api: ApiFallback {
                build_id,
                retry_after: 5,
                stats: StatsSocket {
                    path: "/nonexistent/haproxy.sock".into(),
                    timeout: std::time::Duration::from_millis(100),
                    peers: Vec::new(),
                },
                hint: Default::default(),
            },
        },
    ]
}

#[actix_web::test]
async fn every_role_exposes_build_info_and_request_counts() {
    let site = Site::new();
    for role in roles(&site) {
        let name = role.name();
        let metrics = Metrics::new(name, role.build_id()).unwrap();
        let files = web::Data::new(role.load_files().unwrap());
        let app =
            test::init_service(App::new().configure(|cfg| role.configure(cfg, &files, &metrics)))
                .await;
        // One request that is not /metrics, so the counter has a sample.
        let _ = test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;

        let res =
            test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{name}");
        assert!(
            header(&res, header::CONTENT_TYPE).starts_with("text/plain"),
            "{name}"
        );
        let text = body_text(res).await;
        let build_info = format!("origin_build_info{{build=\"build-42\",role=\"{name}\"}} 1");
        assert!(
            text.contains(&build_info),
            "{name}: no {build_info} in\n{text}"
        );
        let class = if name.ends_with("fallback") {
            "5xx"
        } else {
            "4xx"
        };
        let counter = format!(
            "origin_http_requests_total{{method=\"GET\",role=\"{name}\",status=\"{class}\"}} 1"
        );
        assert!(text.contains(&counter), "{name}: no {counter} in\n{text}");
        assert!(
            text.contains(&format!(
                "origin_http_request_duration_seconds_count{{role=\"{name}\"}} 1"
            )),
            "{name}: no latency sample in\n{text}"
        );
    }
}
