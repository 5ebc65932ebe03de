//! `list_files`: the entries of one folder.

use std::fs;

use serde::Deserialize;
use serde_json::{json, Value};

use super::workspace::Workspace;
use super::{Done, Fail};

/// Most entries listed; a folder of a million files would drown the model.
const MAX_ENTRIES: usize = 2000;

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "list_files",
            "description": "List a folder of the workspace: one entry a line, sorted, \
                            folders end in /.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string",
                             "description": "Folder relative to the workspace (default .)"}
                }
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    #[serde(default)]
    path: Option<String>,
}

pub(super) fn run(ws: &Workspace, args: Args) -> Done {
    let path = args.path.unwrap_or_else(|| ".".to_owned());
    let real = ws.existing(&path)?;
    if !real.is_dir() {
        return Err(Fail::error(format!("{path} is not a folder")));
    }
    let failed = |e: std::io::Error| Fail::error(format!("cannot list {path}: {e}"));
    let mut entries = vec![];
    for entry in fs::read_dir(&real).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        // A symlink is shown as a folder only when it points to one inside.
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => fs::canonicalize(entry.path())
                .is_ok_and(|target| target.starts_with(ws.root()) && target.is_dir()),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if is_dir {
            name.push('/');
        }
        entries.push(name);
    }
    entries.sort();
    let total = entries.len();
    entries.truncate(MAX_ENTRIES);
    let mut text = entries.join("\n");
    if total > MAX_ENTRIES {
        text.push_str(&format!("\n[cut: {} more entries]", total - MAX_ENTRIES));
    }
    if text.is_empty() {
        text = "[empty folder]".to_owned();
    }
    Ok(text)
}
