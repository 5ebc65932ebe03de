//! The loop: ask the route, run the built-in calls of the reply (all at
//! once, each within `tool_timeout`), append the assistant message and one
//! `tool` message per call, ask again; until a reply calls no built-in tool,
//! calls a client tool (returned to the client, built-ins of that reply run
//! first), or `max_steps` replies were had (the last reply's built-in calls
//! are not run, and the answer ends with `finish_reason: "length"`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

use super::conversation::Conversation;
use super::events::Events;
use super::reply::{self, Call, Reply};
use super::sink::{Gone, Sink};
use super::Shared;
use crate::body;
use crate::error::ApiError;
use crate::pipeline::exchange::{AgentReport, Exchange, Report, RouteService, Served};
use crate::provider::Answer;
use crate::tools::{self, Outcome, ToolOutput, Toolbox};
use crate::wire::agent::{Status, StreamId, ToolEvent, ToolStep};
use crate::wire::chat::Endpoint;
use crate::wire::sse::SseReader;
use crate::wire::usage::{self, Usage};

pub async fn run(
    inner: RouteService,
    shared: Arc<Shared>,
    exchange: Exchange,
) -> Result<Served, ApiError> {
    let toolbox = shared
        .toolbox
        .clone()
        .map_err(|why| ApiError::Unavailable(format!("the agent loop cannot run: {why}")))?;
    let Exchange {
        body,
        plan,
        deadline,
        routes,
        caller,
        ..
    } = exchange;
    let mut body = body.into_tree();
    let client_tools = client_tools(&body)?;
    let messages = match body.remove("messages") {
        Some(Value::Array(messages)) => messages,
        _ => vec![],
    };
    let who = caller.clone().unwrap_or_default();
    let conversation = Conversation::open(shared.handles.store.clone(), &who, messages).await?;
    let mut tools = toolbox.schemas();
    if let Some(Value::Array(own)) = body.remove("tools") {
        tools.extend(own);
    }
    body.insert("tools".into(), tools.into());
    let streamed = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if streamed {
        // Every step's usage is counted, whatever the client asked for.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let agent = Loop {
        inner,
        shared,
        toolbox,
        template: Exchange {
            endpoint: Endpoint::Chat,
            body: body.into(),
            plan,
            deadline,
            routes,
            caller,
            // Every step's request is the loop's, not the client's as it came.
            native: None,
        },
        client_tools,
        conversation,
        usage: Usage::default(),
        steps: 0,
        attempts: 0,
        upstream_time: Duration::ZERO,
        compressed: None,
        ran: vec![],
    };
    if streamed {
        agent.stream(include_usage).await
    } else {
        agent.whole().await
    }
}

/// Built-in calls run at once from one reply; a model asking for hundreds
/// (of processes, of fetches) gets the rest refused.
const MAX_CALLS: usize = 16;

/// The names of the client's own tools; one named like a built-in is refused.
fn client_tools(body: &Map<String, Value>) -> Result<HashSet<String>, ApiError> {
    let mut names = HashSet::new();
    for (i, tool) in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = tool["function"]["name"]
            .as_str()
            .or_else(|| tool["name"].as_str())
            .unwrap_or_default();
        if tools::is_builtin(name) {
            return Err(ApiError::invalid(
                format!("tools[{i}]: `{name}` is the name of a built-in tool of this agent route; rename your tool"),
                Some("tools"),
            ));
        }
        names.insert(name.to_owned());
    }
    Ok(names)
}

/// How a reply ends the loop, or that it does not.
enum Next {
    Again,
    Done {
        /// The client's own calls, returned to it.
        calls: Vec<Call>,
        finish_reason: String,
        /// The assistant message still to append to the conversation (None
        /// when the built-in calls of the reply were run and it is in).
        message: Option<Value>,
    },
}

/// Why a streamed loop stopped early.
enum Stop {
    Gone,
    Failed(Value),
}

impl From<Gone> for Stop {
    fn from(_: Gone) -> Self {
        Stop::Gone
    }
}

struct Loop {
    inner: RouteService,
    shared: Arc<Shared>,
    toolbox: Arc<Toolbox>,
    /// Every step's request: the body without its messages.
    template: Exchange,
    client_tools: HashSet<String>,
    conversation: Conversation,
    usage: Usage,
    steps: u32,
    attempts: u32,
    upstream_time: Duration,
    compressed: Option<Report>,
    /// The built-in calls run, for answers that are not streamed.
    ran: Vec<ToolStep>,
}

