//! `cargo xtask install`: make this machine able to build, run and test the stack.
//!
//! Every tool comes from a registry this network reaches (rustup, Debian's apt, crates.io,
//! npm), because wasm-pack's own downloads fail here (see docs/TOOLCHAIN.md). Each
//! step first checks whether the tool is already there at the right version, so a warm
//! machine pays a few `--version` calls and nothing else.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const WASM_PACK_VERSION: &str = "0.15.1";
/// binaryen 116+ is needed: Debian's 108 emits modules Chromium rejects at start.
const BINARYEN_VERSION: &str = "132.0.0";

/// Debian packages `cargo xtask up` needs.
pub const APT_RUN: &[&str] = &["haproxy"];
/// Debian packages `cargo xtask test` needs: the end-to-end and browser tests drive Chromium
/// (chromedriver), Firefox ESR (geckodriver comes from crates.io) and WebKitGTK's MiniBrowser
/// (WebKitWebDriver, under Xvfb; MiniBrowser ships in libwebkit2gtk-4.1-0, which
/// webkit2gtk-driver depends on); the tests of deploy/systemd run `systemd-analyze verify` and
/// `systemd-socket-activate` (package systemd; neither needs systemd running as PID 1).
pub const APT_TEST: &[&str] = &[
    "haproxy",
    "chromium",
    "chromium-driver",
    "firefox-esr",
    "webkit2gtk-driver",
    "xvfb",
    "systemd",
];

/// Debian packages the multi-host topology needs (`cargo xtask up --hosts`, the `hosts` suite):
/// `ip` for network namespaces, veth pairs and the bridge; nftables for each host's firewall;
/// keepalived for the load balancers' virtual IP.
pub const APT_HOSTS: &[&str] = &["iproute2", "nftables", "keepalived"];

/// geckodriver, Firefox's WebDriver server, from crates.io (about 3 min to build).
const GECKODRIVER_VERSION: &str = "0.37.1";

/// The Debian package holding WebKitGTK's MiniBrowser, and the path the browser suite expects
/// it at (`driver::browser` builds the same path from the architecture).
const MINIBROWSER_PACKAGE: &str = "libwebkit2gtk-4.1-0";
/// Debian packages benchmarks need on top of `APT_TEST`.
pub const APT_BENCH: &[&str] = &["nginx", "wrk"];

/// `cargo xtask install`.
pub fn everything(bench: bool) -> Result<()> {
    rust_components()?;
    apt(&[APT_TEST, APT_HOSTS].concat())?;
    if bench {
        apt(APT_BENCH)?;
    }
    minibrowser()?;
    geckodriver()?;
    wasm_tools()?;
    println!("install: everything is in place");
    Ok(())
}

/// The directory holding binaryen's `wasm-opt`, installed from npm by `wasm_tools`.
pub fn binaryen_bin(root: &Path) -> PathBuf {
    binaryen_prefix(root).join("node_modules/.bin")
}

fn binaryen_prefix(root: &Path) -> PathBuf {
    root.join("target/tools/binaryen")
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Everything wasm-pack needs to build and test the client without downloading anything.
pub fn wasm_tools() -> Result<()> {
    wasm_target()?;
    wasm_pack()?;
    wasm_bindgen()?;
    binaryen()
}

/// geckodriver at the pinned version: on `PATH`, else where `cargo install` puts it.
pub fn geckodriver_path() -> Option<PathBuf> {
    let on_path = env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join("geckodriver"))
            .find(|candidate| candidate.is_file())
    });
    let candidates = on_path
        .into_iter()
        .chain(cargo_bin_dir().map(|dir| dir.join("geckodriver")));
    for candidate in candidates {
        // "geckodriver 0.37.1 (<commit> <date>)", then a licence text.
        let Some(version) = cmd::probe(Command::new(&candidate).arg("--version")) else {
            continue;
        };
        let first = version.lines().next().unwrap_or_default();
        if first.split_whitespace().nth(1) == Some(GECKODRIVER_VERSION) {
            return Some(candidate);
        }
    }
    None
}

fn geckodriver() -> Result<()> {
    if geckodriver_path().is_some() {
        return Ok(());
    }
    println!(
        "install: installing geckodriver {GECKODRIVER_VERSION} from crates.io (about 3 min)..."
    );
    let mut install = Command::new("cargo");
    install.args([
        "install",
        "geckodriver",
        "--version",
        GECKODRIVER_VERSION,
        "--locked",
    ]);
    let line = cmd::display(&install);
    cmd::run(&mut install).with_context(|| by_hand(&line))
}

