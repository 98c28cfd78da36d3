//! The systemd units in deploy/systemd/ as an administrator installs them.
//!
//! - `systemd-analyze verify` (it runs without systemd as PID 1) passes on every unit, in a
//!   scratch root laid out as the README's "Deploy on hosts" says, and fails on a unit that
//!   is broken on purpose (so the check cannot pass by looking at nothing).
//! - An origin started the way `origin@.service` starts it, on the socket the way
//!   `origin@.socket` passes it (Debian's `systemd-socket-activate`), answers on the
//!   inherited socket: the connection made before the process existed is served.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use driver::{
    free_port_on, haproxy_binary, http, origin_binary, private_loopback, wait_until,
    workspace_root, ProcessSpec, Readiness, ServerProcess,
};

/// The four origin roles, each an instance of `origin@.service` and `origin@.socket`.
const ROLES: [&str; 4] = ["static-main", "static-fallback", "api-main", "api-fallback"];

fn units_dir() -> PathBuf {
    workspace_root().join("deploy/systemd")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The value of the one `key=` line in `text` (a unit file or a drop-in).
fn setting(text: &str, key: &str) -> String {
    let mut values = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned);
    let value = values
        .next()
        .unwrap_or_else(|| panic!("no {key}= line in:\n{text}"));
    assert!(
        values.next().is_none(),
        "more than one {key}= line in:\n{text}"
    );
    value
}

/// `KEY=value` lines of an environment file, comments and blank lines skipped.
fn environment_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=value: {line:?}", path.display()));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, target).unwrap();
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn copy_file(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to)
        .unwrap_or_else(|err| panic!("cannot copy {} to {}: {err}", from.display(), to.display()));
}

/// A scratch root with the units installed where the README says, the binaries they name,
/// and the system's own units (targets, Debian's haproxy.service) that they refer to.
fn installed_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let at = |path: &str| root.path().join(path);
    copy_tree(&units_dir(), &at("etc/systemd/system"));
    for env_file in ["host.env", "haproxy.env"] {
        fs::remove_file(at("etc/systemd/system").join(env_file)).unwrap();
        copy_file(
            &units_dir().join(env_file),
            &at("etc/monitoring-dashboard").join(env_file),
        );
    }
    copy_file(
        &workspace_root().join("haproxy.cfg"),
        &at("etc/monitoring-dashboard/haproxy.cfg"),
    );
    copy_file(origin_binary(), &at("usr/local/bin/origin"));
    copy_file(&haproxy_binary(), &at("usr/sbin/haproxy"));
    copy_file(Path::new("/usr/bin/kill"), &at("usr/bin/kill"));
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &at("usr/lib/systemd/system"),
    );
    for link in ["bin", "sbin", "lib"] {
        std::os::unix::fs::symlink(format!("usr/{link}"), at(link)).unwrap();
    }
    root
}

/// `systemd-analyze verify --root ROOT UNITS...`: Ok, or Err(everything it said).
fn verify(root: &Path, units: &[String]) -> Result<(), String> {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package; `cargo xtask install`)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A warning (an unknown key, a bad value) exits 0 but is a broken unit all the same.
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {units:?}: {}\n{said}",
            output.status
        ))
    }
}

