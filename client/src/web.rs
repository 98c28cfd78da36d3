//! Browser glue: feeds the page's events to the [`RecoveryMachine`] and carries out its
//! actions with `fetch`, timers and the DOM.
//!
//! The page lives until it navigates, so the event listeners and the countdown ticker are
//! deliberately leaked (`forget`). The one wake-up the machine asks for is a gloo-timers
//! [`Timeout`], which the next [`Action::Wait`] replaces (dropping it cancels it). The
//! recovery hint is one `fetch` under an `AbortController`, aborted by [`Action::CancelHint`]
//! or by its own `Timeout`.

use alloc::borrow::ToOwned;
use alloc::rc::Rc;
use alloc::string::String;
use core::cell::RefCell;
use core::future::Future;

use gloo_timers::callback::Timeout;
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{
    AbortController, AbortSignal, Document, EventTarget, RequestCache, RequestInit,
    RequestRedirect, Response,
};

use crate::loop_guard::{GuardConfig, Trips, TRIPS_ATTRIBUTE};
use crate::recovery::{
    clock_text, Action, Config, Event, HealthReport, HintAnswer, Outcome, RecoveryMachine, Status,
};
use crate::target::return_target;

/// The static tier's health endpoint.
pub const STATIC_HEALTH: &str = contract::Tier::Static.health_path();
/// The API tier's health endpoint.
pub const API_HEALTH: &str = contract::Tier::Api.health_path();

struct App {
    document: Document,
    machine: RefCell<RecoveryMachine>,
    timer: RefCell<Option<Timeout>>,
    /// The recovery hint in flight: its id, abort handle and own timeout.
    hint: RefCell<Option<(u32, AbortController, Timeout)>>,
    /// The loop guard's record of this tab, updated when the client takes the tab back.
    trips: core::cell::Cell<Trips>,
}

/// Starts the client on the maintenance page. A page without `#status` is not the
/// maintenance page (for example the test runner's page), and the client then stays idle.
pub fn run() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window: the client runs only in a page")?;
    let document = window.document().ok_or("no document")?;
    if document.get_element_by_id("status").is_none() {
        return Ok(());
    }
    let body = document.body().ok_or("no body")?;
    let attr = |name: &str| body.get_attribute(name);
    let config = Config::from_attributes(attr);
    let mut machine = RecoveryMachine::new(config, page_target()?);
    let guard = GuardConfig::default();

    let mut trips = Trips::decode(attr(TRIPS_ATTRIBUTE).as_deref());
    if trips.maintenance_loaded(now(), &guard) {
        machine.hold_healthy_for(guard.hold_ms);
        // The page's style shows #unstable then.
        let _ = body.set_attribute("data-unstable", "true");
    }
    save_trips(&document, &trips);
    let app = Rc::new(App {
        machine: RefCell::new(machine),
        timer: RefCell::new(None),
        hint: RefCell::new(None),
        trips: core::cell::Cell::new(trips),
        document: document.clone(),
    });

    listen(&document, "visibilitychange", &app, |app| {
        Event::VisibilityChanged {
            now_ms: now(),
            hidden: app.document.hidden(),
        }
    })?;
    listen(&window, "online", &app, |_| Event::Online { now_ms: now() })?;
    if let Some(button) = document.get_element_by_id("check-now") {
        listen(&button, "click", &app, |_| Event::CheckNow {
            now_ms: now(),
        })?;
    }

    let ticker = app.clone();
    let countdown = Closure::<dyn FnMut()>::new(move || {
        let status = ticker.machine.borrow().status();
        render(&ticker.document, &status, now());
    });
    window.set_interval_with_callback_and_timeout_and_arguments_0(
        countdown.as_ref().unchecked_ref(),
        1000,
    )?;
    countdown.forget();

    dispatch(
        &app,
        Event::Start {
            now_ms: now(),
            hidden: document.hidden(),
        },
    );
    Ok(())
}

/// The sanitised path to return to, from this page's `location`.
pub fn page_target() -> Result<String, JsValue> {
    let location = web_sys::window().ok_or("no window")?.location();
    Ok(return_target(
        &location.origin()?,
        &location.pathname()?,
        &location.search()?,
    ))
}