/// Checks that MiniBrowser is where the browser suite looks for it.
fn minibrowser() -> Result<()> {
    let expected = format!(
        "/usr/lib/{}-linux-gnu/webkit2gtk-4.1/MiniBrowser",
        env::consts::ARCH
    );
    if Path::new(&expected).is_file() {
        return Ok(());
    }
    let listed =
        cmd::probe(Command::new("dpkg").args(["-L", MINIBROWSER_PACKAGE])).unwrap_or_default();
    match listed.lines().find(|line| line.ends_with("/MiniBrowser")) {
        Some(found) => bail!(
            "{MINIBROWSER_PACKAGE} installed MiniBrowser at {found}, not at {expected}; point \
             $MINIBROWSER at it when running the browser suite"
        ),
        None => bail!(
            "{MINIBROWSER_PACKAGE} is not installed or holds no MiniBrowser; run `apt-get \
             install --no-install-recommends webkit2gtk-driver` and check `dpkg -L \
             {MINIBROWSER_PACKAGE} | grep MiniBrowser`"
        ),
    }
}

fn wasm_target() -> Result<()> {
    let installed = cmd::probe(Command::new("rustup").args(["target", "list", "--installed"]))
        .context(
            "could not ask rustup for the installed targets; this project needs a Rust \
             toolchain managed by rustup (https://rustup.rs)",
        )?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!("install: adding the Rust target {WASM_TARGET} (seconds)...");
    cmd::run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        .with_context(|| by_hand(&format!("rustup target add {WASM_TARGET}")))
}

/// rustfmt and clippy, which `cargo xtask test` runs; a minimal rustup profile lacks them.
fn rust_components() -> Result<()> {
    let installed = cmd::probe(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("could not ask rustup for the installed components; this project needs a Rust toolchain managed by rustup (https://rustup.rs)")?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|component| {
            !installed
                .lines()
                .any(|line| line.trim().split('-').next() == Some(component))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "install: adding the Rust components {} (seconds)...",
        missing.join(" ")
    );
    let mut add = Command::new("rustup");
    add.args(["component", "add"]).args(&missing);
    let line = cmd::display(&add);
    cmd::run(&mut add).with_context(|| by_hand(&line))
}

fn wasm_pack() -> Result<()> {
    if installed_version("wasm-pack").as_deref() == Some(WASM_PACK_VERSION) {
        return Ok(());
    }
    println!("install: installing wasm-pack {WASM_PACK_VERSION} from crates.io (2-4 min)...");
    let mut install = Command::new("cargo");
    install.args([
        "install",
        "wasm-pack",
        "--version",
        WASM_PACK_VERSION,
        "--locked",
    ]);
    let line = cmd::display(&install);
    cmd::run(&mut install).with_context(|| by_hand(&line))
}

fn wasm_bindgen() -> Result<()> {
    let wanted = locked_wasm_bindgen_version()?;
    if installed_version("wasm-bindgen").as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    println!(
        "install: installing wasm-bindgen-cli {wanted} from crates.io, the version Cargo.lock \
         pins (about 2 min)..."
    );
    // No --locked: the CLI's own lockfile pins a crate version crates.io no longer has.
    let mut install = Command::new("cargo");
    install.args(["install", "wasm-bindgen-cli", "--version", &wanted]);
    let line = cmd::display(&install);
    cmd::run(&mut install).with_context(|| by_hand(&line))
}

fn binaryen() -> Result<()> {
    let root = crate::workspace_root();
    let wasm_opt = binaryen_bin(&root).join("wasm-opt");
    let wanted_major = BINARYEN_VERSION
        .split('.')
        .next()
        .unwrap_or(BINARYEN_VERSION);
    let works = |wasm_opt: &Path| {
        cmd::probe(Command::new(wasm_opt).arg("--version"))
            .is_some_and(|version| version.contains(&format!("version {wanted_major}")))
    };
    if wasm_opt.exists() && works(&wasm_opt) {
        return Ok(());
    }
    if cmd::probe(Command::new("npm").arg("--version")).is_none() {
        apt(&["npm"])?;
    }
    let prefix = binaryen_prefix(&root);
    fs::create_dir_all(&prefix)
        .with_context(|| format!("could not create {}", prefix.display()))?;
    println!(
        "install: installing wasm-opt (binaryen {BINARYEN_VERSION}) from npm into {} \
         (seconds)...",
        prefix.display()
    );
    let mut install = Command::new("npm");
    install
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("binaryen@{BINARYEN_VERSION}"));
    let line = cmd::display(&install);
    cmd::run(&mut install).with_context(|| by_hand(&line))?;
    if !works(&wasm_opt) {
        bail!(
            "{} does not run or is not binaryen {wanted_major}; check that `node` works, \
             then run `{line}` by hand",
            wasm_opt.display()
        );
    }
    Ok(())
}