fn every_unit() -> Vec<String> {
    let mut units: Vec<String> = ROLES
        .iter()
        .flat_map(|role| {
            [
                format!("origin@{role}.service"),
                format!("origin@{role}.socket"),
            ]
        })
        .collect();
    units.push("haproxy.service".to_owned());
    units
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let root = installed_root();
    verify(root.path(), &every_unit()).unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn verify_catches_a_broken_unit() {
    let root = installed_root();
    let socket = root.path().join("etc/systemd/system/origin@.socket");
    let text = read(&socket).replace("NoDelay=", "NoDelai=");
    fs::write(&socket, text).unwrap();
    let err = verify(root.path(), &every_unit()).expect_err("a misspelt key must be reported");
    assert!(err.contains("NoDelai"), "{err}");

    let root = installed_root();
    fs::remove_dir_all(
        root.path()
            .join("etc/systemd/system/origin@api-main.socket.d"),
    )
    .unwrap();
    let err = verify(root.path(), &every_unit()).expect_err("a socket without address");
    assert!(err.contains("origin@api-main.socket"), "{err}");
}

#[test]
fn the_haproxy_drop_in_names_what_haproxy_cfg_reads() {
    let drop_in = read(&units_dir().join("haproxy.service.d/monitoring-dashboard.conf"));
    assert_eq!(
        setting(&drop_in, "EnvironmentFile"),
        "/etc/monitoring-dashboard/haproxy.env"
    );
    let env = environment_file(&units_dir().join("haproxy.env"));
    let config = read(&workspace_root().join("haproxy.cfg"));
    for (key, _) in env.iter() {
        assert!(
            config.contains(&format!("\"${{{key}}}")),
            "haproxy.env sets {key}, which haproxy.cfg does not read"
        );
    }
    // Every server address HAProxy is given is one a socket unit listens on.
    for role in ROLES {
        let key = format!("{}_ADDR", role.to_uppercase().replace('-', "_"));
        let listen = setting(
            &read(&units_dir().join(format!("origin@{role}.socket.d/listen.conf"))),
            "ListenStream",
        );
        assert_eq!(
            env.get(&key),
            Some(&listen),
            "{key} in haproxy.env vs origin@{role}.socket"
        );
    }
}

/// `origin@.service`'s command for `role`, with the installed binary's path replaced by the
/// one cargo built.
fn exec_start(role: &str) -> Vec<String> {
    let service = read(&units_dir().join("origin@.service"));
    let line = setting(&service, "ExecStart").replace("%i", role);
    let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        words[0], "/usr/local/bin/origin",
        "ExecStart runs the origin binary"
    );
    words[0] = origin_binary().display().to_string();
    words
}

#[test]
fn origin_serves_on_the_socket_that_systemd_passes() {
    let service = read(&units_dir().join("origin@.service"));
    assert_eq!(
        setting(&service, "EnvironmentFile"),
        "/etc/monitoring-dashboard/host.env"
    );
    let mut env = environment_file(&units_dir().join("host.env"));
    // The deployed paths do not exist here: the repository's site, no stats socket.
    env.insert(
        "ORIGIN_WWW".into(),
        workspace_root().join("www").display().to_string(),
    );
    env.insert(
        "ORIGIN_HAPROXY_SOCKET".into(),
        "/nonexistent/haproxy.sock".into(),
    );

    for (role, health, status) in [
        ("static-main", "/healthz", 200),
        ("api-main", "/api/healthz", 200),
    ] {
        let ip = private_loopback();
        let addr = SocketAddr::from((ip, free_port_on(ip)));
        let command = exec_start(role);
        let mut spec = ProcessSpec::new(
            format!("{role} under systemd-socket-activate"),
            "systemd-socket-activate",
        )
        .arg("-l")
        .arg(addr.to_string());
        for (key, value) in &env {
            spec = spec.arg("-E").arg(format!("{key}={value}"));
        }
        let mut process = ServerProcess::spawn(spec.args(&command).readiness(Readiness::Spawned));
        // The socket exists before the origin does: systemd-socket-activate execs it on the
        // first connection, which waits in the backlog meanwhile, as during a restart.
        wait_until(
            Duration::from_secs(10),
            "the socket accepts connections",
            || TcpStream::connect(addr).map(drop),
            || process.log_tail(20),
        );
        let url = format!("http://{addr}{health}");
        let answer = http::Request::get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .unwrap_or_else(|err| panic!("GET {url}: {err}\n{}", process.log_tail(20)));
        assert_eq!(answer.status, status, "{role}: {}", answer.summary());
        // The origin writes its log in batches: wait for the lines rather than read once.
        wait_until(
            Duration::from_secs(10),
            &format!("{role} logs that it serves the inherited socket {addr}"),
            || {
                let log = process.log();
                let inherited = log.contains("source=Inherited");
                let reported = log
                    .lines()
                    .any(|line| line.trim() == format!("[stdout] {addr}"));
                if inherited && reported {
                    Ok(())
                } else {
                    Err(format!(
                        "inherited: {inherited}, address on stdout: {reported}"
                    ))
                }
            },
            || process.log_tail(20),
        );
        process.kill(driver::Signal::SIGTERM);
        let exit = process
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{role} did not stop on SIGTERM:\n{}", process.log_tail(20)));
        assert!(exit.success(), "{role} exits 0 on SIGTERM: {exit}");
    }
}
