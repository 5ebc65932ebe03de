//! The agent loop's built-in tools and their sandbox.
//!
//! The loop (in `pipeline::agent`) offers [`Toolbox::schemas`] to the model
//! and runs each call it gets back through [`Toolbox::run`], which never
//! fails the request: a failure becomes a [`ToolOutput`] whose text begins
//! `error:` and goes back to the model.
//!
//! One file per tool, its JSON schema beside its code; [`workspace`] holds
//! the path sandbox every file tool goes through, [`web_policy`] the address
//! policy of `web_fetch`, [`terminal`] the process jail.

mod list_files;
mod memory;
mod read_file;
mod search_files;
mod terminal;
mod web_fetch;
mod web_policy;
mod workspace;
mod write_file;

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::KNOWN_TOOLS;

pub use memory::{Memory, MEMORY_LIMIT};
pub use web_policy::WebPolicy;

/// What `[agent]` in routes.toml configures, in the shape the tools need.
pub struct Settings {
    /// Created if missing; canonicalized by [`Toolbox::new`].
    pub workspace: PathBuf,
    /// Tool names (see [`is_builtin`]), in the order they are offered.
    pub enabled: Vec<String>,
    /// Program names `terminal` may run.
    pub terminal_allow: Vec<String>,
    /// Applied to every call by [`Toolbox::run`].
    pub timeout: Duration,
    pub web: WebPolicy,
    /// Files of the proxy's own the tools must never reach (the store, with
    /// every key's responses): a workspace that holds one is refused.
    pub private: Vec<PathBuf>,
}

impl Settings {
    pub fn from_config(agent: &crate::config::Agent) -> Settings {
        Settings {
            workspace: PathBuf::from(&agent.workspace),
            enabled: agent.tools.clone(),
            terminal_allow: agent.terminal_allow.clone(),
            timeout: agent.tool_timeout,
            web: WebPolicy {
                allow_private: agent.web_allow_private,
                ..WebPolicy::default()
            },
            private: vec![],
        }
    }
}

/// Whether `file` (which may not exist yet) is inside `root` (canonical).
fn inside(root: &std::path::Path, file: &std::path::Path) -> bool {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return false;
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.join(name).starts_with(root)
}

/// Every built-in tool: the names routes.toml's `[agent] tools` accepts.
pub fn is_builtin(name: &str) -> bool {
    KNOWN_TOOLS.contains(&name)
}

/// The emoji of a tool's progress events.
pub fn emoji(name: &str) -> &'static str {
    match name {
        "read_file" => "📖",
        "write_file" => "✍️",
        "list_files" => "📂",
        "search_files" => "🔎",
        "web_fetch" => "🌐",
        "memory" => "🧠",
        "terminal" => "💻",
        _ => "🔧",
    }
}

/// Longest [`label`], in characters.
const LABEL_CHARS: usize = 60;

/// A one-line preview of a call's arguments for progress events: the path,
/// pattern, url, command or memory action; empty when there is none.
pub fn label(name: &str, arguments: &str) -> String {
    let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    let field = |key: &str| args.get(key).and_then(Value::as_str).unwrap_or("");
    let text = match name {
        "read_file" | "write_file" => field("path").to_owned(),
        "list_files" => match field("path") {
            "" => ".".to_owned(),
            path => path.to_owned(),
        },
        "search_files" => match field("path") {
            "" => field("pattern").to_owned(),
            path => format!("{} in {path}", field("pattern")),
        },
        "web_fetch" => field("url").to_owned(),
        "terminal" => field("command").to_owned(),
        "memory" => match field("content") {
            "" => field("action").to_owned(),
            content => format!("{}: {content}", field("action")),
        },
        _ => String::new(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= LABEL_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    /// The sandbox said no: a path outside the workspace, a private address,
    /// a program not allowed.
    Refused,
}

impl Outcome {
    /// The `outcome` label of `hermes_agent_tool_calls_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
        }
    }
}

