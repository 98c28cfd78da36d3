//! A browser tab under W3C WebDriver, in any of three [`Engine`]s (Chromium, Firefox, WebKit),
//! for the end-to-end browser scenarios.
//!
//! [`Browser::start`] starts the engine's own WebDriver server (chromedriver, geckodriver or
//! WebKitWebDriver) on a free loopback port, as a [`ServerProcess`] leading a process group of
//! its own, and opens one session (one tab) on a fresh profile. WebKit's MiniBrowser needs a
//! display: it gets an Xvfb of its own. Its methods block: each runs one WebDriver command on
//! the guard's private Tokio runtime, bounded by a deadline, so a test reads like a script and
//! a wedged browser fails the test instead of hanging it.
//!
//! Dropping the guard closes the session, kills the driver's whole process group (the browser
//! and its helpers live there), then any process still naming the test's private directory
//! (Chromium's crash handler leaves the group), then Xvfb, so no browser outlives a test,
//! whether it passed or panicked.
//!
//! ```no_run
//! use std::time::Duration;
//! use driver::browser::{Browser, Engine};
//!
//! let tab = Browser::start(Engine::Firefox);
//! tab.goto("http://127.0.0.1:8080/");
//! let page = tab.wait_for(
//!     Duration::from_secs(30),
//!     "the dashboard is shown",
//!     |tab| {
//!         let page = tab.try_page()?;
//!         if page.data("page") == Some("dashboard") { Ok(page) } else { Err(page.url) }
//!     },
//!     String::new,
//! );
//! println!("{}", page.describe());
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::runtime::Runtime;

use crate::http::Request;
use crate::paths::free_port;
use crate::process::{ProcessSpec, Readiness, ServerProcess};

/// Environment variable naming the chromedriver binary (as for `wasm-bindgen-test-runner`).
pub const CHROMEDRIVER_ENV: &str = "CHROMEDRIVER";

/// Environment variable naming the Chromium binary.
pub const CHROMIUM_ENV: &str = "CHROMIUM";

/// Environment variable naming the geckodriver binary (as for `wasm-bindgen-test-runner`).
pub const GECKODRIVER_ENV: &str = "GECKODRIVER";

/// Environment variable naming the Firefox binary.
pub const FIREFOX_ENV: &str = "FIREFOX";

/// Environment variable naming the WebKitWebDriver binary.
pub const WEBKIT_DRIVER_ENV: &str = "WEBKIT_WEBDRIVER";

/// Environment variable naming WebKitGTK's MiniBrowser.
pub const MINIBROWSER_ENV: &str = "MINIBROWSER";

const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_FIREFOX: &str = "/usr/bin/firefox-esr";
const DEFAULT_WEBKIT_DRIVER: &str = "/usr/bin/WebKitWebDriver";
const XVFB_PROGRAM: &str = "Xvfb";

/// Xvfb's screen: room for the [`WINDOW`] and MiniBrowser's toolbar.
const XVFB_SCREEN: &str = "1280x1024x24";

/// Every engine's window, so screenshots compare.
const WINDOW: (u32, u32) = (1280, 900);

/// Firefox preferences: no telemetry, studies, captive-portal or connectivity checks, which
/// open connections this closed network refuses (geckodriver turns off updates itself).
fn firefox_prefs() -> Value {
    json!({
        "app.normandy.enabled": false,
        "browser.safebrowsing.downloads.remote.enabled": false,
        "browser.safebrowsing.malware.enabled": false,
        "browser.safebrowsing.phishing.enabled": false,
        "datareporting.healthreport.uploadEnabled": false,
        "datareporting.policy.dataSubmissionEnabled": false,
        "network.captive-portal-service.enabled": false,
        "network.connectivity-service.enabled": false,
        "toolkit.telemetry.enabled": false,
    })
}

/// How often [`Browser::wait_for`] looks at its condition.
pub const BROWSER_POLL: Duration = Duration::from_millis(100);

