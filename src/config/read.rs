//! Typed reading of toml-span values, reporting instead of stopping.
//!
//! toml-span parses the file into a tree where every key and value keeps its
//! span, and its `TableHelper` tracks which keys a table was asked for, so
//! the leftovers are the unknown ones. What it does not know is where a value
//! sits ("in target 2 of [routes.x]") or how to fix it, and its `Deserialize`
//! errors carry no hint; so each value is read through [`Read`], which gets
//! that context and reports into the shared [`Report`]. A value that is wrong
//! reads as `None` and the rest of the file is still read.
//!
//! Tables are declared with `section!`: one field per key, which generates
//! the reader, the list of valid keys behind "did you mean" and the
//! required-key checks. That declaration, in `raw.rs`,
//! is the only place a key of routes.toml is named.

use std::net::SocketAddr;
use std::time::Duration;

use toml_span::de_helpers::TableHelper;
use toml_span::value::{Table, Value, ValueInner};
use toml_span::{ErrorKind, Span};

use super::error::{Place, Report};
use super::DEFAULT_LISTEN;

pub(super) const DURATION_HINT: &str = r#"write durations like "250ms", "30s" or "5m""#;

/// A value read from the file, with the key it was under and its line.
#[derive(Debug, Clone)]
pub(super) struct Field<T> {
    pub key: &'static str,
    pub value: T,
    pub line: usize,
}

/// The value being read, for messages.
pub(super) struct At<'p> {
    /// The key as declared (for a list entry, the list's key).
    pub key: &'static str,
    /// What the message is about: "`listen` in [server]", "entry 2 of
    /// `tools` in [agent]".
    pub subject: String,
    /// The table the value is in.
    pub place: &'p Place,
    pub line: usize,
}

/// A type that routes.toml values are read into.
pub(super) trait Read: Sized {
    /// Reads `value`, or reports why it cannot and returns None.
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self>;
}