/// What goes back to the model as the call's `tool` message.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub outcome: Outcome,
    /// Begins with `error: ` when `outcome` is not `Ok`.
    pub text: String,
}

/// Why a call did not succeed; becomes a [`ToolOutput`].
#[derive(Debug)]
struct Fail {
    outcome: Outcome,
    message: String,
}

impl Fail {
    fn error(message: impl Into<String>) -> Fail {
        Fail {
            outcome: Outcome::Error,
            message: message.into(),
        }
    }

    fn refused(message: impl Into<String>) -> Fail {
        Fail {
            outcome: Outcome::Refused,
            message: format!("refused: {}", message.into()),
        }
    }
}

impl From<Fail> for ToolOutput {
    fn from(fail: Fail) -> ToolOutput {
        ToolOutput {
            outcome: fail.outcome,
            text: format!("error: {}", fail.message),
        }
    }
}

type Done = Result<String, Fail>;

/// A tool's arguments; an empty string counts as `{}` (some models send it
/// for a call without arguments).
fn parse<T: DeserializeOwned>(tool: &str, arguments: &str) -> Result<T, Fail> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(text)
        .map_err(|e| Fail::error(format!("invalid arguments for {tool}: {e}")))
}

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut.
fn cap(mut text: String, max: usize, what: &str) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(
        "\n[cut: {what} continues for {dropped} more bytes]"
    ));
    text
}

/// Runs blocking file work off the async threads; a panic in it becomes an
/// error instead of taking the caller down.
async fn blocking(work: impl FnOnce() -> Done + Send + 'static) -> Done {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Fail::error(format!("the tool failed: {e}"))))
}

/// The built-in tools of one configuration; shared by every agent request.
pub struct Toolbox {
    enabled: Vec<&'static str>,
    workspace: workspace::Workspace,
    terminal: terminal::Terminal,
    web: web_fetch::Web,
    timeout: Duration,
}

impl Toolbox {
    /// Creates and canonicalizes the workspace, builds the web client and,
    /// when `terminal` is enabled, probes for a working bubblewrap.
    pub fn new(settings: Settings, connect_timeout: Duration) -> Result<Toolbox, String> {
        let mut enabled: Vec<&'static str> = vec![];
        for name in &settings.enabled {
            let Some(known) = KNOWN_TOOLS.iter().find(|n| *n == name) else {
                return Err(format!("unknown tool `{name}`"));
            };
            if !enabled.contains(known) {
                enabled.push(known);
            }
        }
        let workspace = workspace::Workspace::create(&settings.workspace)?;
        for file in &settings.private {
            if inside(workspace.root(), file) {
                return Err(format!(
                    "the workspace {} holds {}, which the tools could then read: \
                     put the workspace beside it",
                    workspace.root().display(),
                    file.display()
                ));
            }
        }
        let wants_terminal = enabled.contains(&"terminal");
        let terminal =
            terminal::Terminal::new(settings.terminal_allow, workspace.root(), wants_terminal);
        if wants_terminal && !terminal.jailed() {
            tracing::warn!(
                workspace = %workspace.root().display(),
                "bubblewrap (bwrap) is not installed or does not work here: the terminal tool \
                 runs programs unjailed, with the proxy's own view of the filesystem and network"
            );
        }
        Ok(Toolbox {
            enabled,
            workspace,
            terminal,
            web: web_fetch::Web::new(settings.web, connect_timeout),
            timeout: settings.timeout,
        })
    }

    /// Chat Completions `tools` entries of the enabled tools, in order.
    pub fn schemas(&self) -> Vec<Value> {
        self.enabled
            .iter()
            .map(|name| match *name {
                "read_file" => read_file::schema(),
                "write_file" => write_file::schema(),
                "list_files" => list_files::schema(),
                "search_files" => search_files::schema(),
                "web_fetch" => web_fetch::schema(),
                "memory" => memory::schema(),
                _ => terminal::schema(),
            })
            .collect()
    }

    /// Whether `name` is an enabled built-in tool.
    pub fn offers(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }

