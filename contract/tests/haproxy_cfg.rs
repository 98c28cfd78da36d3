//! Reads the real `haproxy.cfg` and fails where it and the crate's constants disagree.

use std::collections::BTreeSet;
use std::path::Path;

use contract::{
    env, Role, Tier, FALLBACK_CHECKS_BACKEND, HAPROXY_BUFSIZE, HAPROXY_MAXREWRITE,
    HAPROXY_SERVED_FILES, HEALTHY_STATUS, LIVENESS_PATH, MAINTENANCE_JSON, RETRY_AFTER_S,
};

fn config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../haproxy.cfg");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The lines of the section that starts with `header` (e.g. "backend api"), comments and
/// blank lines left out.
fn section(config: &str, header: &str) -> Vec<String> {
    let mut lines = config.lines().skip_while(|line| line.trim_end() != header);
    assert!(
        lines.next().is_some(),
        "haproxy.cfg has no `{header}` section"
    );
    lines
        .take_while(|line| line.is_empty() || line.starts_with(char::is_whitespace))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Everything after `marker` up to the next `"`, for each occurrence outside comments.
fn quoted_after<'a>(config: &'a str, marker: &str) -> Vec<&'a str> {
    config
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(marker).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

#[test]
fn the_environment_is_the_contracts() {
    let config = config();
    let used: BTreeSet<&str> = quoted_after(&config, "\"${")
        .into_iter()
        .map(|var| var.split('}').next().unwrap_or(var))
        .collect();
    let known: BTreeSet<&str> = env::REQUIRED
        .iter()
        .chain(&env::OPTIONAL)
        .copied()
        .collect();
    assert_eq!(
        used, known,
        "haproxy.cfg reads other environment variables than contract::env names"
    );
    for optional in env::OPTIONAL {
        assert!(
            config.contains(&format!(".if defined({optional})")),
            "haproxy.cfg must read {optional} only when it is set"
        );
    }
}

#[test]
fn each_backend_checks_its_health_path_for_exactly_200() {
    let config = config();
    for tier in Tier::ALL {
        let backend = section(&config, &format!("backend {}", tier.name()));
        let send = format!("http-check send meth GET uri {} ", tier.health_path());
        assert!(
            backend.iter().any(|line| line.starts_with(&send)),
            "backend {tier} does not check {}: {backend:#?}",
            tier.health_path()
        );
        let expect = format!("http-check expect status {HEALTHY_STATUS}");
        assert!(
            backend.contains(&expect),
            "backend {tier} does not expect exactly {HEALTHY_STATUS}: {backend:#?}"
        );
    }
}

#[test]
fn each_role_is_a_server_of_its_backend_main_checked_fallback_backup() {
    let config = config();
    for role in Role::ALL {
        let backend = section(&config, &format!("backend {}", role.backend()));
        let prefix = format!("server {} \"${{{}}}\"", role.name(), role.addr_env());
        let line = backend
            .iter()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("backend {} has no `{prefix} ...`", role.backend()));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.contains(&"check"),
            role.is_main(),
            "{role}: only main servers are checked: {line}"
        );
        assert_eq!(
            words.contains(&"backup"),
            !role.is_main(),
            "{role}: fallbacks are backups: {line}"
        );
    }
}

#[test]
fn each_fallback_tracks_its_liveness_check() {
    let config = config();
    let checks = section(&config, &format!("backend {FALLBACK_CHECKS_BACKEND}"));
    assert!(
        checks.contains(&format!(
            "http-check send meth GET uri {LIVENESS_PATH} ver HTTP/1.1 hdr Host localhost"
        )) && checks.contains(&format!("http-check expect status {HEALTHY_STATUS}")),
        "backend {FALLBACK_CHECKS_BACKEND} does not check {LIVENESS_PATH} for \
         {HEALTHY_STATUS}: {checks:#?}"
    );
    for role in Role::ALL.into_iter().filter(|role| !role.is_main()) {
        let checked = format!("server {role} \"${{{}}}\" check", role.addr_env());
        assert!(
            checks.contains(&checked),
            "backend {FALLBACK_CHECKS_BACKEND} lacks `{checked}`: {checks:#?}"
        );
        let track = format!("track {FALLBACK_CHECKS_BACKEND}/{role}");
        // Every server line of `role` in a backend that carries traffic.
        let lines: Vec<&str> = config
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with(&format!("server {role} ")))
            .filter(|line| !checks.iter().any(|check| check == line))
            .collect();
        assert!(!lines.is_empty(), "haproxy.cfg has no server {role}");
        for line in lines {
            assert!(
                line.ends_with(&track) || line.contains(&format!("{track} ")),
                "{line}"
            );
        }
    }
}