/// Installs the Debian packages among `packages` that are missing, with one `apt-get update`
/// per run of xtask. Without recommended packages: from nothing, the test set pulls about
/// half as many packages that way (330 instead of 659 in `apt-get -s` on Debian 12), and the
/// browsers need none of the recommended ones.
pub fn apt(packages: &[&str]) -> Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);

    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if cmd::probe(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "these packages are missing and this machine has no apt-get: {list}; install them \
             with the system's package manager"
        );
    }
    let apt_get = |args: &[&str]| {
        let mut command = if nix::unistd::geteuid().is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    println!("install: installing {list} with apt-get (1-2 min)...");
    let hint = format!(
        "run `sudo apt-get update && sudo apt-get install -y --no-install-recommends {list}` \
         by hand"
    );
    if !UPDATED.swap(true, Ordering::SeqCst) {
        cmd::run(&mut apt_get(&["update"])).with_context(|| format!("{hint}, then try again"))?;
    }
    let mut install_args = vec!["install", "-y", "--no-install-recommends"];
    install_args.extend(&missing);
    cmd::run(&mut apt_get(&install_args)).with_context(|| format!("{hint}, then try again"))
}

fn dpkg_installed(package: &str) -> bool {
    cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status == "install ok installed")
}

/// The version `program --version` reports, as its last word ("wasm-pack 0.15.1" -> "0.15.1").
fn installed_version(program: &str) -> Option<String> {
    let line = cmd::probe(Command::new(program).arg("--version"))?;
    line.split_whitespace().last().map(str::to_owned)
}

/// The wasm-bindgen version Cargo.lock pins; wasm-pack only uses a wasm-bindgen CLI of
/// exactly that version.
pub fn locked_wasm_bindgen_version() -> Result<String> {
    if let Some(version) = read_locked_wasm_bindgen()? {
        return Ok(version);
    }
    // No lockfile yet, or it predates the client's dependencies: let cargo resolve it.
    cmd::probe(Command::new("cargo").args(["metadata", "--format-version", "1"]))
        .context("`cargo metadata` failed, so Cargo.lock could not be brought up to date")?;
    read_locked_wasm_bindgen()?
        .context("Cargo.lock has no wasm-bindgen package: the client crate must depend on it")
}

fn read_locked_wasm_bindgen() -> Result<Option<String>> {
    let lock = match fs::read_to_string("Cargo.lock") {
        Ok(lock) => lock,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("could not read Cargo.lock"),
    };
    let versions = locked_versions(&lock, "wasm-bindgen");
    match versions.as_slice() {
        [] => Ok(None),
        [version] => Ok(Some(version.clone())),
        several => bail!(
            "Cargo.lock holds several wasm-bindgen versions ({}); wasm-pack needs exactly one, \
             so pin it in the workspace Cargo.toml",
            several.join(", ")
        ),
    }
}

/// The versions of package `name` listed in a Cargo.lock.
fn locked_versions(lock: &str, name: &str) -> Vec<String> {
    let mut versions = Vec::new();
    let mut current_name = None;
    for line in lock.lines().map(str::trim) {
        if line == "[[package]]" {
            current_name = None;
        } else if let Some(value) = quoted_value(line, "name") {
            current_name = Some(value);
        } else if let Some(value) = quoted_value(line, "version") {
            if current_name == Some(name) {
                versions.push(value.to_owned());
            }
        }
    }
    versions
}

/// `value` from a line `key = "value"`.
fn quoted_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')
}

fn by_hand(command: &str) -> String {
    format!("installing failed; run `{command}` by hand, fix what it reports, then try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_package_version_in_a_lockfile() {
        let lock = r#"
version = 4

[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "wasm-bindgen-macro",
]

[[package]]
name = "wasm-bindgen-macro"
version = "0.2.130"
"#;
        assert_eq!(locked_versions(lock, "wasm-bindgen"), ["0.2.130"]);
        assert!(locked_versions(lock, "js-sys").is_empty());
    }
}
