//! Prometheus metrics and the middleware that counts, times and logs every request.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, Method, StatusCode, Uri};
use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::OriginError;

/// One process's metrics, in a registry of its own (so tests running side by side never clash).
///
/// Cheap to clone: every clone shares the same counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// `requests` resolved by method and status class on first use, so counting a request
    /// takes no label lookup (a hash and a lock) after that.
    counters: Arc<[OnceLock<IntCounter>; METHODS.len() * CLASSES.len()]>,
    /// The latency histogram of this role (its only label).
    latency: Histogram,
    role: &'static str,
    build_id: Arc<str>,
}

/// The method labels, bounded whatever clients send.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
];

/// The status class labels.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("role", &self.role)
            .field("build_id", &self.build_id)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers the request counter, the latency histogram and `origin_build_info`.
    pub fn new(role: &'static str, build_id: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "origin_http_requests_total",
                "HTTP requests answered, by role, method and status class.",
            ),
            &["role", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "origin_http_request_duration_seconds",
                "Time from receiving a request to having its response head, by role.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["role"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "origin_build_info",
                "Always 1; labels say which build runs which role.",
            ),
            &["build", "role"],
        )?;
        build_info.with_label_values(&[build_id, role]).set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Metrics {
            registry,
            requests,
            counters: Arc::new(std::array::from_fn(|_| OnceLock::new())),
            latency: latency.with_label_values(&[role]),
            role,
            build_id: build_id.into(),
        })
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> Result<String, OriginError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|err| OriginError::Metrics(err.to_string()))?;
        String::from_utf8(out).map_err(|err| OriginError::Metrics(err.to_string()))
    }

    /// Middleware that records and logs every request passing through it.
    pub fn observe(&self) -> Observe {
        Observe {
            metrics: self.clone(),
        }
    }

    fn record(&self, method: &Method, path: &str, status: StatusCode, started: Instant) {
        let elapsed = started.elapsed();
        let class = match status.as_u16() / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        };
        let method_index = method_index(method);
        self.counters[method_index * CLASSES.len() + class]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[self.role, METHODS[method_index], CLASSES[class]])
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
        // DEBUG, not INFO: HAProxy's `option httplog` is the access log, so an origin does not
        // pay for a line per request unless someone asks (RUST_LOG=origin=debug).
        tracing::debug!(
            method = %method,
            path,
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            build = &*self.build_id,
            role = self.role,
            "request"
        );
    }
}

/// The method's place in [`METHODS`].
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }
}

/// `GET /metrics`: the process's metrics, never cached.
pub(crate) async fn metrics_endpoint(
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, OriginError> {
    let body = metrics.render()?;
    Ok(HttpResponse::Ok()
        .content_type(TextEncoder::new().format_type())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// Middleware factory returned by [`Metrics::observe`].
#[derive(Debug)]
pub struct Observe {
    metrics: Metrics,
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            metrics: Rc::new(self.metrics.clone()),
        }))
    }
}

/// The service built by [`Observe`].
#[derive(Debug)]
pub struct ObserveService<S> {
    service: S,
    /// Per worker thread: cloning it for each request costs no atomic operation.
    metrics: Rc<Metrics>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        // Shared, not copied: the URI's bytes are reference-counted.
        let (method, uri): (Method, Uri) = (req.method().clone(), req.uri().clone());
        let metrics = Rc::clone(&self.metrics);
        let response = self.service.call(req);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(res) => res.status(),
                Err(err) => err.as_response_error().status_code(),
            };
            metrics.record(&method, uri.path(), status, started);
            result
        })
    }
}