fn listen(
    target: &EventTarget,
    name: &str,
    app: &Rc<App>,
    event: fn(&App) -> Event,
) -> Result<(), JsValue> {
    let callback = handler(app, event);
    target.add_event_listener_with_callback(name, callback.as_ref().unchecked_ref())?;
    callback.forget();
    Ok(())
}

/// A JS callback that feeds `event(app)` to the machine. (Every callback that dispatches is
/// this one closure type, so the Wasm carries its glue once.)
fn handler(app: &Rc<App>, event: fn(&App) -> Event) -> Closure<dyn FnMut()> {
    let app = app.clone();
    Closure::new(move || dispatch(&app, event(&app)))
}

fn dispatch(app: &Rc<App>, event: Event) {
    let actions = app
        .machine
        .borrow_mut()
        .handle(event, js_sys::Math::random());
    for action in actions {
        match action {
            Action::Probe { timeout_ms } => {
                let app = app.clone();
                // Both requests are in flight before either is awaited.
                let static_probe = probe(STATIC_HEALTH, timeout_ms);
                let api_probe = probe(API_HEALTH, timeout_ms);
                spawn_local(async move {
                    let static_tier = static_probe.await;
                    let api_tier = api_probe.await;
                    dispatch(
                        &app,
                        Event::ProbeDone {
                            now_ms: now(),
                            static_tier,
                            api_tier,
                        },
                    );
                });
            }
            Action::Wait(ms) => {
                // Replacing the handle cancels the previous wait. When this runs inside that
                // timer's own callback, gloo-timers frees it once the callback returns.
                let app_ = app.clone();
                let timer =
                    Timeout::new(ms, move || dispatch(&app_, Event::Tick { now_ms: now() }));
                *app.timer.borrow_mut() = Some(timer);
            }
            Action::Hint { id, timeout_ms } => start_hint(app, id, timeout_ms),
            Action::CancelHint => {
                if let Some((_, controller, _timeout)) = app.hint.borrow_mut().take() {
                    controller.abort();
                }
            }
            Action::Navigate(url) => {
                app.timer.borrow_mut().take();
                let mut trips = app.trips.get();
                trips.returning(now());
                save_trips(&app.document, &trips);
                if let Some(window) = web_sys::window() {
                    // `replace`: the maintenance page stays out of the history.
                    let _ = window.location().replace(&url);
                }
            }
            Action::Show(status) => render(&app.document, &status, now()),
        }
    }
}

/// Hands the tab's loop-guard record to the page, whose inline script keeps it in
/// `sessionStorage` (on `pagehide`). Storage access stays in JavaScript: web-sys's `Storage`
/// glue alone cost more Wasm than HAProxy's buffer had left.
fn save_trips(document: &Document, trips: &Trips) {
    if let Some(body) = document.body() {
        let _ = body.set_attribute(TRIPS_ATTRIBUTE, &trips.encode());
    }
}

/// Starts the recovery hint: `GET` [`contract::RECOVERY_HINT_PATH`] like a probe, under an
/// `AbortController` that [`Action::CancelHint`] or the hint's own `timeout_ms` aborts.
fn start_hint(app: &Rc<App>, id: u32, timeout_ms: u32) {
    let Ok(controller) = AbortController::new() else {
        return dispatch(app, hint_done(id, HintAnswer::Failed));
    };
    let request = fetch(contract::RECOVERY_HINT_PATH, &controller.signal());
    let abort = controller.clone();
    let timeout = Timeout::new(timeout_ms, move || abort.abort());
    *app.hint.borrow_mut() = Some((id, controller, timeout));
    let app = app.clone();
    spawn_local(async move {
        let answer = hint_answer(request).await.unwrap_or(HintAnswer::Failed);
        // A cancelled hint ends after a newer one started: leave the newer one's handles.
        let mut slot = app.hint.borrow_mut();
        if slot.as_ref().is_some_and(|(current, _, _)| *current == id) {
            slot.take();
        }
        drop(slot);
        dispatch(&app, hint_done(id, answer));
    });
}

