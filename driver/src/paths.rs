//! Where things are: the workspace, the target directory, the binaries under test, free ports.

use std::env;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The workspace root (the directory holding `haproxy.cfg` and `www/`).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest_dir
            .parent()
            .expect("the driver crate lives one level below the workspace root")
            .to_path_buf()
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace root),
/// `<workspace>/target` otherwise.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Environment variable naming an already built `origin` binary to run instead of building
/// the debug one (benchmarks point it at the release build).
pub const ORIGIN_BIN_ENV: &str = "ORIGIN_BIN";

/// The `origin` binary: `$ORIGIN_BIN` when set, else built once per test process with
/// `cargo build -p origin --bin origin`.
///
/// Integration tests cannot depend on another package's binary, so the harness builds it
/// itself (a no-op when it is fresh). Panics with the command and its output if the build
/// fails.
pub fn origin_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(binary) = env::var_os(ORIGIN_BIN_ENV).filter(|p| !p.is_empty()) {
            let binary = PathBuf::from(binary);
            assert!(
                binary.is_file(),
                "${ORIGIN_BIN_ENV} names {}, which is not a file; build it \
                 (`cargo build --release -p origin`) or unset ${ORIGIN_BIN_ENV}",
                binary.display()
            );
            return binary;
        }
        // The cargo running these tests, so toolchain and target directory agree.
        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command.current_dir(workspace_root()).args([
            "build",
            "--package",
            "origin",
            "--bin",
            "origin",
        ]);
        let output = command
            .output()
            .unwrap_or_else(|error| panic!("could not run {command:?}: {error}"));
        if !output.status.success() {
            panic!(
                "building the origin binary failed: {command:?} exited with {}\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
        }
        let binary = target_dir().join("debug").join("origin");
        assert!(
            binary.is_file(),
            "{command:?} succeeded but {} does not exist; is CARGO_TARGET_DIR or \
             CARGO_BUILD_TARGET set to something this harness does not know?",
            binary.display()
        );
        binary
    })
}

/// The `haproxy` binary: `$HAPROXY` when set, else the first `haproxy` on `PATH`, else
/// Debian's `/usr/sbin/haproxy` (not on a non-root user's `PATH`).
pub fn haproxy_binary() -> PathBuf {
    if let Some(path) = env::var_os("HAPROXY").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let on_path = env::var_os("PATH")
        .into_iter()
        .flat_map(|path| env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file());
    let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"));
    assert!(
        binary.is_file(),
        "haproxy is not installed (looked on PATH and at /usr/sbin/haproxy); install it with \
         `apt-get install haproxy` or point $HAPROXY at the binary"
    );
    binary
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Only for programs that cannot report the port they bound (chromedriver); the origin
/// binary binds port 0 itself and prints its address.
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A TCP port on `ip` that was free a moment ago.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0))
        .unwrap_or_else(|error| panic!("could not bind a port on {ip}: {error}"));
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// A loopback address of its own for each stack: 127.a.b.c, from the process id and a
/// counter, never 127.0.0.1.
///
/// A test that kills a server frees its port, and the kernel may hand that port to a server
/// another test starts meanwhile; on a shared address, the first test's HAProxy would then
/// find a "recovered" server that is not its own. On distinct addresses that cannot happen.
/// Linux answers the whole 127.0.0.0/8 on the loopback interface.
pub fn private_loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // The casts keep values within 1..=250 and 0..=249, so no octet is 0 or 255 where that
    // would matter, and the result is never 127.0.0.1 (the second octet is at least 1).
    Ipv4Addr::new(
        127,
        (1 + pid % 250) as u8,
        (n / 250 % 250) as u8,
        (1 + n % 250) as u8,
    )
}