/// How long a WebDriver server may take to answer `/status`, and its browser to open a
/// session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest any single WebDriver command may take (a page load is bounded at 30 s by the
/// session's own `pageLoad` timeout, well inside this).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing the session may take before the process group is killed anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Chromium flags known to work on these machines (see TOOLCHAIN.md). Background networking,
/// component updates and sync are off because they open connections this closed network
/// refuses; `--user-data-dir` is added per browser, so every test starts from a fresh profile.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// What a tab shows, read in one script so the fields agree with each other.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct PageState {
    /// `location.href`.
    pub url: String,
    /// `location.origin` (`"null"` on Chromium's error pages).
    pub origin: String,
    /// `location.pathname`.
    pub path: String,
    /// `location.search`, with its `?`.
    pub search: String,
    /// `document.readyState`.
    pub ready: String,
    /// `document.body.dataset` (keys in camelCase, as JavaScript spells them).
    pub dataset: BTreeMap<String, String>,
    /// Every `sessionStorage` entry of the tab.
    pub session: BTreeMap<String, String>,
    /// The start of `document.body.innerText`.
    pub text: String,
}

/// Reads a [`PageState`]; tolerant of a document without a body (mid-navigation).
const PAGE_STATE_JS: &str = r#"
const body = document.body;
const dataset = {};
if (body) for (const key of Object.keys(body.dataset)) dataset[key] = String(body.dataset[key]);
const session = {};
try {
  for (let i = 0; i < sessionStorage.length; i++) {
    const key = sessionStorage.key(i);
    session[key] = String(sessionStorage.getItem(key));
  }
} catch (e) {}
return {
  url: location.href, origin: location.origin, path: location.pathname, search: location.search,
  ready: document.readyState, dataset, session,
  text: body ? body.innerText.slice(0, 3000) : "",
};
"#;

impl PageState {
    /// The body's `data-<key>` attribute, `key` in camelCase (`data-interval-ms` is `intervalMs`).
    pub fn data(&self, key: &str) -> Option<&str> {
        self.dataset.get(key).map(String::as_str)
    }

    /// A `sessionStorage` entry.
    pub fn stored(&self, key: &str) -> Option<&str> {
        self.session.get(key).map(String::as_str)
    }

    /// Several lines for a failure message: URL, readiness, dataset, storage and page text.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "url: {} ({})", self.url, self.ready);
        let _ = writeln!(text, "body dataset: {:?}", self.dataset);
        let _ = writeln!(text, "sessionStorage: {:?}", self.session);
        let excerpt: String = self.text.chars().take(1500).collect();
        let _ = write!(text, "page text:\n{excerpt}");
        text
    }
}

/// A browser engine the suites drive, each through its own W3C WebDriver server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Engine {
    /// Debian's Chromium, through chromedriver (package chromium-driver).
    Chromium,
    /// Debian's Firefox ESR, headless, through geckodriver (from crates.io).
    Firefox,
    /// WebKitGTK's MiniBrowser (Safari's engine) under Xvfb, through WebKitWebDriver
    /// (package webkit2gtk-driver).
    WebKit,
}

impl Engine {
    /// Every engine, in the order the suites run them.
    pub const ALL: [Engine; 3] = [Engine::Chromium, Engine::Firefox, Engine::WebKit];

