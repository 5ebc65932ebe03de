use crate::support::mock_upstream::MockUpstream;

fn config(url: &str, models: &[&str]) -> hermes_proxy::config::Config {
    let targets: Vec<String> = models
        .iter()
        .map(|m| format!("{{ provider = \"up\", model = \"{m}\" }}"))
        .collect();
    let toml = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{url}\"\n[routes.main]\ntargets = [{}]\n",
        targets.join(", ")
    );
    hermes_proxy::config::parse(&toml, "probe.toml", &|_| None).unwrap()
}

#[tokio::test]
async fn models_probe_flags_ids_the_provider_does_not_list() {
    let up = MockUpstream::start().await; // lists only "mock-model"
    assert_eq!(
        hermes_proxy::cli::models(&config(&up.base_url(), &["mock-model"]), true).await,
        0
    );
    let retired = config(&up.base_url(), &["mock-model", "kimi-k2-0905-preview"]);
    assert_eq!(hermes_proxy::cli::models(&retired, true).await, 1);
    assert!(up.probes().iter().all(|p| p.path == "/v1/models"));
    // without --probe nothing is asked
    let before = up.probes().len();
    assert_eq!(hermes_proxy::cli::models(&retired, false).await, 0);
    assert_eq!(up.probes().len(), before);
}
