//! STUB replaced by the tools branch at merge.
#![allow(dead_code, unused_variables)]
use std::path::PathBuf;
use std::time::Duration;

pub struct Settings {
    pub workspace: PathBuf,
    pub enabled: Vec<String>,
    pub terminal_allow: Vec<String>,
    pub timeout: Duration,
    pub web: WebPolicy,
}
#[derive(Clone, Default)]
pub struct WebPolicy {
    pub allow_private: bool,
    pub exempt: Vec<std::net::IpAddr>,
    pub resolve: Vec<(String, std::net::IpAddr)>,
}
impl Settings {
    pub fn from_config(agent: &crate::config::Agent) -> Settings {
        Settings {
            workspace: agent.workspace.clone().into(),
            enabled: agent.tools.clone(),
            terminal_allow: agent.terminal_allow.clone(),
            timeout: agent.tool_timeout,
            web: WebPolicy::default(),
        }
    }
}
pub struct Toolbox {
    settings: Settings,
}
impl Toolbox {
    pub fn new(settings: Settings, connect_timeout: Duration) -> Result<Toolbox, String> {
        Ok(Toolbox { settings })
    }
    pub fn schemas(&self) -> Vec<serde_json::Value> {
        self.settings
            .enabled
            .iter()
            .map(|n| serde_json::json!({"type":"function","function":{"name":n,"description":"","parameters":{"type":"object","properties":{}}}}))
            .collect()
    }
    pub fn offers(&self, name: &str) -> bool {
        self.settings.enabled.iter().any(|n| n == name)
    }
    pub fn jailed(&self) -> bool {
        false
    }
    pub async fn run(&self, name: &str, arguments: &str, memory: &Memory) -> ToolOutput {
        if name == "list_files" {
            let mut names: Vec<String> = std::fs::read_dir(&self.settings.workspace)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            return ToolOutput {
                outcome: Outcome::Ok,
                text: names.join("\n"),
            };
        }
        if name == "read_file" {
            let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
            let p = self
                .settings
                .workspace
                .join(v["path"].as_str().unwrap_or(""));
            return match std::fs::read_to_string(p) {
                Ok(t) => ToolOutput {
                    outcome: Outcome::Ok,
                    text: t,
                },
                Err(e) => ToolOutput {
                    outcome: Outcome::Error,
                    text: format!("error: {e}"),
                },
            };
        }
        if name == "write_file" {
            let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
            let p = self
                .settings
                .workspace
                .join(v["path"].as_str().unwrap_or(""));
            let c = v["content"].as_str().unwrap_or("");
            let _ = std::fs::create_dir_all(p.parent().unwrap());
            let _ = std::fs::write(&p, c);
            return ToolOutput {
                outcome: Outcome::Ok,
                text: format!(
                    "wrote {} bytes to {}",
                    c.len(),
                    v["path"].as_str().unwrap_or("")
                ),
            };
        }
        ToolOutput {
            outcome: Outcome::Error,
            text: format!("error: unknown tool {name}"),
        }
    }
}
pub fn is_builtin(name: &str) -> bool {
    [
        "read_file",
        "write_file",
        "list_files",
        "search_files",
        "web_fetch",
        "memory",
        "terminal",
    ]
    .contains(&name)
}
pub fn emoji(name: &str) -> &'static str {
    "🔧"
}
pub fn label(name: &str, arguments: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
    v["path"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(60)
        .collect()
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Refused,
}
impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
        }
    }
}
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub outcome: Outcome,
    pub text: String,
}
pub struct Memory {
    notes: std::sync::Mutex<(String, bool)>,
}
impl Memory {
    pub fn new(notes: String) -> Memory {
        Memory {
            notes: std::sync::Mutex::new((notes, false)),
        }
    }
    pub fn notes(&self) -> String {
        self.notes.lock().unwrap().0.clone()
    }
    pub fn changed(&self) -> Option<String> {
        let g = self.notes.lock().unwrap();
        g.1.then(|| g.0.clone())
    }
}
pub const MEMORY_LIMIT: usize = 4096;