    /// Lower-case name, as in test names and `target/screenshots/<name>/`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
            Engine::WebKit => "webkit",
        }
    }

    /// The WebDriver server's name, for messages.
    pub fn driver_name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromedriver",
            Engine::Firefox => "geckodriver",
            Engine::WebKit => "WebKitWebDriver",
        }
    }

    /// The WebDriver server: `$<env>` when set, else the default path.
    fn driver_program(self) -> PathBuf {
        let (env, default) = match self {
            Engine::Chromium => (CHROMEDRIVER_ENV, PathBuf::from(DEFAULT_CHROMEDRIVER)),
            Engine::Firefox => (GECKODRIVER_ENV, default_geckodriver()),
            Engine::WebKit => (WEBKIT_DRIVER_ENV, PathBuf::from(DEFAULT_WEBKIT_DRIVER)),
        };
        env_path(env).unwrap_or(default)
    }

    /// The browser binary: `$<env>` when set, else the default path.
    fn browser_program(self) -> PathBuf {
        let (env, default) = match self {
            Engine::Chromium => (CHROMIUM_ENV, PathBuf::from(DEFAULT_CHROMIUM)),
            Engine::Firefox => (FIREFOX_ENV, PathBuf::from(DEFAULT_FIREFOX)),
            Engine::WebKit => (MINIBROWSER_ENV, default_minibrowser()),
        };
        env_path(env).unwrap_or(default)
    }

    /// What to install when a binary is missing.
    fn install_hint(self) -> &'static str {
        match self {
            Engine::Chromium => {
                "`apt-get install --no-install-recommends chromium chromium-driver`"
            }
            Engine::Firefox => {
                "`apt-get install --no-install-recommends firefox-esr` and `cargo install \
                 geckodriver --version 0.37.1 --locked`"
            }
            Engine::WebKit => "`apt-get install --no-install-recommends webkit2gtk-driver xvfb`",
        }
    }

    /// The driver's command line, listening on `port`; `dir` is the test's private directory.
    fn driver_spec(self, port: u16, dir: &Path, display: Option<&str>) -> ProcessSpec {
        let spec = ProcessSpec::new(self.driver_name(), self.driver_program())
            .readiness(Readiness::Accepts(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port,
            ))))
            // A group of its own, so one signal reaches every browser process it starts.
            .own_process_group();
        match self {
            Engine::Chromium => spec.arg(format!("--port={port}")),
            Engine::Firefox => spec
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                // BiDi's default port (9222) would collide between parallel runs; the profile
                // goes to the private directory so it is removed with it.
                .args(["--websocket-port", &free_port().to_string()])
                .arg("--profile-root")
                .arg(dir),
            Engine::WebKit => spec
                .arg(format!("--port={port}"))
                .env("DISPLAY", display.expect("WebKit runs under Xvfb"))
                // MiniBrowser's caches and data stay in the private directory.
                .env("XDG_CACHE_HOME", dir.join("cache"))
                .env("XDG_DATA_HOME", dir.join("data")),
        }
    }

    /// The session's capabilities: the engine's binary and options, and the page timeouts.
    fn capabilities(self, dir: &Path) -> Capabilities {
        let binary = self.browser_program();
        let mut capabilities = Capabilities::new();
        match self {
            Engine::Chromium => {
                let mut args: Vec<String> =
                    CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
                args.push(format!("--user-data-dir={}", dir.join("profile").display()));
                capabilities.insert("browserName".to_owned(), json!("chrome"));
                capabilities.insert(
                    "goog:chromeOptions".to_owned(),
                    json!({ "binary": binary, "args": args }),
                );
            }
            Engine::Firefox => {
                capabilities.insert("browserName".to_owned(), json!("firefox"));
                capabilities.insert(
                    "moz:firefoxOptions".to_owned(),
                    json!({ "binary": binary, "args": ["-headless"], "prefs": firefox_prefs() }),
                );
            }
            Engine::WebKit => {
                capabilities.insert("browserName".to_owned(), json!("MiniBrowser"));
                capabilities.insert(
                    "webkitgtk:browserOptions".to_owned(),
                    json!({ "binary": binary, "args": ["--automation"] }),
                );
            }
        }
        capabilities.insert(
            "timeouts".to_owned(),
            json!({ "pageLoad": 30_000, "script": 10_000 }),
        );
        capabilities
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// `geckodriver` on `PATH`, else where `cargo install` puts it.
fn default_geckodriver() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("geckodriver"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        env_path("CARGO_HOME")
            .or_else(|| env_path("HOME").map(|home| home.join(".cargo")))
            .unwrap_or_default()
            .join("bin/geckodriver")
    })
}