impl Loop {
    /// One request down the route's stack with the conversation so far.
    async fn step(&mut self) -> Result<Served, ApiError> {
        self.steps += 1;
        let t = &self.template;
        let mut body = t.body.clone();
        body.tree_mut()
            .insert("messages".into(), self.conversation.upstream().into());
        let exchange = Exchange {
            endpoint: Endpoint::Chat,
            body,
            plan: t.plan.clone(),
            deadline: t.deadline,
            routes: t.routes.clone(),
            caller: t.caller.clone(),
            native: None,
        };
        let served = self.inner.clone().oneshot(exchange).await?;
        self.attempts += served.attempts;
        self.upstream_time += served.upstream_time;
        if served.compressed.is_some() {
            self.compressed.clone_from(&served.compressed);
        }
        Ok(served)
    }

    /// A step's usage, counted to the provider that answered it.
    fn account(&mut self, provider: &str, estimated_tokens: u32, usage: Option<Usage>) {
        if let Some(u) = usage {
            let handles = &self.shared.handles;
            handles.account(provider, None, estimated_tokens, u);
            reply::add(&mut self.usage, u);
        }
    }

    /// What `reply` means for the loop; runs its built-in calls.
    async fn next(&mut self, reply: &mut Reply, sink: Option<&Sink>) -> Result<Next, Gone> {
        reply.name_calls(self.steps);
        let (client, builtin): (Vec<Call>, Vec<Call>) = reply
            .calls
            .iter()
            .cloned()
            .partition(|c| self.client_tools.contains(&c.name));
        if builtin.is_empty() || self.steps >= self.shared.max_steps {
            let finish_reason = if builtin.is_empty() {
                reply.finish_reason.clone().unwrap_or_else(|| "stop".into())
            } else {
                "length".into()
            };
            return Ok(Next::Done {
                message: Some(reply.message(&client)),
                calls: client,
                finish_reason,
            });
        }
        let outputs = self.run_tools(&builtin, sink).await?;
        let message = reply.message(&reply.calls);
        self.conversation.messages.push(message);
        for (call, output) in builtin.iter().zip(outputs) {
            self.conversation
                .messages
                .push(json!({"role": "tool", "tool_call_id": call.id, "content": output}));
        }
        self.conversation.remember().await;
        if client.is_empty() {
            // A forced choice ("required", a named tool) was the first step's:
            // kept, no reply could ever end the loop.
            if let Some(choice) = self.template.body.tree_mut().get_mut("tool_choice") {
                if choice.is_object() || choice == "required" {
                    *choice = "auto".into();
                }
            }
            return Ok(Next::Again);
        }
        Ok(Next::Done {
            calls: client,
            finish_reason: "tool_calls".into(),
            message: None,
        })
    }