    /// Whether `terminal` runs its programs inside bubblewrap.
    pub fn jailed(&self) -> bool {
        self.terminal.jailed()
    }

    /// Runs one call within the tool timeout. Dropping the future (the client
    /// went away) stops the call: a running program's process group is killed.
    pub async fn run(&self, name: &str, arguments: &str, memory: &Memory) -> ToolOutput {
        if !self.offers(name) {
            return Fail::error(format!("unknown tool `{name}`")).into();
        }
        match tokio::time::timeout(self.timeout, self.dispatch(name, arguments, memory)).await {
            Ok(Ok(text)) => ToolOutput {
                outcome: Outcome::Ok,
                text,
            },
            Ok(Err(fail)) => fail.into(),
            Err(_) => ToolOutput {
                outcome: Outcome::Timeout,
                text: format!(
                    "error: timed out after {}",
                    humantime::format_duration(self.timeout)
                ),
            },
        }
    }

    async fn dispatch(&self, name: &str, arguments: &str, memory: &Memory) -> Done {
        let ws = self.workspace.clone();
        match name {
            "read_file" => {
                let args = parse(name, arguments)?;
                blocking(move || read_file::run(&ws, args)).await
            }
            "write_file" => {
                let args = parse(name, arguments)?;
                blocking(move || write_file::run(&ws, args)).await
            }
            "list_files" => {
                let args = parse(name, arguments)?;
                blocking(move || list_files::run(&ws, args)).await
            }
            "search_files" => search_files::run(ws, parse(name, arguments)?).await,
            "web_fetch" => self.web.fetch(parse(name, arguments)?).await,
            "memory" => memory.apply(parse(name, arguments)?),
            _ => self.terminal.run(parse(name, arguments)?).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_one_line_previews() {
        assert_eq!(label("read_file", r#"{"path":"notes.md"}"#), "notes.md");
        assert_eq!(label("list_files", "{}"), ".");
        assert_eq!(
            label("search_files", r#"{"pattern":"fn main","path":"src"}"#),
            "fn main in src"
        );
        assert_eq!(
            label(
                "memory",
                r#"{"action":"add","content":"likes tea\nand cake"}"#
            ),
            "add: likes tea and cake"
        );
        assert_eq!(label("web_fetch", "not json"), "");
        let long = format!(r#"{{"command":"echo {}"}}"#, "é".repeat(100));
        let cut = label("terminal", &long);
        assert_eq!(cut.chars().count(), LABEL_CHARS);
        assert!(cut.starts_with("echo éé") && cut.ends_with('…'));
    }

    #[test]
    fn every_tool_has_an_emoji_and_outcomes_have_metric_names() {
        assert_eq!(emoji("read_file"), "📖");
        assert_eq!(emoji("terminal"), "💻");
        assert!(KNOWN_TOOLS
            .iter()
            .all(|n| is_builtin(n) && emoji(n) != "🔧"));
        assert!(!is_builtin("shell"));
        assert_eq!(Outcome::Refused.as_str(), "refused");
        assert_eq!(Outcome::Timeout.as_str(), "timeout");
    }

    #[test]
    fn the_toolbox_and_its_calls_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            workspace: dir.path().to_path_buf(),
            enabled: vec!["memory".into()],
            terminal_allow: vec![],
            timeout: Duration::from_secs(1),
            web: WebPolicy::default(),
            private: vec![],
        };
        let tools = Toolbox::new(settings, Duration::from_secs(1)).unwrap();
        send_sync(&tools);
        let memory = Memory::new(String::new());
        send_sync(&memory);
        send(tools.run("memory", "{}", &memory));
    }

    #[test]
    fn cap_cuts_on_a_char_boundary_and_says_so() {
        let text = cap("aé".repeat(10), 4, "the file");
        assert!(text.starts_with("aéa\n[cut: the file continues for 26 more bytes]"));
        assert_eq!(cap("short".into(), 10, "x"), "short");
    }
}
