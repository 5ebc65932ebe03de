// End-to-end test: the official OpenAI Node SDK (npm `openai`) against the
// proxy binary, in front of a scripted Chat Completions upstream served by
// this script: chat, streams (also one the client aborts), tool calls (whole
// and streamed, with the tool result sent back), and the SDK's typed errors.
//
//   node tests/e2e/node_sdk_e2e.mjs
//
// Environment:
//   HERMES_BIN                 the proxy binary (default: target/release/hermes-proxy)
//   HERMES_E2E_NODE_MODULES    the node_modules holding `openai`
//                              (default: target/ci-node/node_modules, where .ci/run puts it)
//
// Prints one line per case, then exactly one summary line `N passed, M
// failed`; exit status 1 if any case failed or the proxy did not stop
// cleanly on SIGTERM.

import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const MODULES =
  process.env.HERMES_E2E_NODE_MODULES || join(REPO, "target", "ci-node", "node_modules");
const BIN =
  process.env.HERMES_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(REPO, "target"), "release", "hermes-proxy");

// The SDK is installed outside the repository's module tree, so it is
// resolved from there rather than by a bare `import "openai"`.
const require = createRequire(join(MODULES, "resolve-from-here.js"));
const sdk = await import(pathToFileURL(require.resolve("openai")).href);
const OpenAI = sdk.OpenAI ?? sdk.default?.OpenAI ?? sdk.default;
const { version } = JSON.parse(readFileSync(join(MODULES, "openai", "package.json"), "utf8"));

const SAID = "the quick brown fox node-e2e-41b7";

// ------------------------------------------------------------ the upstream

function words(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => p.text ?? "").join("");
  return "";
}

/// What the scripted model says to a request: a tool call while tools are
/// offered and no tool has answered yet, else text.
function scripted(body) {
  const last = body.messages[body.messages.length - 1];
  if (body.tools?.length && last.role !== "tool") {
    return {
      toolCalls: [
        {
          id: "call_weather_1",
          type: "function",
          function: { name: "get_weather", arguments: JSON.stringify({ city: "Paris" }) },
        },
      ],
    };
  }
  if (last.role === "tool") return { text: `It is ${JSON.parse(last.content).sky} in Paris.` };
  return { text: `echo: ${textOf(last.content)}` };
}

function usageFor(body, text) {
  const prompt = body.messages.reduce((n, m) => n + words(textOf(m.content)) + 4, 3);
  const completion = Math.max(1, words(text));
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function sendJson(res, status, value, headers = {}) {
  const data = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(data);
}

function answerWhole(res, body, reply) {
  const message = reply.toolCalls
    ? { role: "assistant", content: null, tool_calls: reply.toolCalls }
    : { role: "assistant", content: reply.text };
  sendJson(res, 200, {
    id: "chatcmpl-node-e2e",
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [{ index: 0, message, finish_reason: reply.toolCalls ? "tool_calls" : "stop" }],
    usage: usageFor(body, reply.text ?? reply.toolCalls[0].function.arguments),
  });
}

function answerStream(res, body, reply) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const base = {
    id: "chatcmpl-node-e2e",
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
    model: body.model,
  };
  const send = (choices, extra = {}) =>
    res.write(`data: ${JSON.stringify({ ...base, choices, ...extra })}\n\n`);
  const delta = (d, finish = null) => send([{ index: 0, delta: d, finish_reason: finish }]);
  delta({ role: "assistant", content: "" });
  if (reply.toolCalls) {
    const call = reply.toolCalls[0];
    delta({ tool_calls: [{ index: 0, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }] });
    // Arguments arrive in pieces, as real providers send them.
    const args = call.function.arguments;
    const cut = Math.floor(args.length / 2);
    delta({ tool_calls: [{ index: 0, function: { arguments: args.slice(0, cut) } }] });
    delta({ tool_calls: [{ index: 0, function: { arguments: args.slice(cut) } }] });
    delta({}, "tool_calls");
  } else {
    for (const [i, w] of reply.text.split(" ").entries()) delta({ content: (i ? " " : "") + w });
    delta({}, "stop");
  }
  if (body.stream_options?.include_usage) {
    send([], { usage: usageFor(body, reply.text ?? reply.toolCalls[0].function.arguments) });
  }
  res.end("data: [DONE]\n\n");
}

/// A stream that sends a word every 50 ms for a long while, for the client to abort.
function endlessStream(res, body) {
  res.writeHead(200, { "content-type": "text/event-stream" });
  let n = 0;
  const timer = setInterval(() => {
    const chunk = { id: "chatcmpl-slow", object: "chat.completion.chunk", created: 0, model: body.model,
      choices: [{ index: 0, delta: { content: `w${n++} ` }, finish_reason: null }] };
    res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  }, 50);
  const stop = () => {
    clearInterval(timer);
    upstreamClosed += 1;
  };
  res.on("close", stop);
}