/// A table declared with `section!`.
pub(super) trait Section: Sized {
    fn read_table(table: Table<'_>, span: Span, at: Place, cx: &mut Report) -> Self;
}

/// A table that appears in an array of tables (`[[server.keys]]`, `targets`).
pub(super) trait Entry: Section {
    /// Where entry `n` (1-based) of `key` in `parent` is, for messages.
    fn place(key: &str, n: usize, parent: &Place) -> String {
        format!("in [[{}]] #{n}", parent.child(key, 0).path)
    }
}

/// Declares one table of routes.toml. Each field is a key, read as
/// `Option<Field<T>>` (None when absent or wrong); `=> example` makes it
/// required. `flatten { ... }` embeds another section's keys in this table.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty $(=> $example:expr)? ,)*
        }
        $( flatten { $( $(#[$gmeta:meta])* $flat:ident : $fty:ty ,)* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            /// Where the table is (not every table's checks need it).
            #[allow(dead_code)]
            pub at: $crate::config::error::Place,
            $( $(#[$fmeta])* pub $field: Option<$crate::config::read::Field<$ty>>, )*
            $($( $(#[$gmeta])* pub $flat: $fty, )*)?
        }

        impl $name {
            fn read_fields(
                th: &mut toml_span::de_helpers::TableHelper<'_>,
                at: &$crate::config::error::Place,
                cx: &mut $crate::config::error::Report,
            ) -> Self {
                Self {
                    at: at.clone(),
                    $( $field: {
                        $( if !th.contains(stringify!($field)) {
                            cx.missing(at, stringify!($field), $example);
                        } )?
                        $crate::config::read::read_field(th, stringify!($field), at, cx)
                    }, )*
                    $($( $flat: <$fty>::read_fields(th, at, cx), )*)?
                }
            }

            /// The keys that were given (and read), with their lines.
            #[allow(dead_code)]
            pub fn present(&self) -> Vec<(&'static str, usize)> {
                let mut present = Vec::new();
                $( if let Some(field) = &self.$field {
                    present.push((field.key, field.line));
                } )*
                present
            }
        }

        impl $crate::config::read::Section for $name {
            fn read_table(
                table: toml_span::value::Table<'_>,
                span: toml_span::Span,
                at: $crate::config::error::Place,
                cx: &mut $crate::config::error::Report,
            ) -> Self {
                let mut th = toml_span::de_helpers::TableHelper::from((table, span));
                let this = Self::read_fields(&mut th, &at, cx);
                $crate::config::read::unknown_keys(th, &at, cx);
                this
            }
        }

        impl $crate::config::read::Read for $name {
            fn read(
                value: toml_span::Value<'_>,
                at: &$crate::config::read::At<'_>,
                cx: &mut $crate::config::error::Report,
            ) -> Option<Self> {
                let place = at.place.child(at.key, at.line);
                let (table, span) = $crate::config::read::table(value, at, cx)?;
                Some(<Self as $crate::config::read::Section>::read_table(table, span, place, cx))
            }
        }
    };
}
pub(super) use section;

/// Takes `key` out of the table and reads it.
pub(super) fn read_field<T: Read>(
    th: &mut TableHelper<'_>,
    key: &'static str,
    at: &Place,
    cx: &mut Report,
) -> Option<Field<T>> {
    let (_, value) = th.take(key)?;
    let line = cx.line(value.span);
    let here = At {
        key,
        subject: format!("`{key}` {}", at.text),
        place: at,
        line,
    };
    T::read(value, &here, cx).map(|value| Field { key, value, line })
}

/// Typos must not pass silently: every key the table was not asked for is
/// an error, with the nearest valid key as the hint.
pub(super) fn unknown_keys(th: TableHelper<'_>, at: &Place, cx: &mut Report) {
    let Err(leftover) = th.finalize(None) else {
        return;
    };
    for error in leftover.errors {
        let ErrorKind::UnexpectedKeys { keys, expected } = error.kind else {
            continue;
        };
        let valid: Vec<&str> = expected.iter().map(String::as_str).collect();
        for (key, span) in keys {
            let hint = match closest(&key, &valid) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("valid keys here: {}", valid.join(", ")),
            };
            let message = format!("unknown key `{key}` {}", at.text);
            cx.error(cx.line(span), message, Some(hint));
        }
    }
}

/// The candidate within a small edit distance of `word`, if any.
pub(super) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&word, c), *c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// "a string", "an integer", ... for type errors.
fn a(value: &ValueInner<'_>) -> &'static str {
    match value {
        ValueInner::String(_) => "a string",
        ValueInner::Integer(_) => "an integer",
        ValueInner::Float(_) => "a float",
        ValueInner::Boolean(_) => "a boolean",
        ValueInner::Array(_) => "an array",
        ValueInner::Table(_) => "a table",
    }
}

fn wrong(cx: &mut Report, at: &At, expected: &str, found: &ValueInner, hint: Option<String>) {
    let message = format!("{} must be {expected}, not {}", at.subject, a(found));
    cx.error(at.line, message, hint);
}

/// The table in `value`; reports it if it is something else.
pub(super) fn table<'de>(
    mut value: Value<'de>,
    at: &At,
    cx: &mut Report,
) -> Option<(Table<'de>, Span)> {
    match value.take() {
        ValueInner::Table(table) => Some((table, value.span)),
        other => {
            wrong(cx, at, "a table", &other, None);
            None
        }
    }
}

/// A table's entries in file order (toml-span keeps them sorted by name).
fn in_file_order(table: Table<'_>) -> Vec<(String, Value<'_>)> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span.start);
    entries
        .into_iter()
        .map(|(key, value)| (key.name.into_owned(), value))
        .collect()
}

// ----- containers -----

/// `[providers.<name>]`, `[routes.<name>]`: named tables, in file order.
#[derive(Debug)]
pub(super) struct Named<T>(pub Vec<(String, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T: Section> Read for Named<T> {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let (table, _) = table(value, at, cx)?;
        let here = at.place.child(at.key, at.line);
        let mut named = Vec::new();
        for (name, mut value) in in_file_order(table) {
            let line = cx.line(value.span);
            let place = here.child(&name, line);
            match value.take() {
                ValueInner::Table(table) => {
                    named.push((name, T::read_table(table, value.span, place, cx)));
                }
                other => {
                    let message =
                        format!("`{name}` {} must be a table, not {}", here.text, a(&other));
                    let hint = format!("write it as a [{}] section", place.path);
                    cx.error(line, message, Some(hint));
                }
            }
        }
        Some(Named(named))
    }
}

/// An array of tables, written as `[[a.b]]` sections or inline tables.
/// Entries that are not tables are reported and left out.
#[derive(Debug)]
pub(super) struct Entries<T>(pub Vec<T>);

impl<T: Entry> Read for Entries<T> {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let array = match value.take() {
            ValueInner::Array(array) => array,
            other => {
                wrong(cx, at, "an array of tables", &other, None);
                return None;
            }
        };
        let mut entries = Vec::new();
        for (i, mut value) in array.into_iter().enumerate() {
            let line = cx.line(value.span);
            match value.take() {
                ValueInner::Table(table) => {
                    let place = Place {
                        text: T::place(at.key, i + 1, at.place),
                        path: at.place.child(at.key, line).path,
                        line,
                    };
                    entries.push(T::read_table(table, value.span, place, cx));
                }
                other => {
                    let message = format!(
                        "entry {} of {} must be a table, not {}",
                        i + 1,
                        at.subject,
                        a(&other)
                    );
                    cx.error(line, message, None);
                }
            }
        }
        Some(Entries(entries))
    }
}

/// An array of values, each with its line (for errors about one entry).
/// Entries that are wrong are reported and left out.
impl<T: Read> Read for Vec<Field<T>> {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let array = match value.take() {
            ValueInner::Array(array) => array,
            other => {
                wrong(cx, at, "an array", &other, None);
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, value) in array.into_iter().enumerate() {
            let line = cx.line(value.span);
            let here = At {
                key: at.key,
                subject: format!("entry {} of {}", i + 1, at.subject),
                place: at.place,
                line,
            };
            if let Some(read) = T::read(value, &here, cx) {
                out.push(Field {
                    key: at.key,
                    value: read,
                    line,
                });
            }
        }
        Some(out)
    }
}

/// A table of free-form names to values (`headers`), in file order.
#[derive(Debug, Default)]
pub(super) struct Map<T>(pub Vec<(String, T, usize)>);

impl<T: Read> Read for Map<T> {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let (table, _) = table(value, at, cx)?;
        let mut out = Vec::new();
        for (name, value) in in_file_order(table) {
            let line = cx.line(value.span);
            let here = At {
                key: at.key,
                subject: format!("`{name}` in {}", at.subject),
                place: at.place,
                line,
            };
            if let Some(read) = T::read(value, &here, cx) {
                out.push((name, read, line));
            }
        }
        Some(Map(out))
    }
}

// ----- scalars -----

impl Read for String {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        match value.take() {
            ValueInner::String(s) => Some(s.into_owned()),
            other => {
                wrong(cx, at, "a string", &other, None);
                None
            }
        }
    }
}

