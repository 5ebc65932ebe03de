//! What `check` prints: errors as `path:line: message (hint: ...)`, warnings
//! as `path:line: message`.
//!
//! Every reader and check pushes into one [`Report`] instead of returning
//! early, which is what lets `check` list every mistake in one run.

use std::fmt;

use toml_span::Span;

/// One mistake in the file, printed as `path:line: message (hint: ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where a table is, for messages: "in [server]", "in target 2 of
/// [routes.x]", "at the top level".
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub text: String,
    /// Dotted path of the table ("providers.kimi"), to name sub-tables.
    pub path: String,
    /// Its first line: where errors about its missing keys point.
    pub line: usize,
}

impl Default for Place {
    fn default() -> Self {
        Place::root()
    }
}

impl Place {
    pub fn root() -> Place {
        Place {
            text: "at the top level".into(),
            path: String::new(),
            line: 1,
        }
    }

    /// The table under `key` of this one, starting on `line`.
    pub fn child(&self, key: &str, line: usize) -> Place {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Place {
            text: format!("in [{path}]"),
            path,
            line,
        }
    }
}

/// Collects errors and warnings for one file.
pub(super) struct Report<'a> {
    path: &'a str,
    /// Byte offset where each line starts, to turn spans into line numbers.
    line_starts: Vec<usize>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl<'a> Report<'a> {
    pub fn new(path: &'a str, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Report {
            path,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The 1-based line a span starts on.
    pub fn line(&self, span: Span) -> usize {
        self.line_starts
            .partition_point(|&start| start <= span.start)
    }

    pub fn error(&mut self, line: usize, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(ConfigError {
            path: self.path.to_string(),
            line,
            message: message.into(),
            hint,
        });
    }

    pub fn warn(&mut self, line: usize, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{}: {}", self.path, line, message));
    }

    /// A required key that is absent; `example` is a value for it.
    pub fn missing(&mut self, at: &Place, key: &str, example: &str) {
        let message = format!("missing required key `{key}` {}", at.text);
        self.error(at.line, message, Some(format!("e.g. {key} = {example}")));
    }

    /// Errors in file order: checks run table by table, the user reads the
    /// file top to bottom.
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|e| e.line);
        self.errors
    }
}