fn hint_done(id: u32, answer: HintAnswer) -> Event {
    Event::HintDone {
        now_ms: now(),
        id,
        answer,
    }
}

async fn hint_answer(request: Result<Promise, JsValue>) -> Result<HintAnswer, JsValue> {
    let response: Response = JsFuture::from(request?).await?.dyn_into()?;
    let body = match response.status() {
        200 => JsFuture::from(response.text()?).await?.as_string(),
        _ => None,
    };
    Ok(HintAnswer::from_answer(response.status(), body.as_deref()))
}

/// Probes `url` once: `GET`, `cache: "no-store"`, `redirect: "manual"`, aborted after
/// `timeout_ms` (`AbortSignal.timeout`: the platform's AbortController-plus-timer).
///
/// The request starts at once, before the returned future is polled: two probes created
/// one after the other run in parallel even when awaited one after the other.
pub fn probe(url: &str, timeout_ms: u32) -> impl Future<Output = HealthReport> {
    probe_with(url, AbortSignal::timeout_with_u32(timeout_ms))
}

/// [`probe`] under `signal`: an abort (the timeout) gives [`Outcome::Timeout`], any other
/// failure [`Outcome::NetworkError`].
pub fn probe_with(url: &str, signal: AbortSignal) -> impl Future<Output = HealthReport> {
    let request = fetch(url, &signal);
    async move {
        match report(request).await {
            Ok(report) => report,
            Err(_) if signal.aborted() => HealthReport::new(Outcome::Timeout),
            Err(_) => HealthReport::new(Outcome::NetworkError),
        }
    }
}

fn fetch(url: &str, signal: &AbortSignal) -> Result<Promise, JsValue> {
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_cache(RequestCache::NoStore);
    // A redirect is not health: it surfaces as an `opaqueredirect` with status 0.
    init.set_redirect(RequestRedirect::Manual);
    init.set_signal(Some(signal));
    let window = web_sys::window().ok_or("no window")?;
    Ok(window.fetch_with_str_and_init(url, &init))
}

async fn report(request: Result<Promise, JsValue>) -> Result<HealthReport, JsValue> {
    let response: Response = JsFuture::from(request?).await?.dyn_into()?;
    let body = match classify(&response) {
        Outcome::Healthy => JsFuture::from(response.text()?).await?.as_string(),
        _ => None,
    };
    Ok(HealthReport::from_answer(
        response.status(),
        body.as_deref(),
    ))
}

/// Classifies an answer by its status alone (an opaque redirect has status 0).
pub fn classify(response: &Response) -> Outcome {
    Outcome::from_status(response.status())
}

/// Shows `status` in `document`: `<body data-state>`, `#status` (written only when the
/// sentence changes, so the polite live region announces changes only), `#since`,
/// `#last-check`, `#next-check`, and whether `#check-now` is enabled.
pub fn render(document: &Document, status: &Status, now_ms: u64) {
    if let Some(body) = document.body() {
        let _ = body.set_attribute("data-state", status.state.as_str());
    }
    set_text(document, "status", status.state.sentence());
    set_text(document, "since", &local_clock(status.since_ms));
    let last_check = status
        .last_check_ms
        .map_or_else(|| "not yet".to_owned(), local_clock);
    set_text(document, "last-check", &last_check);
    set_text(document, "next-check", &status.next_check_text(now_ms));
    if let Some(button) = document.get_element_by_id("check-now") {
        let _ = if status.can_check_now() {
            button.remove_attribute("disabled")
        } else {
            button.set_attribute("disabled", "")
        };
    }
}

/// Sets the text of element `id`, unless it already reads `text`.
fn set_text(document: &Document, id: &str, text: &str) {
    if let Some(element) = document.get_element_by_id(id) {
        if element.text_content().as_deref() != Some(text) {
            element.set_text_content(Some(text));
        }
    }
}

/// `HH:MM:SS` in the browser's time zone.
fn local_clock(ms: u64) -> String {
    let offset_min = js_sys::Date::new(&JsValue::from_f64(ms as f64)).get_timezone_offset();
    clock_text(ms as i64 - (offset_min * 60_000.0) as i64)
}

fn now() -> u64 {
    js_sys::Date::now() as u64
}
