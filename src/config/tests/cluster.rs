//! `[cluster]`: read with its defaults, its URL never shown.

use std::time::Duration;

use super::{error_on, no_env, parse_err, parse_ok, MINIMAL};

#[test]
fn cluster_is_read_with_defaults_and_its_url_stays_hidden() {
    let text = format!("[cluster]\nredis_url_env = \"REDIS\"\n{MINIMAL}");
    let env = |var: &str| (var == "REDIS").then(|| "redis://:pw-secret@r:6379/0".to_string());
    let config = parse_ok(&text, &env);
    let cluster = config.cluster.as_ref().unwrap();
    assert_eq!(
        cluster.redis_url.as_ref().unwrap().expose(),
        "redis://:pw-secret@r:6379/0"
    );
    assert_eq!(
        (cluster.prefix.as_str(), cluster.timeout),
        ("hermes", Duration::from_millis(50))
    );
    assert!(!format!("{config:?}").contains("pw-secret"));
    let shown = config.to_toml();
    assert!(!shown.contains("pw-secret"), "{shown}");
    assert!(
        shown.contains("redis_url_env = \"REDIS\"  # set (value hidden)"),
        "{shown}"
    );
    assert_eq!(parse_ok(&shown, &env).cluster, config.cluster, "{shown}");

    // Unset: a warning, and the replica runs alone.
    let alone = parse_ok(&text, &no_env);
    assert!(alone.cluster.unwrap().redis_url.is_none());
    assert!(
        alone
            .warnings
            .iter()
            .any(|w| w.contains("REDIS is not set")),
        "{:?}",
        alone.warnings
    );
    assert!(parse_ok(MINIMAL, &no_env).cluster.is_none());

    let errors = parse_err(&format!(
        "[cluster]\nredis_url = \"redis://x\"\nprefix = \"\"\ntimeout = \"0s\"\n{MINIMAL}"
    ));
    assert!(
        error_on(&errors, 1).message.contains("redis_url_env"),
        "{errors:?}"
    );
    assert!(
        error_on(&errors, 2).message.contains("redis_url"),
        "{errors:?}"
    );
    assert!(
        error_on(&errors, 3).message.contains("prefix"),
        "{errors:?}"
    );
    assert!(
        error_on(&errors, 4).message.contains("longer than zero"),
        "{errors:?}"
    );
}
