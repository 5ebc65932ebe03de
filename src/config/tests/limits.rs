//! `[server]`'s limits on clients and upstreams, and `max_cooldown`.

use std::time::Duration;

use super::{error_on, no_env, parse_err, parse_ok, MINIMAL};

#[test]
fn server_limits_and_max_cooldown_have_spec_defaults_and_are_checked() {
    let config = parse_ok(MINIMAL, &no_env);
    let s = &config.server;
    let timeouts = (s.header_read_timeout, s.body_read_timeout, s.idle_timeout);
    assert_eq!(timeouts, (secs(10), secs(30), secs(60)));
    let sizes = (s.max_connections, s.max_answer_bytes, s.max_event_bytes);
    assert_eq!(sizes, (10_000, 33_554_432, 8_388_608));
    assert_eq!(config.defaults.max_cooldown, secs(3600));
    let text = format!(
        "[server]\nmax_connections = 0\nidle_timeout = \"0s\"\n[defaults]\ncooldown = \"2h\"\n{MINIMAL}"
    );
    let errors = parse_err(&text);
    assert!(error_on(&errors, 2)
        .message
        .contains("must be a positive integer"));
    assert!(error_on(&errors, 3).message.contains("idle_timeout"));
    let cooldown = &error_on(&errors, 4).message;
    assert!(
        cooldown.contains("`cooldown` (2h) is longer than `max_cooldown` (1h)"),
        "{cooldown}"
    );
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
