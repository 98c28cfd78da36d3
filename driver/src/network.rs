//! The multi-host topology's network: one namespace per [`Host`] on one Linux bridge in the
//! root namespace, addresses in 198.18.0.0/24, no uplink, no route or NAT off the machine.
//! [`Network`] is its guard: dropping it removes every namespace, link and process it made.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use contract::Role;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::process::{ProcessSpec, Readiness};
use crate::topology::{
    Host, Topology, BRIDGE_IP, ORIGIN_NEXT_PORT, ORIGIN_PORT, PREFIX, STATS_PORT, VIP,
};

/// One multi-host topology at a time per machine: each one's bridge holds [`BRIDGE_IP`].
const LOCK_FILE: &str = "/tmp/dsh-hosts.lock";

/// The VRRP router id both load balancers share.
const VIRTUAL_ROUTER_ID: u8 = 51;

/// The network of one multi-host run; dropping it kills every process left in its namespaces
/// and deletes the namespaces (and so their veth pairs) and the bridge, pass or fail.
#[derive(Debug)]
pub struct Network {
    topology: Topology,
    run: String,
    // Held until the network is gone: the next run waits for it.
    _lock: File,
}

impl Network {
    /// Removes what a crashed run left (and says so), then makes the bridge, one namespace
    /// per host with its veth, address and firewall. Fails with a sentence saying what to do
    /// when not root or a tool is missing.
    pub fn up() -> Result<Network, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "the multi-host topology needs root (network namespaces, a bridge, \
                 nftables, keepalived): run it as root, e.g. `sudo -E cargo test -p driver \
                 --test hosts`"
                    .to_owned(),
            );
        }
        let lock = File::create(LOCK_FILE)
            .map_err(|error| format!("cannot open the lock file {LOCK_FILE}: {error}"))?;
        if lock.try_lock().is_err() {
            // Another test or `up --hosts` has the bridge; say why nothing happens yet.
            println!("hosts: another multi-host stack runs ({LOCK_FILE}); waiting for it to stop");
            lock.lock()
                .map_err(|error| format!("cannot lock {LOCK_FILE}: {error}"))?;
        }
        remove_leftovers()?;
        let run = format!(
            "{:06x}",
            (std::process::id()
                ^ std::time::UNIX_EPOCH
                    .elapsed()
                    .unwrap_or_default()
                    .subsec_nanos())
                & 0xff_ffff
        );
        let network = Network {
            topology: Topology::Hosts { run: run.clone() },
            run,
            _lock: lock,
        };
        network.build()?;
        Ok(network)
    }

    /// The topology whose namespaces these are.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn bridge(&self) -> String {
        format!("{PREFIX}{}br", self.run)
    }

    /// The root-namespace end of `host`'s veth pair (the other end is its `eth0`).
    fn veth(&self, host: Host) -> String {
        format!("{PREFIX}{}v{}", self.run, host.index())
    }

    /// The namespace of `host`.
    pub fn namespace(&self, host: Host) -> String {
        self.topology.namespace(host).expect("a Hosts topology")
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in Host::ALL {
            let namespace = self.namespace(host);
            let veth = self.veth(host);
            ip(&["netns", "add", &namespace])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let inside = |args: &[&str]| ip(&[&["-n", namespace.as_str()], args].concat());
            inside(&["link", "set", "lo", "up"])?;
            inside(&["addr", "add", &format!("{}/24", host.ip()), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            run(
                Command::new("ip").args(["netns", "exec", &namespace, "nft", "-f", "-"]),
                Some(&firewall(host)),
            )?;
        }
        Ok(())
    }

    /// Takes `host`'s link down (`false`) or up again: the host is cut off the bridge.
    pub fn set_link(&self, host: Host, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.namespace(host), "link", "set", "eth0", state])
    }

    /// Runs `command` on `host` and returns its standard output.
    pub fn run_on(&self, host: Host, command: &[&str]) -> Result<String, String> {
        output(
            Command::new("ip")
                .args(["netns", "exec", &self.namespace(host)])
                .args(command),
        )
    }

    /// Every load balancer that holds the VIP now: one normally, none during a move, both
    /// while they cannot hear each other (a VRRP split).
    pub fn vip_holders(&self) -> Vec<Host> {
        Host::BALANCERS
            .into_iter()
            .filter(|&host| {
                self.run_on(host, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
                    .is_ok_and(|text| text.contains(&format!("inet {VIP}/")))
            })
            .collect()
    }

    /// Drops `percent` % of the packets `host` sends and receives, at random (nftables
    /// `numgen random`; this kernel has no netem), or stops dropping (`None`).
    pub fn set_loss(&self, host: Host, percent: Option<u8>) -> Result<(), String> {
        let rules = percent.map(|percent| {
            ["input", "output"]
                .map(|hook| {
                    format!(
                        "  chain {hook} {{\n    type filter hook {hook} priority -10; policy accept;\n    \
                         numgen random mod 100 < {percent} drop\n  }}\n"
                    )
                })
                .concat()
        });
        self.set_table(host, "loss", rules.as_deref())
    }

    /// Cuts VRRP between the load balancers (`true`: each drops the other's adverts, so
    /// both believe they are alone) or heals it. Everything else still flows.
    pub fn set_vrrp_split(&self, split: bool) -> Result<(), String> {
        let rules =
            "  chain input {\n    type filter hook input priority -10; policy accept;\n    \
                     ip protocol 112 drop\n  }\n";
        for lb in Host::BALANCERS {
            self.set_table(lb, "split", split.then_some(rules))?;
        }
        Ok(())
    }

    /// Replaces nftables table `inet dsh<name>` on `host` with `chains`, or removes it (`None`).
    fn set_table(&self, host: Host, name: &str, chains: Option<&str>) -> Result<(), String> {
        // Declaring the table first makes the delete succeed whether or not it existed.
        let mut script = format!("table inet {PREFIX}{name}\ndelete table inet {PREFIX}{name}\n");
        if let Some(chains) = chains {
            let _ = write!(script, "table inet {PREFIX}{name} {{\n{chains}}}\n");
        }
        run(
            Command::new("ip").args(["netns", "exec", &self.namespace(host), "nft", "-f", "-"]),
            Some(&script),
        )
        .map(drop)
    }

    /// keepalived for load balancer `host`, holding the VIP while that host's HAProxy master
    /// (`haproxy_pid`) runs: VRRP by unicast to the other balancer only, its configuration
    /// and pid files in `dir`/keepalived-<host>/.
    ///
    /// A `vrrp_script` looks once a second (`exe`: a zombie has none), not `track_process`:
    /// that needs the kernel's process-events connector, which exists only in the initial
    /// network namespace (keepalived 2.2.7 logs errno 111 and stays in FAULT here), and
    /// keepalived refuses a script interval under 1 s.
    pub fn keepalived(
        &self,
        host: Host,
        haproxy_pid: u32,
        dir: &Path,
    ) -> Result<ProcessSpec, String> {
        let (priority, peer) = match host {
            Host::LbA => (150, Host::LbB),
            _ => (100, Host::LbA),
        };
        let config = format!(
            "global_defs {{\n  router_id {name}\n  script_user root\n  enable_script_security\n}}\n\
             vrrp_script haproxy {{\n  script \"/usr/bin/test -e /proc/{haproxy_pid}/exe\"\n  \
             interval 1\n  fall 1\n  rise 1\n}}\n\
             vrrp_instance site {{\n  state BACKUP\n  interface eth0\n  \
             virtual_router_id {VIRTUAL_ROUTER_ID}\n  priority {priority}\n  advert_int 1\n  \
             unicast_src_ip {src}\n  unicast_peer {{\n    {peer}\n  }}\n  \
             virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n  \
             track_script {{\n    haproxy\n  }}\n}}\n",
            name = self.namespace(host),
            src = host.ip(),
            peer = peer.ip(),
        );
        // Its own directory: keepalived writes three pid files of its own, which must not
        // pass for the stack's `<name>.pid` files.
        let own = dir.join(format!("keepalived-{host}"));
        let file = |name: &str| -> PathBuf { own.join(name) };
        std::fs::create_dir_all(&own)
            .and_then(|()| std::fs::write(file("keepalived.conf"), config))
            .map_err(|error| {
                format!(
                    "cannot write {}: {error}",
                    file("keepalived.conf").display()
                )
            })?;
        let spec = ProcessSpec::new(format!("keepalived-{host}"), "keepalived")
            .args(["-n", "-l", "-D", "-f"])
            .arg(file("keepalived.conf"))
            .arg("-p")
            .arg(file("keepalived.pid"))
            .arg("-r")
            .arg(file("vrrp.pid"))
            .arg("-c")
            .arg(file("checker.pid"))
            .readiness(Readiness::Spawned)
            .own_process_group();
        Ok(self.topology.place(host, spec))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let namespaces: Vec<String> = Host::ALL.map(|host| self.namespace(host)).to_vec();
        // The root ends of the veth pairs too: a namespace whose last process is still
        // exiting outlives `ip netns del`, and its link with it.
        let links: Vec<String> = Host::ALL
            .map(|host| self.veth(host))
            .into_iter()
            .chain([self.bridge()])
            .collect();
        if let Err(error) = remove(&namespaces, &links) {
            eprintln!(
                "hosts: could not remove everything of run {}: {error}",
                self.run
            );
        }
    }
}

