//! Route tests for every role, run in-process against `App::new().configure(..)`, plus tests
//! of the real `origin` binary (listening, SIGTERM, start-up errors).

mod api_fallback;
mod api_main;
mod binary;
mod fuzz;
mod metrics;
mod static_fallback;
mod static_main;
mod support;
mod www;