let upstreamClosed = 0;

const upstream = http.createServer((req, res) => {
  let raw = "";
  req.on("data", (c) => (raw += c));
  req.on("end", () => {
    if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
      // The proxy asks loopback servers for their context window; this one
      // has none to tell.
      sendJson(res, 404, { error: { message: "no such route", type: "invalid_request_error" } });
      return;
    }
    const body = JSON.parse(raw);
    if (body.model === "limited-model") {
      sendJson(
        res,
        429,
        { error: { message: "Rate limit reached for requests", type: "requests", code: "rate_limit_exceeded" } },
        { "retry-after": "30" },
      );
      return;
    }
    if (body.model === "slow-model") {
      endlessStream(res, body);
      return;
    }
    const reply = scripted(body);
    if (body.stream) answerStream(res, body, reply);
    else answerWhole(res, body, reply);
  });
});

// ------------------------------------------------------------ the proxy

function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function startProxy(work, config) {
  const port = await freePort();
  const log = openSync(join(work, "proxy.log"), "a");
  // HERMES_* from the caller's shell would change what the proxy serves.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith("HERMES_") && k !== "MOONSHOT_API_KEY" && k !== "OPENROUTER_API_KEY",
    ),
  );
  const proc = spawn(BIN, ["--config", config, "--listen", `127.0.0.1:${port}`], {
    cwd: work,
    env,
    stdio: ["ignore", log, log],
  });
  let exited = null;
  proc.on("exit", (code, signal) => (exited = { code, signal }));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`the proxy exited with ${JSON.stringify(exited)}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/ready`);
      if (r.status === 200) return { proc, port, exited: () => exited };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error("the proxy did not become ready within 30 s");
}

/// SIGTERM; the proxy must exit 0 within 10 s.
async function stopProxy(proxy) {
  proxy.proc.kill("SIGTERM");
  for (let i = 0; i < 100 && !proxy.exited(); i++) await sleep(100);
  const exited = proxy.exited();
  if (!exited) {
    proxy.proc.kill("SIGKILL");
    return "the proxy did not exit within 10 s of SIGTERM";
  }
  return exited.code === 0 ? null : `the proxy exited with ${JSON.stringify(exited)} after SIGTERM`;
}

// ------------------------------------------------------------ the cases

function assert(ok, message) {
  if (!ok) throw new Error(message);
}

function checkUsage(usage, where) {
  assert(usage, `${where}: no usage`);
  for (const f of ["prompt_tokens", "completion_tokens", "total_tokens"]) {
    assert(Number.isInteger(usage[f]) && usage[f] >= 0, `${where}: usage.${f} = ${usage[f]}`);
  }
  assert(usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, `${where}: total != sum`);
}

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