/// A string with something in it.
#[derive(Debug)]
pub(super) struct NonEmpty(pub String);

impl Read for NonEmpty {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let text = String::read(value, at, cx)?;
        if text.trim().is_empty() {
            cx.error(at.line, format!("{} must not be empty", at.subject), None);
            return None;
        }
        Some(NonEmpty(text))
    }
}

/// The name of an environment variable (`api_key_env`, `key_env`, ...).
#[derive(Debug)]
pub(super) struct EnvVar(pub String);

impl Read for EnvVar {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let NonEmpty(name) = NonEmpty::read(value, at, cx)?;
        if name.contains(['=', '\0']) || name.trim() != name {
            let message = format!(
                "{} must name an environment variable, not \"{name}\"",
                at.subject
            );
            let hint = format!("e.g. {} = \"MY_API_KEY\"", at.key);
            cx.error(at.line, message, Some(hint));
            return None;
        }
        Some(EnvVar(name))
    }
}

impl Read for bool {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        match value.take() {
            ValueInner::Boolean(b) => Some(b),
            other => {
                wrong(cx, at, "true or false", &other, None);
                None
            }
        }
    }
}

/// Every integer in routes.toml is a count or a limit: positive, and it
/// must fit the field.
macro_rules! positive {
    ($($t:ty),*) => {$(
        impl Read for $t {
            fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
                let n = match value.take() {
                    ValueInner::Integer(n) => n,
                    other => {
                        // `rpm = "200"` is a common slip; say how to fix it.
                        let quoted = other
                            .as_str()
                            .is_some_and(|s| s.replace('_', "").parse::<i64>().is_ok());
                        let hint = quoted.then(|| "remove the quotes".to_string());
                        wrong(cx, at, "a positive integer", &other, hint);
                        return None;
                    }
                };
                if n <= 0 {
                    let message = format!("{} must be a positive integer, not {n}", at.subject);
                    cx.error(at.line, message, None);
                    return None;
                }
                let fits = <$t>::try_from(n).ok();
                if fits.is_none() {
                    cx.error(at.line, format!("{} is too large: {n}", at.subject), None);
                }
                fits
            }
        }
    )*};
}
positive!(u32, u64, usize);

