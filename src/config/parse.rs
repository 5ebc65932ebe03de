//! Reads routes.toml into a [`Config`].
//!
//! `hermes-proxy check` promises every mistake in one run, each as
//! `path:line: message (hint: ...)`, with "did you mean" for near-misses.
//! That rules out plain serde: it stops at the first wrong value. So the work
//! is split in three, each reporting into one [`Report`] and carrying on:
//!
//! 1. `toml-span` (the parser under cargo-deny) parses the text into a tree
//!    that keeps the span of every key and value, and tracks which keys of a
//!    table were asked for, so unknown keys fall out without a key list.
//! 2. `read`/`raw` read that tree into the declared shape of the file: each
//!    table is declared once as a struct whose field types say how a value is
//!    read (`raw.rs`); a wrong value is reported with its line and read as
//!    absent, so everything else is still checked.
//! 3. `validate` applies defaults and environment variables and checks what
//!    spans several values (references between tables, mock-only keys,
//!    backoff_base against backoff_max, listening in public without keys).
//!
//! Nothing here knows the TOML grammar, and no key is named in a list kept
//! beside its declaration.

use super::error::{ConfigError, Report};
use super::raw::RawConfig;
use super::read::Section;
use super::validate::Checker;
use super::Config;

/// Parses and validates routes.toml. `path` is only used in messages (pass
/// "<embedded>" for the built-in file); `env` reads the variables the file
/// names, so tests and reloads need not touch the process environment.
pub fn parse(
    text: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    let mut report = Report::new(path, text);
    let mut root = match toml_span::parse(text) {
        Ok(root) => root,
        Err(err) => {
            // Messages are one line; some of the parser's span several.
            let message = err
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let line = report.line(err.span);
            report.error(line, format!("invalid TOML: {message}"), None);
            return Err(report.into_errors());
        }
    };
    let span = root.span;
    let toml_span::value::ValueInner::Table(table) = root.take() else {
        report.error(1, "invalid TOML: the document is not a table", None);
        return Err(report.into_errors());
    };
    let raw = RawConfig::read_table(table, span, Default::default(), &mut report);
    let mut config = Checker::new(&mut report, env).config(raw, path);
    if !report.errors.is_empty() {
        return Err(report.into_errors());
    }
    config.warnings = report.warnings;
    Ok(config)
}
