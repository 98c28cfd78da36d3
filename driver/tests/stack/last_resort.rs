//! The last-resort service worker's script as HAProxy serves it, and the list of files
//! HAProxy answers from memory, checked against haproxy.cfg.

use std::collections::BTreeSet;

use driver::{expect, Role, Signal, Stack};

#[test]
fn every_file_haproxy_serves_from_memory_is_listed_once_in_rust() {
    let config = std::fs::read_to_string(driver::workspace_root().join("haproxy.cfg"))
        .expect("haproxy.cfg is readable");
    let marker = "file \"${WWW_DIR}/";
    let in_config: BTreeSet<&str> = config
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.match_indices(marker).map(move |(at, _)| &line[at..]))
        .filter_map(|rest| rest[marker.len()..].split('"').next())
        .collect();
    let in_rust: BTreeSet<&str> = driver::HAPROXY_SERVED_FILES.into_iter().collect();
    assert_eq!(
        in_config, in_rust,
        "haproxy.cfg answers these files from memory, driver::HAPROXY_SERVED_FILES lists those"
    );
}

#[test]
fn haproxy_serves_the_worker_no_store_with_every_origin_dead() {
    let mut stack = Stack::start();
    let script = stack.www_file("sw.js");
    for role in Role::ALL {
        stack.server_mut(role).kill(Signal::SIGKILL);
    }
    for path in ["/sw.js", "/sw.js?v=e2e"] {
        let answer = stack.get(path);
        expect::status(&answer, 200, path);
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{answer}");
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/javascript")),
            "{answer}"
        );
        assert!(answer.body == script, "{path} is not www/sw.js: {answer}");
    }
}