/// The nftables ruleset of `host`: an origin takes its two ports (a redeploy moves it from
/// one to the other) only from the load balancers; a load balancer's read-only stats port
/// takes only the API hosts (api-main for `/api/data`, api-fallback for the recovery hint).
fn firewall(host: Host) -> String {
    let (ports, allowed) = match host {
        Host::Origin(_) => (
            format!("{ORIGIN_PORT}, {ORIGIN_NEXT_PORT}"),
            Host::BALANCERS,
        ),
        Host::LbA | Host::LbB => (
            STATS_PORT.to_string(),
            [Host::Origin(Role::ApiMain), Host::Origin(Role::ApiFallback)],
        ),
    };
    let allowed = allowed.map(|host| host.ip().to_string()).join(", ");
    format!(
        "table inet {PREFIX} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         tcp dport {{ {ports} }} ip saddr {{ {allowed} }} accept\n    \
         tcp dport {{ {ports} }} reject with tcp reset\n  }}\n}}\n"
    )
}

/// Deletes what a run that could not clean up (it was killed) left: namespaces and links
/// whose names start with the driver's prefix and the processes still in those namespaces.
/// Prints a line when there was any. [`Network::up`] does this first.
pub fn remove_leftovers() -> Result<(), String> {
    let namespaces: Vec<String> = output(Command::new("ip").args(["netns", "list"]))?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("{PREFIX}-")))
        .map(str::to_owned)
        .collect();
    let links: Vec<String> = output(Command::new("ip").args(["-o", "link", "show"]))?
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| name.starts_with(PREFIX))
        .map(str::to_owned)
        .collect();
    if namespaces.is_empty() && links.is_empty() {
        return Ok(());
    }
    println!(
        "hosts: removing leftovers of an earlier run: {}",
        [namespaces.as_slice(), links.as_slice()]
            .concat()
            .join(", ")
    );
    remove(&namespaces, &links)
}