function cases(client) {
  const user = (content) => [{ role: "user", content }];
  return [
    ["chat: answer, usage, x-hermes-* headers", async () => {
      const { data, response } = await client.chat.completions
        .create({ model: "main", messages: user(SAID) })
        .withResponse();
      assert(response.headers.get("x-hermes-route") === "main", `route ${response.headers.get("x-hermes-route")}`);
      assert(response.headers.get("x-hermes-provider") === "scripted", "provider header");
      assert(response.headers.get("x-request-id"), "x-request-id missing");
      assert(data.object === "chat.completion", data.object);
      assert(data.choices[0].message.content === `echo: ${SAID}`, data.choices[0].message.content);
      assert(data.choices[0].finish_reason === "stop", data.choices[0].finish_reason);
      checkUsage(data.usage, "chat");
    }],
    ["stream with include_usage", async () => {
      const stream = await client.chat.completions.create({
        model: "main", messages: user(SAID), stream: true, stream_options: { include_usage: true },
      });
      const chunks = [];
      for await (const chunk of stream) chunks.push(chunk);
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
      assert(text === `echo: ${SAID}`, `streamed ${JSON.stringify(text)}`);
      assert(chunks.length > 3, `${chunks.length} chunks`);
      const last = chunks[chunks.length - 1];
      assert(last.choices.length === 0, "the usage chunk has choices");
      checkUsage(last.usage, "stream");
    }],
    ["stream helper: finalChatCompletion", async () => {
      const runner = client.chat.completions.stream({ model: "main", messages: user("helper") });
      const final = await runner.finalChatCompletion();
      assert(final.choices[0].message.content === "echo: helper", final.choices[0].message.content);
    }],
    ["a stream the client aborts ends upstream too, and the proxy serves on", async () => {
      const before = upstreamClosed;
      const stream = await client.chat.completions.create({
        model: "slow", messages: user("go on forever"), stream: true,
      });
      let seen = 0;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content && ++seen === 3) break; // aborts the request
      }
      for (let i = 0; i < 50 && upstreamClosed === before; i++) await sleep(100);
      assert(upstreamClosed > before, "the upstream stream was left open");
      const again = await client.chat.completions.create({ model: "main", messages: user("still there?") });
      assert(again.choices[0].message.content === "echo: still there?", "no answer after the abort");
    }],
    ["tools: a call, then the answer to its result", async () => {
      const messages = user("What is the weather in Paris?");
      const first = await client.chat.completions.create({ model: "main", messages, tools: [WEATHER_TOOL] });
      const choice = first.choices[0];
      assert(choice.finish_reason === "tool_calls", choice.finish_reason);
      const call = choice.message.tool_calls?.[0];
      assert(call?.function.name === "get_weather", JSON.stringify(choice.message));
      assert(JSON.parse(call.function.arguments).city === "Paris", call.function.arguments);
      messages.push(choice.message, { role: "tool", tool_call_id: call.id, content: JSON.stringify({ sky: "sunny" }) });
      const second = await client.chat.completions.create({ model: "main", messages, tools: [WEATHER_TOOL] });
      assert(second.choices[0].message.content === "It is sunny in Paris.", second.choices[0].message.content);
    }],
    ["tools streamed: the call's arguments reassemble", async () => {
      const runner = client.chat.completions.stream({
        model: "main", messages: user("Weather in Paris?"), tools: [WEATHER_TOOL],
      });
      const final = await runner.finalChatCompletion();
      const call = final.choices[0].message.tool_calls?.[0];
      assert(call?.id === "call_weather_1", JSON.stringify(final.choices[0].message));
      assert(JSON.parse(call.function.arguments).city === "Paris", call.function.arguments);
      assert(final.choices[0].finish_reason === "tool_calls", final.choices[0].finish_reason);
    }],
    ["errors: unknown model -> NotFoundError model_not_found", async () => {
      try {
        await client.chat.completions.create({ model: "no-such-model-node", messages: user("hi") });
      } catch (e) {
        assert(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
        assert(e.status === 404 && e.code === "model_not_found", `${e.status} ${e.code}`);
        return;
      }
      throw new Error("no error for an unknown model");
    }],
    ["errors: messages not a list -> BadRequestError naming the field", async () => {
      try {
        await client.chat.completions.create({ model: "main", messages: "not a list" });
      } catch (e) {
        assert(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert(e.status === 400 && e.message.includes("messages"), `${e.status} ${e.message}`);
        return;
      }
      throw new Error("no error for messages that is not a list");
    }],
    ["errors: a rate-limited upstream -> RateLimitError with retry-after", async () => {
      try {
        await client.chat.completions.create({ model: "limited", messages: user("hi") });
      } catch (e) {
        assert(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
        assert(e.status === 429, `${e.status}`);
        assert(Number(e.headers?.get?.("retry-after") ?? e.headers?.["retry-after"]) > 0, "no retry-after");
        return;
      }
      throw new Error("no error for a rate-limited upstream");
    }],
  ];
}

// ------------------------------------------------------------ main

async function main() {
  await new Promise((ok) => upstream.listen(0, "127.0.0.1", ok));
  const base = `http://127.0.0.1:${upstream.address().port}/v1`;
  const work = mkdtempSync(join(tmpdir(), "hermes-node-e2e-"));
  const config = join(work, "routes.toml");
  writeFileSync(
    config,
    `[providers.scripted]
kind = "openai"
base_url = "${base}"

[routes.main]
targets = [{ provider = "scripted", model = "scripted-model" }]

[routes.slow]
targets = [{ provider = "scripted", model = "slow-model" }]

[routes.limited]
targets = [{ provider = "scripted", model = "limited-model" }]
`,
  );
  let passed = 0;
  let failed = 0;
  let proxy = null;
  try {
    proxy = await startProxy(work, config);
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${proxy.port}/v1`,
      apiKey: "sk-node-e2e-dummy",
      maxRetries: 0, // a retried failure must not look like a pass
      timeout: 30_000,
    });
    console.log(`openai Node SDK ${version} on node ${process.version} against ${BIN}`);
    for (const [name, run] of cases(client)) {
      try {
        await run();
        passed += 1;
        console.log(`ok    ${name}`);
      } catch (e) {
        failed += 1;
        console.log(`FAIL  ${name}: ${e?.stack ?? e}`);
      }
    }
  } catch (e) {
    failed += 1;
    console.log(`FAIL  start: ${e?.stack ?? e}`);
  } finally {
    if (proxy) {
      const problem = await stopProxy(proxy);
      if (problem) {
        failed += 1;
        console.log(`FAIL  clean stop: ${problem}`);
      } else {
        passed += 1;
        console.log("ok    clean stop: exit 0 after SIGTERM");
      }
    }
    upstream.closeAllConnections?.();
    upstream.close();
    if (failed) {
      console.log("---- proxy log ----");
      try {
        console.log(readFileSync(join(work, "proxy.log"), "utf8").split("\n").slice(-40).join("\n"));
      } catch {
        // no log
      }
    }
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

await main();
