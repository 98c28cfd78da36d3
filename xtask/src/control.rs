//! `cargo xtask restart`, `redeploy`, `stop` and `status`: talking to a running `cargo xtask up`.
//! What a restart or a redeploy does is the driver's (`driver::Stack::restart_origin`,
//! `redeploy`); `up` runs it and streams its progress here.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use driver::{Server, Tier};

use crate::files;

/// Longest `up` may stay silent while answering: a restart waits for the old server to drain
/// (up to 15 s) and for the new one to report its address (up to 30 s); a redeploy sends a
/// progress line after each step, the longest of which is the same drain.
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// `cargo xtask restart [--cold] <name>`.
pub fn restart(server: Server, cold: bool) -> Result<()> {
    let request_line = if cold {
        format!("restart-cold {server}")
    } else {
        format!("restart {server}")
    };
    let done = request(&request_line)?;
    println!("{done}");
    Ok(())
}

/// `cargo xtask redeploy <tier> [--build-id ID]`: asks the running `cargo xtask up` and
/// prints its progress as it comes.
pub fn redeploy(tier: Tier, build_id: Option<&str>) -> Result<()> {
    let line = match build_id {
        Some(id) => {
            driver::check_build_id(id).map_err(|error| anyhow!(error))?;
            format!("redeploy {tier} {id}")
        }
        None => format!("redeploy {tier}"),
    };
    let done = request_with_progress(&line, |progress| println!("{progress}"))?;
    println!("{done}");
    Ok(())
}

/// `cargo xtask stop`: returns once `up` has stopped every server.
pub fn stop() -> Result<()> {
    println!("{}", request("stop")?);
    // `up` removes its control socket last, after every server is reaped.
    driver::poll_until(REPLY_TIMEOUT, "`cargo xtask up` has stopped", || {
        if files::control_socket().exists() {
            Err("its control socket is still there")
        } else {
            Ok(())
        }
    })
    .map_err(|_| {
        anyhow!(
            "`cargo xtask up` accepted the stop request but still runs after {} s; look at \
             its terminal",
            REPLY_TIMEOUT.as_secs()
        )
    })?;
    println!("stack stopped");
    Ok(())
}

/// `cargo xtask status`: each process's pid file and whether that process lives.
pub fn status() -> Result<()> {
    let supervised = UnixStream::connect(files::control_socket()).is_ok();
    let mut report = format!(
        "supervisor (cargo xtask up): {}\n{:<16} {:<24} {:>8}  address\n",
        if supervised { "running" } else { "not running" },
        "server",
        "state",
        "pid"
    );
    let mut processes = files::pid_files(&files::stack_dir());
    if processes.is_empty() {
        processes = Server::ALL
            .map(|server| (server.to_string(), None))
            .to_vec();
    }
    for (name, pid) in processes {
        let state = match pid {
            Some(pid) if driver::runs_stack_program(pid) => "alive",
            Some(_) => "dead (stale pid file)",
            None => "not running",
        };
        let addr = fs::read_to_string(files::addr_file(&name)).unwrap_or_default();
        report.push_str(&format!(
            "{:<16} {:<24} {:>8}  {}\n",
            name,
            state,
            pid.map_or("-".to_owned(), |pid| pid.to_string()),
            addr.trim()
        ));
    }
    // `cargo xtask status | head -1` closes the pipe early; that is not an error.
    let _ = std::io::stdout().write_all(report.as_bytes());
    Ok(())
}

/// Sends one request line to `up` and returns the reply after `ok `, or the reply after
/// `error ` as the error.
fn request(line: &str) -> Result<String> {
    request_with_progress(line, |_| {})
}

/// Like `request`, handing each `progress ...` line that comes before the reply to
/// `on_progress` as it arrives (without the prefix).
fn request_with_progress(line: &str, mut on_progress: impl FnMut(&str)) -> Result<String> {
    let path = files::control_socket();
    let mut stream = UnixStream::connect(&path).map_err(|err| {
        anyhow!(
            "no stack is running: nothing answers on {} ({err}); start one with `cargo xtask up`",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .context("could not send the request to `cargo xtask up`")?;
    let mut reply = String::new();
    for received in BufReader::new(&stream).lines() {
        let received = received.with_context(|| {
            format!(
                "`cargo xtask up` did not answer within {} s",
                REPLY_TIMEOUT.as_secs()
            )
        })?;
        match received.strip_prefix("progress ") {
            Some(progress) if reply.is_empty() => on_progress(progress),
            _ => {
                reply.push_str(&received);
                reply.push('\n');
            }
        }
    }
    parse_reply(&reply)
}

fn parse_reply(reply: &str) -> Result<String> {
    let reply = reply.trim_end();
    if let Some(done) = reply.strip_prefix("ok ") {
        Ok(done.to_owned())
    } else if let Some(failure) = reply.strip_prefix("error ") {
        Err(anyhow!("{failure}"))
    } else {
        bail!("`cargo xtask up` gave an answer this xtask does not understand: {reply:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_into_success_and_failure() {
        assert_eq!(
            parse_reply("ok api-main restarted\n").unwrap(),
            "api-main restarted"
        );
        let failure = parse_reply("error no such server\ndetail\n").unwrap_err();
        assert_eq!(failure.to_string(), "no such server\ndetail");
        assert!(parse_reply("").is_err());
    }
}
