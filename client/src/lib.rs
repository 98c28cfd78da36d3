//! The maintenance page's recovery client: Rust compiled to WebAssembly with wasm-pack.
//!
//! HAProxy answers every page URL with the maintenance page while a tier is down. This
//! client probes both tiers until they are healthy again and then brings the tab back to
//! where the user was. [`recovery`] holds the rules as a pure state machine, [`loop_guard`] the
//! reload-loop guard, [`target`] the return-URL sanitising, and `web` (wasm32 only) the browser glue.

extern crate alloc;

pub mod loop_guard;
pub mod recovery;
pub mod target;
#[cfg(target_arch = "wasm32")]
pub mod web;

/// Entry point run by wasm-bindgen when the module is instantiated (`init()` in the page).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() -> Result<(), wasm_bindgen::JsValue> {
    web::run()
}