impl Read for Duration {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let text = match value.take() {
            ValueInner::String(text) => text,
            other => {
                let hint = Some(DURATION_HINT.to_string());
                wrong(cx, at, "a duration string", &other, hint);
                return None;
            }
        };
        match humantime::parse_duration(text.trim()) {
            Ok(duration) => Some(duration),
            Err(err) => {
                let message = format!("{} is not a valid duration: \"{text}\" ({err})", at.subject);
                cx.error(at.line, message, Some(DURATION_HINT.to_string()));
                None
            }
        }
    }
}

/// A duration longer than zero: a zero timeout would fail every request.
#[derive(Debug)]
pub(super) struct NonZero(pub Duration);

impl Read for NonZero {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let duration = Duration::read(value, at, cx)?;
        if duration.is_zero() {
            let message = format!("{} must be longer than zero", at.subject);
            cx.error(at.line, message, Some(DURATION_HINT.to_string()));
            return None;
        }
        Some(NonZero(duration))
    }
}

/// A fraction in 0..=1, written as a float or as 0 / 1.
#[derive(Debug)]
pub(super) struct Ratio(pub f64);

impl Read for Ratio {
    fn read(mut value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let ratio = match value.take() {
            ValueInner::Float(f) => f,
            ValueInner::Integer(i) => i as f64,
            other => {
                wrong(cx, at, "a number between 0 and 1", &other, None);
                return None;
            }
        };
        if !(0.0..=1.0).contains(&ratio) {
            let message = format!("{} must be between 0 and 1, not {ratio}", at.subject);
            let hint = Some("e.g. 0.1 means 10% of requests".to_string());
            cx.error(at.line, message, hint);
            return None;
        }
        Some(Ratio(ratio))
    }
}

impl Read for SocketAddr {
    fn read(value: Value<'_>, at: &At<'_>, cx: &mut Report) -> Option<Self> {
        let text = String::read(value, at, cx)?;
        match text.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!("{} is not an IP address and port: \"{text}\"", at.subject);
                let hint = format!(
                    "e.g. \"{DEFAULT_LISTEN}\" (host names such as localhost are not accepted)"
                );
                cx.error(at.line, message, Some(hint));
                None
            }
        }
    }
}

/// One of a fixed set of words. `config show` writes the same words back.
pub(super) trait Choice: Copy + PartialEq + 'static {
    const WORDS: &'static [(&'static str, Self)];

    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(word, _)| word)
    }
}

/// Reads a [`Choice`]; each choice type opts in with `choice_reader!`.
pub(super) fn read_choice<T: Choice>(mut value: Value<'_>, at: &At, cx: &mut Report) -> Option<T> {
    let words: Vec<&str> = T::WORDS.iter().map(|(word, _)| *word).collect();
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    let expected = format!("one of {}", quoted.join(", "));
    let text = match value.take() {
        ValueInner::String(text) => text,
        other => {
            wrong(cx, at, &expected, &other, None);
            return None;
        }
    };
    if let Some((_, choice)) = T::WORDS.iter().find(|(word, _)| *word == text) {
        return Some(*choice);
    }
    let hint = closest(&text, &words).map(|near| format!("did you mean \"{near}\"?"));
    let message = format!("{} must be {expected}, not \"{text}\"", at.subject);
    cx.error(at.line, message, hint);
    None
}