/// Kills every process in `namespaces`, deletes them, then deletes `links` (already gone
/// with their namespace is fine).
fn remove(namespaces: &[String], links: &[String]) -> Result<(), String> {
    let mut errors = String::new();
    for namespace in namespaces {
        if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", namespace])) {
            for pid in pids.split_whitespace().filter_map(|pid| pid.parse().ok()) {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Err(error) = ip(&["netns", "del", namespace]) {
            let _ = writeln!(errors, "{error}");
        }
    }
    let exists = |link: &str| ip(&["link", "show", link]).is_ok();
    for link in links {
        // A veth may vanish between the two commands, with its namespace.
        if exists(link) {
            if let Err(error) = ip(&["link", "del", link]) {
                if exists(link) {
                    let _ = writeln!(errors, "{error}");
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args), None).map(drop)
}

fn output(command: &mut Command) -> Result<String, String> {
    run(command, None)
}

/// Runs `command` (with `stdin` as its input), returns its standard output; the error names
/// the command and what it printed.
fn run(command: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    let line = format!("{command:?}");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            format!("could not run {line}: {error}; `cargo xtask install` installs iproute2, nftables and keepalived")
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|error| format!("could not write to {line}: {error}"))?;
    }
    let done = child
        .wait_with_output()
        .map_err(|error| format!("{line} failed: {error}"))?;
    let stderr = String::from_utf8_lossy(&done.stderr);
    if done.status.success() {
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    } else {
        // `ip netns exec` itself ran, but not the program it was given.
        let hint = if stderr.contains("exec of") && stderr.contains("No such file") {
            "; `cargo xtask install` installs iproute2, nftables and keepalived"
        } else {
            ""
        };
        Err(format!(
            "{line} failed ({}): {}{hint}",
            done.status,
            stderr.trim()
        ))
    }
}
