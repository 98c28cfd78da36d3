//! Headless Chromium under WebDriver, for the end-to-end browser scenarios.
//!
//! [`Browser::start`] starts its own `chromedriver` on a free loopback port, in a process group
//! of its own, and opens one WebDriver session (one tab) on a fresh Chromium profile. Its
//! methods block: each runs one WebDriver command on the guard's private Tokio runtime, bounded
//! by a deadline, so a test reads like a script and a wedged browser fails the test instead of
//! hanging it.
//!
//! Dropping the guard closes the session, kills chromedriver's whole process group (Chromium
//! and its helpers live there), and then any process still naming the test's private profile
//! directory (Chromium's crash handler leaves the group), so no browser outlives a test,
//! whether it passed or panicked.
//!
//! ```no_run
//! use std::time::Duration;
//! use driver::browser::Browser;
//!
//! let tab = Browser::start();
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
use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::runtime::Runtime;

use crate::http::Request;
use crate::paths::free_port;

/// Environment variable naming the chromedriver binary (as for `wasm-bindgen-test-runner`).
pub const CHROMEDRIVER_ENV: &str = "CHROMEDRIVER";

/// Environment variable naming the Chromium binary.
pub const CHROMIUM_ENV: &str = "CHROMIUM";

const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How often [`Browser::wait_for`] looks at its condition.
pub const BROWSER_POLL: Duration = Duration::from_millis(100);

/// How long chromedriver may take to answer `/status`, and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest any single WebDriver command may take (a page load is bounded at 30 s by the
/// session's own `pageLoad` timeout, well inside this).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long closing the session may take before the process group is killed anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Chromium flags known to work on these machines (see TOOLCHAIN.md). Background networking,
/// component updates and sync are off because they open connections this closed network
/// refuses; `--user-data-dir` is added per browser, so every test starts from a fresh profile.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
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

/// A running chromedriver, leader of its own process group; dropping it kills the whole
/// group (chromedriver, Chromium and every Chromium helper) and reaps chromedriver.
struct Chromedriver {
    child: Child,
    port: u16,
    log: PathBuf,
    /// The directory holding the Chromium profile: every browser process names it.
    dir: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port (retrying on another port if that one was taken in
    /// the meantime) and waits until its `/status` says it is ready.
    fn start(dir: &Path) -> Chromedriver {
        let program = std::env::var_os(CHROMEDRIVER_ENV)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CHROMEDRIVER), PathBuf::from);
        assert!(
            program.is_file(),
            "chromedriver is not installed at {}; install it with `apt-get install \
             chromium-driver` or point ${CHROMEDRIVER_ENV} at the binary",
            program.display()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = dir.join(format!("chromedriver-{port}.log"));
            let output = File::create(&log)
                .unwrap_or_else(|error| panic!("cannot create {}: {error}", log.display()));
            let stderr = output
                .try_clone()
                .unwrap_or_else(|error| panic!("cannot duplicate a file handle: {error}"));
            let child = Command::new(&program)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(stderr)
                // A group of its own, so one signal reaches every Chromium process it starts.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| panic!("could not start {}: {error}", program.display()));
            let mut driver = Chromedriver {
                child,
                port,
                log,
                dir: dir.to_owned(),
            };
            match driver.wait_ready() {
                Ok(()) => return driver,
                Err(message) if attempt < 3 && message.contains("exited") => {
                    // Most likely the port was taken between free_port() and the bind.
                    eprintln!("chromedriver on port {port} failed, retrying: {message}");
                }
                Err(message) => panic!(
                    "chromedriver did not start: {message}\ncommand: {} --port={port}\n\
                     --- chromedriver output ---\n{}",
                    program.display(),
                    driver.log_tail(40)
                ),
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::from("nothing yet");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "chromedriver exited with {status} before it was ready"
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "chromedriver was not ready within {START_TIMEOUT:?}; last /status: {last}"
                ));
            }
            match Request::get(&format!("{}/status", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
            {
                Ok(response) if response.status == 200 => {
                    let ready = serde_json::from_slice::<Value>(&response.body)
                        .is_ok_and(|status| status["value"]["ready"] == json!(true));
                    if ready {
                        return Ok(());
                    }
                    last = response.summary();
                }
                Ok(response) => last = response.summary(),
                Err(error) => last = error.to_string(),
            }
            thread::sleep(BROWSER_POLL);
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in pid_t"));
        // ESRCH: the group is already empty.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        // Chromium's crash handler puts itself in a session of its own, out of the group's
        // reach; it exits once Chromium is gone. Make sure of it: any process still naming
        // this test's private profile directory is ours and gets killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stragglers = processes_naming(&self.dir);
            if stragglers.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in stragglers {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
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

/// One Chromium tab under WebDriver; see the [module documentation](self).
pub struct Browser {
    // Drop order matters: the session is closed in `drop`, then the runtime goes, then
    // chromedriver's process group is killed, and only then is the profile removed.
    client: Option<Client>,
    runtime: Runtime,
    driver: Chromedriver,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, and opens a session.
    /// Panics with chromedriver's output if either does not come up within 30 s.
    pub fn start() -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let driver = Chromedriver::start(profile.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot build a Tokio runtime: {error}"));
        let chromium = std::env::var_os(CHROMIUM_ENV)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from);
        let user_data = profile.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        capabilities.insert(
            "timeouts".to_owned(),
            json!({ "pageLoad": 30_000, "script": 10_000 }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let connect = runtime.block_on(async {
            tokio::time::timeout(START_TIMEOUT, builder.connect(&driver.url())).await
        });
        let client = match connect {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => panic!(
                "chromedriver could not open a Chromium session: {error}\n\
                 --- chromedriver output ---\n{}",
                driver.log_tail(40)
            ),
            Err(_) => panic!(
                "Chromium did not open a session within {START_TIMEOUT:?}\n\
                 --- chromedriver output ---\n{}",
                driver.log_tail(40)
            ),
        };
        Browser {
            client: Some(client),
            runtime,
            driver,
            profile,
        }
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
    pub fn screenshot(&self, path: &Path) {
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
    /// chromedriver's log, and `context()` (typically the stack's log tails).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Browser) -> Result<T, String>,
        context: impl FnOnce() -> String,
    ) -> T {
        let started = Instant::now();
        loop {
            match check(self) {
                Ok(value) => return value,
                Err(seen) if started.elapsed() >= timeout => panic!(
                    "timed out after {:.1?} waiting until {what}\nlast seen: {seen}\n{}\n{}",
                    started.elapsed(),
                    self.describe(),
                    context()
                ),
                Err(_) => thread::sleep(BROWSER_POLL),
            }
        }
    }

    /// The tab as a failure message shows it, plus the end of chromedriver's log.
    pub fn describe(&self) -> String {
        let page = match self.try_page() {
            Ok(page) => page.describe(),
            Err(error) => format!(
                "(could not read the page: {error}; URL: {})",
                self.try_current_url().unwrap_or_else(|e| e)
            ),
        };
        format!(
            "--- the tab ---\n{page}\n--- chromedriver (last 20 lines) ---\n{}",
            self.driver_log_tail(20)
        )
    }

    /// The last `lines` lines of chromedriver's output.
    pub fn driver_log_tail(&self, lines: usize) -> String {
        self.driver.log_tail(lines)
    }

    /// The profile directory given to Chromium (`--user-data-dir`).
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
        // chromedriver's process group right after (field drop order) is what guarantees that
        // no Chromium survives.
        let _ = self.close_session();
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver_pid", &self.driver.child.id())
            .field("chromedriver_port", &self.driver.port)
            .field("profile", &self.profile.path())
            .finish()
    }
}
