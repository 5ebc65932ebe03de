//! `write_file`: creates or replaces a file, and the folders above it.

use std::io::Write;

use serde::Deserialize;
use serde_json::{json, Value};

use super::workspace::Workspace;
use super::{Done, Fail};

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Write a text file in the workspace, replacing it if it exists; \
                            missing folders are created.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace"},
                    "content": {"type": "string", "description": "The whole new content"}
                },
                "required": ["path", "content"]
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    path: String,
    content: String,
}

pub(super) fn run(ws: &Workspace, args: Args) -> Done {
    let (mut file, shown) = ws.open_write(&args.path)?;
    let failed = |e: std::io::Error| Fail::error(format!("cannot write {shown}: {e}"));
    // Truncated only now that the opened file is known to be inside.
    file.set_len(0).map_err(failed)?;
    file.write_all(args.content.as_bytes()).map_err(failed)?;
    Ok(format!("wrote {} bytes to {shown}", args.content.len()))
}
