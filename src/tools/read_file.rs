//! `read_file`: a text file, or a window of its lines.

use std::io::{self, Read};

use serde::Deserialize;
use serde_json::{json, Value};

use super::workspace::Workspace;
use super::{Done, Fail};

/// Most bytes of text returned.
const MAX_TEXT: usize = 256 * 1024;
/// Most bytes read to find the first wanted line: a file of one endless
/// line (or a sparse 10 GB one) is never read whole.
const MAX_SCAN: u64 = 64 * 1024 * 1024;

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a text file from the workspace. Long files are cut at 256 KiB; \
                            use offset and limit to read a part.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace"},
                    "offset": {"type": "integer", "minimum": 1,
                               "description": "First line to read, 1-based (default 1)"},
                    "limit": {"type": "integer", "minimum": 1,
                              "description": "Most lines to read (default: to the end)"}
                },
                "required": ["path"]
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

pub(super) fn run(ws: &Workspace, args: Args) -> Done {
    let file = ws.open_read(&args.path)?;
    let first = args.offset.unwrap_or(1).max(1);
    let window = lines(file, first, args.limit, MAX_SCAN)
        .map_err(|e| Fail::error(format!("cannot read {}: {e}", args.path)))?;
    let mut text = String::from_utf8_lossy(&window.bytes).into_owned();
    match window.end {
        End::Done if text.is_empty() && first > 1 => {
            return Ok(format!("[the file has fewer than {first} lines]"));
        }
        End::Done => {}
        End::Full { line } => {
            text.push_str(&format!("\n[cut at 256 KiB: read on with offset={line}]"))
        }
        End::Scanned { line } => text.push_str(&format!(
            "\n[stopped: only the first {} MiB of the file are read, and line {line} \
             goes on past them]",
            MAX_SCAN / (1024 * 1024)
        )),
    }
    Ok(text)
}

struct Window {
    bytes: Vec<u8>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The wanted lines (or the file) ended.
    Done,
    /// The text cap was reached inside `line`.
    Full { line: u64 },
    /// `max_scan` bytes were read, inside `line`.
    Scanned { line: u64 },
}

/// Lines `first..first + limit` of `input`, read in fixed chunks so memory
/// stays bounded whatever the line lengths, and at most `max_scan` bytes.
fn lines(
    mut input: impl Read,
    first: u64,
    limit: Option<u64>,
    max_scan: u64,
) -> io::Result<Window> {
    let last = limit.map(|n| first.saturating_add(n));
    let mut line = 1u64;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut scanned = 0u64;
    loop {
        let room = (max_scan - scanned).min(chunk.len() as u64) as usize;
        if room == 0 {
            return Ok(Window {
                bytes,
                end: End::Scanned { line },
            });
        }
        let n = match input.read(&mut chunk[..room]) {
            Ok(0) => {
                return Ok(Window {
                    bytes,
                    end: End::Done,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scanned += n as u64;
        for &b in &chunk[..n] {
            if last.is_some_and(|last| line >= last) {
                return Ok(Window {
                    bytes,
                    end: End::Done,
                });
            }
            if line >= first {
                if bytes.len() == MAX_TEXT {
                    return Ok(Window {
                        bytes,
                        end: End::Full { line },
                    });
                }
                bytes.push(b);
            }
            if b == b'\n' {
                line += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: &str, first: u64, limit: Option<u64>, max_scan: u64) -> (String, End) {
        let w = lines(text.as_bytes(), first, limit, max_scan).unwrap();
        (String::from_utf8(w.bytes).unwrap(), w.end)
    }

    #[test]
    fn offset_and_limit_pick_lines() {
        let text = "one\ntwo\nthree\nfour\n";
        assert_eq!(window(text, 1, None, 1000), (text.to_owned(), End::Done));
        assert_eq!(
            window(text, 2, Some(2), 1000),
            ("two\nthree\n".into(), End::Done)
        );
        assert_eq!(window(text, 4, Some(9), 1000), ("four\n".into(), End::Done));
        assert_eq!(window(text, 9, None, 1000), (String::new(), End::Done));
    }

    #[test]
    fn the_scan_stops_at_its_cap() {
        let text = "a".repeat(100);
        assert_eq!(
            window(&text, 2, None, 10),
            (String::new(), End::Scanned { line: 1 })
        );
    }

    #[test]
    fn the_text_stops_at_its_cap() {
        let text = "x".repeat(MAX_TEXT + 10);
        let (got, end) = window(&text, 1, None, u64::MAX);
        assert_eq!(got.len(), MAX_TEXT);
        assert_eq!(end, End::Full { line: 1 });
    }
}