/// Where Debian's libwebkit2gtk-4.1-0 puts MiniBrowser
/// (`dpkg -L libwebkit2gtk-4.1-0 | grep MiniBrowser`).
fn default_minibrowser() -> PathBuf {
    PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/webkit2gtk-4.1/MiniBrowser",
        std::env::consts::ARCH
    ))
}

/// Starts `engine`'s WebDriver server on a free port (retrying on another port if that one
/// was taken in the meantime) and waits until its `/status` says it is ready.
fn start_driver(engine: Engine, dir: &Path, display: Option<&str>) -> ServerProcess {
    for program in [engine.driver_program(), engine.browser_program()] {
        assert!(
            program.is_file(),
            "{} needs {}, which is not installed; run `cargo xtask install` (or {}), or \
             point the environment variable at the binary",
            engine,
            program.display(),
            engine.install_hint()
        );
    }
    let mut attempt = 0;
    let driver = loop {
        attempt += 1;
        match ServerProcess::try_spawn(engine.driver_spec(free_port(), dir, display)) {
            Ok(driver) => break driver,
            // Most likely the port was taken between free_port() and the bind.
            Err(failed) if attempt < 3 => eprintln!("{}, retrying on another port", failed.1),
            Err(failed) => panic!("{} did not start: {}", engine.driver_name(), failed.1),
        }
    };
    let status = format!("{}/status", driver_url(&driver));
    crate::wait_until(
        START_TIMEOUT,
        &format!("{} says it is ready", engine.driver_name()),
        || match Request::get(&status).timeout(Duration::from_secs(1)).send() {
            Ok(response) if response.status == 200 => {
                let ready = serde_json::from_slice::<Value>(&response.body)
                    .is_ok_and(|status| status["value"]["ready"] == json!(true));
                if ready {
                    Ok(())
                } else {
                    Err(response.summary())
                }
            }
            Ok(response) => Err(response.summary()),
            Err(error) => Err(error.to_string()),
        },
        || driver.log_tail(40),
    );
    driver
}

fn driver_url(driver: &ServerProcess) -> String {
    format!("http://{}", driver.addr())
}

/// Starts Xvfb on a display it picks itself (`-displayfd`: it prints the number once it
/// accepts clients), for WebKit, which needs a display. The guard ends it.
fn start_xvfb() -> (ServerProcess, String) {
    let xvfb = ServerProcess::spawn(
        ProcessSpec::new("xvfb", XVFB_PROGRAM)
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0"])
            .arg(XVFB_SCREEN),
    );
    let number = crate::wait_until(
        START_TIMEOUT,
        "Xvfb prints the display it opened",
        || {
            // The process guard keeps standard output as `[stdout] <line>`.
            xvfb.log_tail(20)
                .lines()
                .filter_map(|line| line.strip_prefix("[stdout] "))
                .find(|line| !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
                .ok_or_else(|| xvfb.log_tail(20))
        },
        || xvfb.log_tail(40),
    );
    (xvfb, format!(":{number}"))
}

/// Kills, when dropped, any process still naming the test's private directory: Chromium's
/// crash handler puts itself in a session of its own, out of the driver group's reach.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        // Best effort: whatever is left after 5 s is reported by nobody (this runs in drop).
        let _ = crate::poll_until(
            Duration::from_secs(5),
            "no process names the directory",
            || {
                let stragglers = processes_naming(&self.0);
                for &pid in &stragglers {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                if stragglers.is_empty() {
                    Ok(())
                } else {
                    Err(stragglers)
                }
            },
        );
    }
}

/// Live processes whose command line contains `dir` (zombies have an empty command line).
fn processes_naming(dir: &Path) -> Vec<Pid> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|window| window == needle))
        })
        .map(Pid::from_raw)
        .collect()
}

