//! The compression hook of the attempt loop: pre-flight, a conversation that
//! does not fit the target's known window is compressed before it is sent;
//! on a context-length error, the limit the upstream states is learned, the
//! conversation compressed for it, and the same target tried again (at most
//! `MAX_COMPRESSIONS` rounds). A route with `compression = "off"` gets the
//! upstream's error untouched.

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::summarizer::RoutedSummarizer;
use super::window::stated_limit;
use super::{compress, fits, TooLong};
use crate::config::Compression;
use crate::error::{ApiError, ErrorKind, UpstreamError};
use crate::pipeline::failover::hooks::{AttemptHook, Ctx, Phase};
use crate::pipeline::Handles;
use crate::route::Target;
use futures_util::future::BoxFuture;

/// At most this many compression rounds per request.
const MAX_COMPRESSIONS: u32 = 3;

pub struct FitHook {
    handles: Arc<Handles>,
    settings: Compression,
}

impl FitHook {
    pub fn new(handles: Arc<Handles>, settings: Compression) -> Self {
        FitHook { handles, settings }
    }
}

/// Compression state across one request's attempts (kept in `Ctx::state`).
#[derive(Default, Clone)]
struct Fitting {
    /// The smallest window the conversation was compressed for.
    compressed_for: Option<u32>,
    rounds: u32,
}

impl Fitting {
    /// A conversation compressed for a window fits every larger one.
    fn needed_for(&self, window: u32) -> bool {
        self.compressed_for.is_none_or(|done| window < done)
    }
}

impl AttemptHook for FitHook {
    fn before<'a>(&'a self, ctx: &'a mut Ctx, target: &'a Target) -> BoxFuture<'a, Phase> {
        Box::pin(async move {
            if !ctx.exchange.plan.compression {
                return Phase::Go;
            }
            let windows = &self.handles.windows;
            let Some(window) = windows.window(&self.handles.client, target).await else {
                return Phase::Go;
            };
            let fitting = ctx.state.get_or_insert_default::<Fitting>();
            if !fitting.needed_for(window) || fits(&ctx.exchange.body, window) {
                return Phase::Go;
            }
            match self.shrink(ctx, window).await {
                Ok(()) => Phase::Go,
                Err(too_long) => Phase::Skip {
                    line: format!("{}: {too_long}", target.provider.name),
                    rate_limited: None,
                },
            }
        })
    }

    fn after_error<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        target: &'a Target,
        err: &'a UpstreamError,
    ) -> BoxFuture<'a, Phase> {
        Box::pin(async move {
            if err.kind != ErrorKind::ContextLength {
                return Phase::Go;
            }
            let provider = target.provider.name.as_str();
            let windows = &self.handles.windows;
            // The upstream's own verdict beats our estimate and our config:
            // remember the limit it states, also for requests that are not
            // compressed here (a summarizer plans its next request with it).
            if let Some(limit) = stated_limit(&err.message) {
                windows.learn(provider, &target.model, limit);
            }
            if !ctx.exchange.plan.compression {
                return Phase::Fail(ApiError::Upstream(err.clone()));
            }
            let fitting = ctx.state.get_or_insert_default::<Fitting>().clone();
            let known = windows.of(target);
            let window = match (known, fitting.compressed_for) {
                // Refused although it was compressed for this window: the
                // upstream counts more tokens than we do; aim lower.
                (Some(known), Some(tried)) if known >= tried => tried * 3 / 4,
                (Some(known), _) => known,
                (None, _) => {
                    let messages = ctx.exchange.body.tree().get("messages");
                    super::count(messages.and_then(Value::as_array).map_or(&[][..], |m| m)) * 3 / 4
                }
            };
            if fitting.rounds >= MAX_COMPRESSIONS {
                let last = fitting
                    .compressed_for
                    .map(|w| format!(", the last for {w} tokens"))
                    .unwrap_or_default();
                return Phase::Fail(ApiError::ContextLength(format!(
                    "{provider}: {} (still too long after {MAX_COMPRESSIONS} compressions{last})",
                    err.message
                )));
            }
            match self.shrink(ctx, window).await {
                Ok(()) => Phase::Again,
                Err(too_long) => {
                    let aim = match known {
                        Some(known) if known != window => format!(
                            " (aiming below the {known}-token window, which the upstream counts fuller than we do)"
                        ),
                        Some(_) => String::new(),
                        None => " (the upstream stated no window; aiming below the prompt it refused)"
                            .to_owned(),
                    };
                    Phase::Skip {
                        line: format!("{provider}: {}; {too_long}{aim}", err.message),
                        rate_limited: None,
                    }
                }
            }
        })
    }
}

impl FitHook {
    async fn shrink(&self, ctx: &mut Ctx, window: u32) -> Result<(), TooLong> {
        let fitting = ctx.state.get_or_insert_default::<Fitting>();
        fitting.rounds += 1;
        let exchange = &mut ctx.exchange;
        let label = &exchange.plan.label;
        let model = exchange.body.model().to_owned();
        let mut summarizer = RoutedSummarizer {
            handles: &self.handles,
            routes: &exchange.routes,
            route: self.settings.summarizer.as_deref(),
            model: &exchange.plan.requested,
            deadline: exchange.deadline,
        };
        let started = Instant::now();
        let result = compress(
            exchange.body.tree_mut(),
            window,
            &self.settings.settings,
            &mut summarizer,
        )
        .await;
        let outcome = match &result {
            Ok(r) if r.steps.contains(&"dropped") => "dropped",
            Ok(_) => "compressed",
            Err(_) => "too_long",
        };
        self.handles
            .metrics
            .compressions
            .with_label_values(&[label, outcome])
            .inc();
        match result {
            Ok(report) => {
                tracing::info!(
                    route = %label,
                    model,
                    window,
                    ms = started.elapsed().as_millis() as u64,
                    "compressed the conversation: {}",
                    report.header()
                );
                ctx.state.get_or_insert_default::<Fitting>().compressed_for = Some(window);
                ctx.compressed = Some(match ctx.compressed.take() {
                    Some(mut earlier) => {
                        earlier.steps.extend(report.steps);
                        earlier.after = report.after;
                        earlier
                    }
                    None => report,
                });
                Ok(())
            }
            Err(too_long) => {
                tracing::warn!(route = %label, window, "cannot compress enough: {too_long}");
                ctx.too_long = true;
                Err(too_long)
            }
        }
    }
}
