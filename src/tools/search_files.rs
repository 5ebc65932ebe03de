//! `search_files`: a regex over the workspace's files, ripgrep's way (its
//! walker honours .gitignore and skips hidden and binary files).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::Lossy;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::WalkBuilder;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspace::Workspace;
use super::{blocking, Done, Fail};

const MAX_MATCHES: usize = 200;
/// Longest pattern accepted, in bytes.
const MAX_PATTERN: usize = 1000;
/// The compiled regex and its lazy DFA stay this small: Rust's regex is
/// linear-time, and these bound its memory (a pattern like `a{1000}{1000}`
/// is refused instead of compiled).
const REGEX_SIZE: usize = 1 << 20;
const DFA_SIZE: usize = 4 << 20;
/// A line longer than this makes the searcher give up on that file, so a
/// file without newlines cannot fill memory.
const HEAP_LIMIT: usize = 8 << 20;
/// Longest matched line shown, in chars.
const MAX_LINE: usize = 300;

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "search_files",
            "description": "Search the workspace's files for a regular expression (Rust regex \
                            syntax). Answers `path:line: text` per matching line, at most 200.",
            "parameters": {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Regular expression"},
                    "path": {"type": "string",
                             "description": "File or folder to search, relative to the \
                                             workspace (default .)"}
                },
                "required": ["pattern"]
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

/// Raised when the call's future is dropped (timeout, client gone), so the
/// search thread stops instead of walking on for nobody.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub(super) async fn run(ws: Workspace, args: Args) -> Done {
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    blocking(move || search(&ws, &args, &stop)).await
}

fn search(ws: &Workspace, args: &Args, stop: &AtomicBool) -> Done {
    if args.pattern.len() > MAX_PATTERN {
        return Err(Fail::error(format!(
            "the pattern is {} bytes; at most {MAX_PATTERN} are accepted",
            args.pattern.len()
        )));
    }
    let matcher = RegexMatcherBuilder::new()
        .size_limit(REGEX_SIZE)
        .dfa_size_limit(DFA_SIZE)
        .line_terminator(Some(b'\n'))
        .build(&args.pattern)
        .map_err(|e| Fail::error(format!("invalid pattern: {e}")))?;
    let start = ws.existing(args.path.as_deref().unwrap_or("."))?;
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .binary_detection(BinaryDetection::quit(0))
        .heap_limit(Some(HEAP_LIMIT))
        .memory_map(grep_searcher::MmapChoice::never())
        .build();
    let mut out: Vec<String> = vec![];
    // Symlinks are not followed at all (the walker's default): one pointing
    // out of the workspace is never entered, and one pointing in is a
    // duplicate of what the walk reaches anyway.
    for entry in WalkBuilder::new(&start).follow_links(false).build() {
        if stop.load(Ordering::Relaxed) || out.len() >= MAX_MATCHES {
            break;
        }
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let shown = ws.show(entry.path());
        let Ok(file) = ws.open_read(&shown) else {
            continue;
        };
        // An unreadable file (a line over the heap limit) is skipped.
        let _ = searcher.search_file(
            &matcher,
            &file,
            Lossy(|line, text| {
                let text = text.trim_end_matches(['\n', '\r']);
                let text: String = if text.chars().count() > MAX_LINE {
                    text.chars().take(MAX_LINE).chain(['…']).collect()
                } else {
                    text.to_owned()
                };
                out.push(format!("{shown}:{line}: {text}"));
                Ok(out.len() < MAX_MATCHES && !stop.load(Ordering::Relaxed))
            }),
        );
    }
    if out.is_empty() {
        return Ok("no matches".to_owned());
    }
    let mut text = out.join("\n");
    if out.len() >= MAX_MATCHES {
        text.push_str(&format!(
            "\n[stopped at {MAX_MATCHES} matches: narrow the pattern or the path]"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sync(ws: &Workspace, pattern: &str, path: Option<&str>) -> Done {
        let args = Args {
            pattern: pattern.to_owned(),
            path: path.map(str::to_owned),
        };
        search(ws, &args, &AtomicBool::new(false))
    }

    #[test]
    fn finds_lines_with_paths_relative_to_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "fn main() {}\nlet x = 1;\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "nothing\nfn helper\n").unwrap();
        let ws = Workspace::create(dir.path()).unwrap();
        let mut lines: Vec<String> = run_sync(&ws, r"^fn \w+", None)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        assert_eq!(lines, ["b.txt:2: fn helper", "src/a.rs:1: fn main() {}"]);
        assert_eq!(
            run_sync(&ws, "let", Some("src")).unwrap(),
            "src/a.rs:2: let x = 1;"
        );
        assert_eq!(run_sync(&ws, "zzz", None).unwrap(), "no matches");
    }

    #[test]
    fn matches_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("many"), "hit\n".repeat(500)).unwrap();
        let ws = Workspace::create(dir.path()).unwrap();
        let text = run_sync(&ws, "hit", None).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("many:")).count(),
            MAX_MATCHES
        );
        assert!(text.ends_with("narrow the pattern or the path]"));
    }

    #[test]
    fn a_pattern_too_big_to_compile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path()).unwrap();
        let fail = run_sync(&ws, "(a{1000}){1000}", None).unwrap_err();
        assert!(
            fail.message.starts_with("invalid pattern"),
            "{}",
            fail.message
        );
        let long = "a".repeat(MAX_PATTERN + 1);
        assert!(run_sync(&ws, &long, None)
            .unwrap_err()
            .message
            .contains("at most"));
    }
}