#[test]
fn maintenance_answers_carry_the_contracts_retry_after_and_json() {
    let config = config();
    let values: Vec<&str> = config
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split("hdr Retry-After ").skip(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(!values.is_empty(), "haproxy.cfg sends no Retry-After");
    for value in values {
        assert_eq!(
            value,
            RETRY_AFTER_S.to_string(),
            "a Retry-After in haproxy.cfg"
        );
    }
    let api = section(&config, "backend api");
    assert!(
        api.iter()
            .any(|line| line.starts_with("http-error status 503")
                && line.contains(&format!("string '{MAINTENANCE_JSON}'"))),
        "backend api's own 503 is not {MAINTENANCE_JSON}: {api:#?}"
    );
}

#[test]
fn haproxy_serves_exactly_the_contracts_files_within_one_buffer() {
    let config = config();
    let served: BTreeSet<&str> = quoted_after(&config, "file \"${WWW_DIR}/")
        .into_iter()
        .collect();
    let expected: BTreeSet<&str> = HAPROXY_SERVED_FILES.into_iter().collect();
    assert_eq!(
        served, expected,
        "the files haproxy.cfg answers from memory"
    );
    // The limit is HAProxy's default buffer: the configuration must not change it.
    let setting = |name: &str| -> Option<String> {
        config
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
    };
    assert_eq!(
        setting("tune.bufsize ").as_deref(),
        Some(HAPROXY_BUFSIZE.to_string().as_str()),
        "haproxy.cfg's tune.bufsize and contract::HAPROXY_BUFSIZE disagree"
    );
    assert_eq!(
        setting("tune.maxrewrite "),
        None,
        "haproxy.cfg sets tune.maxrewrite; HAPROXY_MAXREWRITE ({HAPROXY_MAXREWRITE}) assumes \
         the default"
    );
}

#[test]
fn the_recovery_hint_has_its_own_backend_that_outwaits_the_hold() {
    let config = config();
    let frontend = section(&config, "frontend public");
    let rule = format!(
        "use_backend hint if {{ path {} }}",
        contract::RECOVERY_HINT_PATH
    );
    let hint_rule = frontend.iter().position(|line| *line == rule);
    let api_rule = frontend
        .iter()
        .position(|line| line.starts_with("use_backend api "));
    assert!(
        matches!((hint_rule, api_rule), (Some(h), Some(a)) if h < a),
        "frontend public must send {} to backend hint before the API rule",
        contract::RECOVERY_HINT_PATH
    );
    let backend = section(&config, "backend hint");
    let timeout = backend
        .iter()
        .find_map(|line| line.strip_prefix("timeout server "))
        .expect("backend hint sets `timeout server`");
    let seconds: u32 = timeout
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("`timeout server {timeout}` is not whole seconds"));
    assert!(
        seconds * 1000 > contract::RECOVERY_HINT_HOLD_MAX_MS,
        "HAProxy would cut a quiet long-poll before api-fallback answers it"
    );
    let server = format!("server {} ", Role::ApiFallback.name());
    let maxconn = format!(" maxconn {} ", contract::RECOVERY_HINT_MAXCONN);
    assert!(
        backend.iter().any(|line| line.starts_with(&server)
            && !line.contains(" check")
            && format!("{line} ").contains(&maxconn)),
        "backend hint sends to api-fallback, unchecked, with{maxconn}(contract::RECOVERY_HINT_MAXCONN)"
    );
}