/// One browser tab under WebDriver, in any [`Engine`]; see the [module documentation](self).
pub struct Browser {
    // Drop order matters: the session is closed in `drop`, then the runtime goes, then the
    // driver's process group is killed, then stragglers naming the private directory, then
    // Xvfb, and only then is the directory removed.
    client: Option<Client>,
    runtime: Runtime,
    driver: ServerProcess,
    _sweep: Sweep,
    _display: Option<ServerProcess>,
    engine: Engine,
    profile: TempDir,
}

impl Browser {
    /// Starts `engine`'s WebDriver server (and Xvfb for WebKit) and a browser with a fresh
    /// profile, and opens a session on a 1280×900 window. Panics with the driver's output if
    /// either does not come up within 30 s.
    pub fn start(engine: Engine) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix(&format!("{engine}-"))
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let (display, display_name) = match engine {
            Engine::WebKit => {
                let (xvfb, name) = start_xvfb();
                (Some(xvfb), Some(name))
            }
            Engine::Chromium | Engine::Firefox => (None, None),
        };
        let driver = start_driver(engine, profile.path(), display_name.as_deref());
        let sweep = Sweep(profile.path().to_owned());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot build a Tokio runtime: {error}"));
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(engine.capabilities(profile.path()));
        let connect = runtime.block_on(async {
            tokio::time::timeout(START_TIMEOUT, builder.connect(&driver_url(&driver))).await
        });
        let name = engine.driver_name();
        let client = match connect {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => panic!(
                "{name} could not open a {engine} session: {error}\n--- {name} output ---\n{}",
                driver.log_tail(40)
            ),
            Err(_) => panic!(
                "{engine} did not open a session within {START_TIMEOUT:?}\n\
                 --- {name} output ---\n{}",
                driver.log_tail(40)
            ),
        };
        let browser = Browser {
            client: Some(client),
            runtime,
            driver,
            _sweep: sweep,
            _display: display,
            engine,
            profile,
        };
        let (width, height) = WINDOW;
        if let Err(error) = browser.run(
            "sizing the window",
            browser.client().set_window_size(width, height),
        ) {
            panic!("{error}\n{}", browser.describe());
        }
        browser
    }

    /// The engine this tab runs in.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The process id of the WebDriver server, which leads the process group every browser
    /// process of this tab runs in.
    pub fn driver_pid(&self) -> u32 {
        self.driver.pid()
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until the Browser is dropped")
    }

    /// Runs one WebDriver command to completion, bounded by [`COMMAND_TIMEOUT`].
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        self.run_within(COMMAND_TIMEOUT, what, command)
    }

    fn run_within<T, E: std::fmt::Display>(
        &self,
        limit: Duration,
        what: &str,
        command: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        // The timer must be created inside the runtime, hence the async block.
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, command).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(format!("{what} failed: {error}")),
            Err(_) => Err(format!("{what} did not finish within {limit:?}")),
        }
    }

    /// Navigates the tab to `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        if let Err(error) = self.run(&format!("opening {url}"), self.client().goto(url)) {
            panic!("{error}\n{}", self.describe());
        }
    }

    /// The tab's URL, or why it could not be read.
    pub fn try_current_url(&self) -> Result<String, String> {
        self.run("reading the URL", self.client().current_url())
            .map(|url| url.to_string())
    }

    /// The tab's URL.
    pub fn current_url(&self) -> String {
        self.try_current_url()
            .unwrap_or_else(|error| panic!("{error}\n{}", self.driver_log_tail(20)))
    }

    /// Runs `js` (a function body: use `return`) in the page and returns its result, or why it
    /// failed (e.g. the page was navigating).
    pub fn try_eval(&self, js: &str) -> Result<Value, String> {
        self.run("running a script", self.client().execute(js, Vec::new()))
    }

    /// Runs `js` (a function body: use `return`) in the page and returns its result.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|error| panic!("{error}\nscript: {js}\n{}", self.describe()))
    }

    /// Runs `js` and deserializes its result into `T`.
    pub fn try_eval_as<T: serde::de::DeserializeOwned>(&self, js: &str) -> Result<T, String> {
        let value = self.try_eval(js)?;
        serde_json::from_value(value.clone())
            .map_err(|error| format!("unexpected script result ({error}): {value}"))
    }

    /// What the tab shows now, or why it could not be read.
    pub fn try_page(&self) -> Result<PageState, String> {
        self.try_eval_as(PAGE_STATE_JS)
    }

    /// What the tab shows now.
    pub fn page(&self) -> PageState {
        self.try_page()
            .unwrap_or_else(|error| panic!("{error}\n{}", self.driver_log_tail(20)))
    }

    /// The text of an open `alert`/`confirm`/`prompt` dialog, if one is open.
    pub fn alert_text(&self) -> Option<String> {
        self.run("reading an alert", self.client().get_alert_text())
            .ok()
    }

    /// Saves a PNG screenshot of the viewport at `path`, creating its directory.
    ///
    /// Waits for two animation frames first: WebKit captures the last frame it painted, which
    /// can predate the DOM the test has just checked (seen: the maintenance page's state set,
    /// its text still the initial one in the picture).
    pub fn screenshot(&self, path: &Path) {
        let painted = self.run(
            "waiting for the page to be painted",
            self.client().execute_async(
                "const done = arguments[arguments.length - 1]; \
                 requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                Vec::new(),
            ),
        );
        if let Err(error) = painted {
            panic!("{error}\n{}", self.describe());
        }
        let png = self
            .run("taking a screenshot", self.client().screenshot())
            .unwrap_or_else(|error| panic!("{error}\n{}", self.describe()));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        }
        fs::write(path, png)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
    }

    /// Calls `check` every [`BROWSER_POLL`] until it returns `Ok`, and returns that value.
    ///
    /// `check` returns `Err(what it saw)`. When `timeout` has passed, panics with `what`, the
    /// last thing seen, the tab's URL, body dataset, session storage and text, the end of
    /// the driver's log, and `context()` (typically the stack's log tails).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Browser) -> Result<T, String>,
        context: impl FnOnce() -> String,
    ) -> T {
        match crate::wait::poll_every(BROWSER_POLL, timeout, what, || check(self)) {
            Ok(value) => value,
            Err(timed_out) => panic!("{timed_out}\n{}\n{}", self.describe(), context()),
        }
    }

    /// The tab as a failure message shows it, plus the end of the driver's log.
    pub fn describe(&self) -> String {
        let page = match self.try_page() {
            Ok(page) => page.describe(),
            Err(error) => format!(
                "(could not read the page: {error}; URL: {})",
                self.try_current_url().unwrap_or_else(|e| e)
            ),
        };
        format!(
            "--- the tab ({}) ---\n{page}\n--- {} (last 20 lines) ---\n{}",
            self.engine,
            self.engine.driver_name(),
            self.driver_log_tail(20)
        )
    }

    /// The last `lines` lines of the WebDriver server's output (the browser's too, for
    /// geckodriver and WebKitWebDriver).
    pub fn driver_log_tail(&self, lines: usize) -> String {
        self.driver.log_tail(lines)
    }

    /// The profile directory given to Chromium (`--user-data-dir`); under it, Firefox's.
    pub fn profile_dir(&self) -> PathBuf {
        self.profile.path().join("profile")
    }

    /// Closes the session and stops the browser; returns why closing failed, if it did.
    /// (Dropping the guard does the same, ignoring errors.)
    pub fn close(mut self) -> io::Result<()> {
        let closed = self.close_session();
        closed.map_err(io::Error::other)
    }

    fn close_session(&mut self) -> Result<(), String> {
        match self.client.take() {
            Some(client) => self.run_within(CLOSE_TIMEOUT, "closing the session", client.close()),
            None => Ok(()),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort, and it must not panic while a failed test unwinds: killing
        // the driver's process group right after (field drop order) is what guarantees that
        // no Chromium survives.
        let _ = self.close_session();
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("engine", &self.engine)
            .field("driver", &self.driver)
            .field("profile", &self.profile.path())
            .finish()
    }
}