    /// Runs `calls` concurrently; their outputs in call order. Streamed,
    /// each start and end is an event, and a client that goes away stops
    /// them (dropping a tool's future kills what it started).
    async fn run_tools(
        &mut self,
        calls: &[Call],
        sink: Option<&Sink>,
    ) -> Result<Vec<String>, Gone> {
        let event = |call: &Call, status: Status, output: &str, took: Option<Duration>| ToolEvent {
            stream: sink.map(|s| s.stream.clone()).unwrap_or_default(),
            tool: call.name.clone(),
            call_id: call.id.clone(),
            status,
            emoji: tools::emoji(&call.name).into(),
            label: tools::label(&call.name, &call.arguments),
            arguments: call.arguments.clone(),
            output: output.to_owned(),
            duration_ms: took.map(|d| d.as_millis() as u64),
        };
        if let Some(sink) = sink {
            for call in calls {
                sink.tool(&event(call, Status::Running, "", None)).await?;
            }
        }
        let toolbox = &self.toolbox;
        let memory = &self.conversation.memory;
        let mut pending: FuturesUnordered<_> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| async move {
                let started = Instant::now();
                let output = if i < MAX_CALLS {
                    toolbox.run(&call.name, &call.arguments, memory).await
                } else {
                    ToolOutput {
                        outcome: Outcome::Error,
                        text: format!(
                            "error: at most {MAX_CALLS} tool calls run per reply; call the rest again"
                        ),
                    }
                };
                (i, output, started.elapsed())
            })
            .collect();
        let mut outputs = vec![String::new(); calls.len()];
        loop {
            let next = match sink {
                Some(sink) => tokio::select! {
                    _ = sink.closed() => return Err(Gone),
                    next = pending.next() => next,
                },
                None => pending.next().await,
            };
            let Some((i, output, took)) = next else { break };
            let call = &calls[i];
            let tool = if tools::is_builtin(&call.name) {
                call.name.as_str()
            } else {
                "unknown"
            };
            self.shared
                .handles
                .metrics
                .agent_tool_calls
                .with_label_values(&[tool, output.outcome.as_str()])
                .inc();
            if let Some(sink) = sink {
                let status = if output.outcome == Outcome::Ok {
                    Status::Completed
                } else {
                    Status::Failed
                };
                sink.tool(&event(call, status, &output.text, Some(took)))
                    .await?;
            }
            outputs[i] = output.text;
        }
        drop(pending);
        for (call, output) in calls.iter().zip(&outputs) {
            self.ran.push(ToolStep {
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                output: output.clone(),
            });
        }
        Ok(outputs)
    }

    fn observe_steps(&self) {
        let metrics = &self.shared.handles.metrics;
        metrics
            .agent_steps
            .with_label_values(&[&self.shared.route])
            .observe(f64::from(self.steps));
    }

    /// The loop for a client that wants one JSON answer.
    async fn whole(mut self) -> Result<Served, ApiError> {
        loop {
            let served = self.step().await?;
            let Answer::Json { body, .. } = &served.answer else {
                return Err(ApiError::AllFailed(vec![format!(
                    "{}: answered a stream to a request that asked for none",
                    served.provider
                )]));
            };
            let mut completion: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::AllFailed(vec![format!(
                    "{}: answered invalid JSON: {e}",
                    served.provider
                )])
            })?;
            if !completion
                .pointer("/choices/0")
                .is_some_and(Value::is_object)
            {
                return Err(ApiError::AllFailed(vec![format!(
                    "{}: answered without a choice",
                    served.provider
                )]));
            }
            usage::completion(&mut completion);
            let mut reply = Reply::from_completion(&completion);
            self.account(&served.provider, served.estimated_tokens, reply.usage);
            // Without a sink `next` cannot fail: a client that goes away
            // drops this whole future instead.
            let Ok(Next::Done {
                calls,
                finish_reason,
                message,
            }) = self.next(&mut reply, None).await
            else {
                continue;
            };
            let answer = reply.message(&calls);
            completion["choices"][0]["message"] = answer.clone();
            completion["choices"][0]["finish_reason"] = finish_reason.into();
            completion["usage"] = reply::usage_json(self.usage);
            self.observe_steps();
            let agent = AgentReport {
                steps: self.steps,
                tools: std::mem::take(&mut self.ran),
            };
            let Loop {
                usage,
                attempts,
                upstream_time,
                compressed,
                mut conversation,
                ..
            } = self;
            let mut seen = answer.clone();
            if let Some(m) = seen.as_object_mut() {
                m.remove("reasoning_content");
            }
            conversation.close(message, seen).await;
            return Ok(Served {
                answer: Answer::Json {
                    body: serde_json::to_vec(&completion).unwrap_or_default().into(),
                    usage: Some(usage),
                },
                provider: served.provider,
                model: served.model,
                attempts,
                upstream_time,
                estimated_tokens: 0,
                compressed,
                agent: Some(agent),
                native: false,
            });
        }
    }

    /// The loop for a streaming client: the first step is awaited (its
    /// failures are the request's, with failover), then the answer streams
    /// while the loop runs on.
    async fn stream(mut self, include_usage: bool) -> Result<Served, ApiError> {
        let served = self.step().await?;
        let Answer::Stream { first, rest } = served.answer else {
            return Err(ApiError::AllFailed(vec![format!(
                "{}: answered no stream to a request that asked for one",
                served.provider
            )]));
        };
        let mut events = Events::new(first, rest);
        let mut reply = Reply::default();
        // The attempt read the first event already: it names the stream.
        let shown = match events.next().await {
            Ok(Some(chunk)) => reply.add_chunk(&chunk).unwrap_or_default(),
            Ok(None) => Map::new(),
            Err(e) => {
                return Err(ApiError::AllFailed(vec![format!(
                    "{}: {}",
                    served.provider,
                    e.summary()
                )]))
            }
        };
        let stream = StreamId {
            id: if reply.id.is_empty() {
                format!("chatcmpl-{}", fastrand::u64(..))
            } else {
                reply.id.clone()
            },
            created: reply.created,
            model: if reply.model.is_empty() {
                served.model.clone()
            } else {
                reply.model.clone()
            },
        };
        let (tx, body) = body::channel(16);
        let sink = Sink::new(tx, stream);
        let mut role = Map::new();
        role.insert("role".into(), "assistant".into());
        role.insert("content".into(), "".into());
        let first = sink.chunk(role, None);
        let step = Step {
            provider: served.provider.clone(),
            estimated_tokens: served.estimated_tokens,
            events,
            reply,
        };
        let answer = Served {
            answer: Answer::Stream {
                first,
                // Our own events, each made from an answer already read within its bounds.
                rest: Some(SseReader::new(body, usize::MAX)),
            },
            provider: served.provider,
            model: served.model,
            attempts: served.attempts,
            upstream_time: served.upstream_time,
            estimated_tokens: served.estimated_tokens,
            compressed: served.compressed,
            agent: Some(AgentReport::default()),
            native: false,
        };
        let span = tracing::Span::current();
        tokio::spawn(
            self.stream_on(step, shown, sink, include_usage)
                .instrument(span),
        );
        Ok(answer)
    }

    /// The rest of a streamed loop, in its own task.
    async fn stream_on(
        mut self,
        step: Step,
        shown: Map<String, Value>,
        sink: Sink,
        include_usage: bool,
    ) {
        let outcome = self.stream_steps(step, shown, &sink, include_usage).await;
        self.observe_steps();
        match outcome {
            Ok(()) => {}
            Err(Stop::Failed(error)) => sink.fail(error).await,
            Err(Stop::Gone) => {
                tracing::info!(steps = self.steps, "client went away; agent loop stopped")
            }
        }
    }

    /// Streams step after step until the loop is done. The session is kept
    /// before the stream's end, so the client's next turn finds it on any
    /// replica.
    async fn stream_steps(
        &mut self,
        mut step: Step,
        shown: Map<String, Value>,
        sink: &Sink,
        include_usage: bool,
    ) -> Result<(), Stop> {
        let mut text = String::new();
        let mut show = Some(shown).filter(|d| !d.is_empty());
        loop {
            loop {
                if let Some(delta) = show.take() {
                    if let Some(t) = delta.get("content").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                    sink.delta(delta).await?;
                }
                let next = tokio::select! {
                    _ = sink.closed() => return Err(Stop::Gone),
                    next = step.events.next() => next,
                };
                match next {
                    Ok(Some(chunk)) => show = step.reply.add_chunk(&chunk),
                    Ok(None) => break,
                    Err(e) => {
                        let handles = &self.shared.handles;
                        let outcome = e.kind.as_str();
                        handles
                            .metrics
                            .upstream_requests
                            .with_label_values(&[&step.provider, outcome])
                            .inc();
                        tracing::warn!(provider = %step.provider, outcome, "agent step's stream failed after it began: {}", e.message);
                        let mut error = e.to_openai_json();
                        error["error"]["message"] =
                            format!("{}: {}", step.provider, e.message).into();
                        return Err(Stop::Failed(error));
                    }
                }
            }
            self.account(&step.provider, step.estimated_tokens, step.reply.usage);
            if let Next::Done {
                calls,
                finish_reason,
                message,
            } = self.next(&mut step.reply, Some(sink)).await?
            {
                let json_calls: Vec<Value> = calls.iter().map(Call::to_json).collect();
                let mut seen = json!({"role": "assistant", "content": text});
                if !json_calls.is_empty() {
                    seen["tool_calls"] = json_calls.clone().into();
                }
                let usage = include_usage.then(|| reply::usage_json(self.usage));
                self.conversation.close(message, seen).await;
                sink.finish(json_calls, &finish_reason, usage).await?;
                return Ok(());
            }
            let served = tokio::select! {
                _ = sink.closed() => return Err(Stop::Gone),
                served = self.step() => served.map_err(|e| Stop::Failed(e.to_json()))?,
            };
            let Answer::Stream { first, rest } = served.answer else {
                let error =
                    ApiError::AllFailed(vec![format!("{}: answered no stream", served.provider)]);
                return Err(Stop::Failed(error.to_json()));
            };
            step = Step {
                provider: served.provider,
                estimated_tokens: served.estimated_tokens,
                events: Events::new(first, rest),
                reply: Reply::default(),
            };
        }
    }
}

/// A streamed step being read.
struct Step {
    provider: String,
    estimated_tokens: u32,
    events: Events,
    reply: Reply,
}
