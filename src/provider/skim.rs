//! The fast path of reading a JSON answer: nearly every one is already in
//! the one schema, so it is read in one pass that builds nothing, its usage
//! taken on the way, and its bytes go on untouched. An answer that carries
//! an error, or that normalization would change (usage to complete or
//! hoist, reasoning to rename), is left to the full path, as is anything
//! unusual: the pass stops at the first such sign.
//! serde has no way to read a few fields deep inside a value without
//! building it (`RawValue` still checks and copies it), hence the small
//! visitors here.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::wire::chat::Endpoint;
use crate::wire::usage::Usage;
use crate::wire::visit::{deserialize_with, scalars_read_as};

/// `Some(usage)` when the answer can go on as it came; `None` when the full
/// path must read it (it also reports an answer that is not JSON).
pub(super) fn skim(bytes: &[u8], endpoint: Endpoint) -> Option<Option<Usage>> {
    // A top-level array is an error shape (and serde would read it as a struct).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let top: Top = serde_json::from_slice(bytes).ok()?;
    match top.usage {
        Some(Seen::Object(usage)) => {
            if endpoint != Endpoint::Embeddings && usage.needs_normalizing() {
                return None;
            }
            Some(Some(usage.counts()))
        }
        _ => Some(None),
    }
}

/// Stops the pass: the full path reads this answer.
fn full_path<E: de::Error>() -> E {
    E::custom("left to the full path")
}

/// Visitors for what is only read when it is an object: anything else is
/// skipped and reads as `$other`.
macro_rules! only_objects {
    ($other:expr) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        scalars_read_as!($other);
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            IgnoredAny.visit_seq(seq).map(|_| $other)
        }
    };
}

/// The keys looked at; any other is skipped.
#[derive(PartialEq)]
enum Key {
    Error,
    Object,
    Choices,
    Usage,
    Message,
    Reasoning,
    ReasoningDetails,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    InputTokens,
    OutputTokens,
    PromptTokensDetails,
    CachedTokens,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // As bytes: the keys looked for are ASCII, and a key's UTF-8 check
        // was a tenth of the pass.
        d.deserialize_bytes(KeyOf)
    }
}

struct KeyOf;

impl Visitor<'_> for KeyOf {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_bytes<E>(self, key: &[u8]) -> Result<Key, E> {
        Ok(match key {
            b"error" => Key::Error,
            b"object" => Key::Object,
            b"choices" => Key::Choices,
            b"usage" => Key::Usage,
            b"message" => Key::Message,
            b"reasoning" => Key::Reasoning,
            b"reasoning_details" => Key::ReasoningDetails,
            b"prompt_tokens" => Key::PromptTokens,
            b"completion_tokens" => Key::CompletionTokens,
            b"total_tokens" => Key::TotalTokens,
            b"input_tokens" => Key::InputTokens,
            b"output_tokens" => Key::OutputTokens,
            b"prompt_tokens_details" => Key::PromptTokensDetails,
            b"cached_tokens" => Key::CachedTokens,
            _ => Key::Other,
        })
    }
}

/// A value only worth knowing when it is not null.
fn given<'de, A: MapAccess<'de>>(map: &mut A) -> Result<bool, A::Error> {
    Ok(map.next_value::<Option<IgnoredAny>>()?.is_some())
}

/// The answer's top level: stops at an error, at choices that need
/// normalizing or are not an array, and at a second `usage`.
struct Top {
    usage: Option<Seen>,
}

deserialize_with!(Top, TopOf);

struct TopOf;

impl<'de> Visitor<'de> for TopOf {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut usage = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Error if given(&mut map)? => return Err(full_path()),
                // old vLLM's error shape; an `object` that is no plain
                // string is unusual enough for the full path too
                Key::Object if map.next_value::<Option<&str>>()? == Some("error") => {
                    return Err(full_path())
                }
                Key::Choices => map.next_value::<Choices>().map(drop)?,
                Key::Usage if usage.is_some() => return Err(full_path()),
                Key::Usage => usage = Some(map.next_value::<Seen>()?),
                // (a guard above read the value)
                Key::Error | Key::Object => {}
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(Top { usage })
    }
}

/// `choices`, read as far as normalization looks: a choice's own `usage`
/// (Kimi's, to hoist) and its message's reasoning fields (to rename).
struct Choices;

deserialize_with!(Choices, ChoicesOf);

struct ChoicesOf;

impl<'de> Visitor<'de> for ChoicesOf {
    type Value = Choices;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
        while seq.next_element::<Choice>()?.is_some() {}
        Ok(Choices)
    }
    // Anything but an array is not what normalization models.
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Choices, A::Error> {
        Err(full_path())
    }
}

struct Choice;

deserialize_with!(Choice, ChoiceOf);

struct ChoiceOf;

impl<'de> Visitor<'de> for ChoiceOf {
    type Value = Choice;

    only_objects!(Choice);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice, A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Usage if given(&mut map)? => return Err(full_path()),
                Key::Message => map.next_value::<Message>().map(drop)?,
                // (the guard above read the value)
                Key::Usage => {}
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(Choice)
    }
}

struct Message;

deserialize_with!(Message, MessageOf);

struct MessageOf;

impl<'de> Visitor<'de> for MessageOf {
    type Value = Message;

    only_objects!(Message);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Reasoning => return Err(full_path()),
                Key::ReasoningDetails if given(&mut map)? => return Err(full_path()),
                // (the guard above read the value)
                Key::ReasoningDetails => {}
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(Message)
    }
}

/// A usage value: only an object has counts.
enum Seen {
    Object(UsageFields),
    Other,
}

deserialize_with!(Seen, SeenOf);

struct SeenOf;

impl<'de> Visitor<'de> for SeenOf {
    type Value = Seen;

    only_objects!(Seen::Other);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        let mut u = UsageFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            // A count that is no integer is unusual enough for the full path.
            match key {
                Key::PromptTokens => u.prompt = Some(map.next_value()?),
                Key::CompletionTokens => u.completion = Some(map.next_value()?),
                Key::PromptTokensDetails => {
                    u.details = map.next_value::<Option<Details>>()?.unwrap_or_default();
                }
                key => {
                    map.next_value::<IgnoredAny>()?;
                    match key {
                        Key::TotalTokens => u.total = true,
                        Key::InputTokens => u.input = true,
                        Key::OutputTokens => u.output = true,
                        _ => {}
                    }
                }
            }
        }
        Ok(Seen::Object(u))
    }
}

/// What [`crate::wire::usage`] reads and writes of a usage object.
#[derive(Default)]
struct UsageFields {
    /// Present, and the count unless null.
    prompt: Option<Option<u64>>,
    completion: Option<Option<u64>>,
    total: bool,
    input: bool,
    output: bool,
    details: Details,
}

impl UsageFields {
    /// Whether normalization would rewrite this usage: a count under
    /// another name, a missing total or a missing cached count.
    fn needs_normalizing(&self) -> bool {
        (self.input && self.prompt.is_none())
            || (self.output && self.completion.is_none())
            || !self.total
            || matches!(self.details, Details::Absent | Details::Object(None))
    }

    fn counts(&self) -> Usage {
        let count = |n: Option<Option<u64>>| n.flatten().unwrap_or(0);
        Usage {
            prompt: count(self.prompt),
            completion: count(self.completion),
            cached: match self.details {
                Details::Object(cached) => count(cached),
                _ => 0,
            },
        }
    }
}

/// `prompt_tokens_details` (null reads as absent, as normalization treats it).
#[derive(Default)]
enum Details {
    #[default]
    Absent,
    /// An object, and its `cached_tokens` if present.
    Object(Option<Option<u64>>),
    Other,
}

deserialize_with!(Details, DetailsOf);

struct DetailsOf;

impl<'de> Visitor<'de> for DetailsOf {
    type Value = Details;

    only_objects!(Details::Other);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
        let mut cached = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::CachedTokens {
                cached = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Details::Object(cached))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::Value;

    use super::*;
    use crate::provider::classify;
    use crate::wire::usage as normalize;

    /// What the full path decides: (an error?, rewritten?, usage).
    fn full(bytes: &[u8], endpoint: Endpoint) -> (bool, bool, Option<Usage>) {
        let mut v: Value = serde_json::from_slice(bytes).unwrap();
        let err = classify::error_in_body(&v, &http::HeaderMap::new(), SystemTime::now()).is_some();
        let changed = endpoint != Endpoint::Embeddings && normalize::completion(&mut v);
        (err, changed, normalize::usage(&v))
    }

    #[test]
    fn skim_takes_the_fast_path_only_where_the_full_path_changes_nothing() {
        let normal = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        let cases: &[(&str, bool)] = &[
            (normal, true),
            // no usage at all: nothing to normalize
            (r#"{"choices":[{"message":{"content":"x"}}]}"#, true),
            (
                r#"{"choices":[{"message":null,"usage":null}],"usage":null,"error":null}"#,
                true,
            ),
            // usage to complete or hoist (Kimi), reasoning to rename
            (
                r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"x"},"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}]}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"4","reasoning":"2+2"}}]}"#,
                false,
            ),
            // a null `reasoning` beside `reasoning_content` is dropped by the full path
            (
                r#"{"choices":[{"message":{"reasoning_content":"r","reasoning":null}}]}"#,
                false,
            ),
            // usage as OpenAI sends it, with details the skim leaves alone
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"choices":[]}"#,
                true,
            ),
            (r#"{"usage":null,"choices":[]}"#, true),
            // Kimi's reasoning_content needs nothing; text that quotes a key is text
            (
                r#"{"choices":[{"message":{"content":"the \"usage\" and \"reasoning\" keys","reasoning_content":"r"}}]}"#,
                true,
            ),
            // a null details object, Anthropic's names, Kimi's cached_tokens
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":null}}"#,
                false,
            ),
            (r#"{"usage":{"input_tokens":3,"output_tokens":1}}"#, false),
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"cached_tokens":4}}"#,
                false,
            ),
            (
                r#"{"choices":[{"message":{"content":"x","reasoning_details":[{"type":"reasoning.text","text":"t"}]}}]}"#,
                false,
            ),
            // errors in a 200 body, and shapes the skeleton does not model
            (r#"{"error":{"message":"busy","code":429}}"#, false),
            (r#"{"object":"error","message":"bad","code":400}"#, false),
            (r#"[{"error":{"message":"busy"}}]"#, false),
            (r#"{"choices":{"message":{}}}"#, false),
            (r#"{"usage":1,"usage":2}"#, false),
        ];
        for (body, fast) in cases {
            let got = skim(body.as_bytes(), Endpoint::Chat);
            assert_eq!(got.is_some(), *fast, "{body}");
            if let Some(usage) = got {
                assert_eq!(
                    full(body.as_bytes(), Endpoint::Chat),
                    (false, false, usage),
                    "{body}"
                );
            }
        }
        assert_eq!(
            skim(normal.as_bytes(), Endpoint::Chat),
            Some(Some(normalize::Usage {
                prompt: 5,
                completion: 2,
                cached: 1
            }))
        );
    }

    #[test]
    fn skim_reads_embedding_usage_without_building_the_vectors() {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]}],"model":"m","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let usage = skim(body.as_bytes(), Endpoint::Embeddings).expect("fast path");
        assert_eq!(
            full(body.as_bytes(), Endpoint::Embeddings),
            (false, false, usage)
        );
        assert_eq!(usage.map(|u| u.prompt), Some(3));
    }

    /// Answers assembled from the shapes normalization cares about: the
    /// skim may leave any to the full path, but one it passes must be one
    /// the full path would neither refuse nor rewrite, with the same usage.
    #[test]
    fn skim_agrees_with_the_full_path_on_generated_answers() {
        use proptest::prelude::*;
        use proptest::sample::select;
        let count = || select(vec!["5", "0", "null", "1.5", "-1", "\"7\""]);
        let field = |key: &'static str, value: BoxedStrategy<String>| {
            prop_oneof![
                Just(String::new()),
                value.prop_map(move |v| format!(",\"{key}\":{v}"))
            ]
        };
        let details = prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just("4".to_owned()),
            count().prop_map(|c| format!("{{\"cached_tokens\":{c},\"audio_tokens\":0}}")),
        ];
        let usage = (
            field("prompt_tokens", count().prop_map(str::to_owned).boxed()),
            field("completion_tokens", count().prop_map(str::to_owned).boxed()),
            field("total_tokens", count().prop_map(str::to_owned).boxed()),
            field("input_tokens", count().prop_map(str::to_owned).boxed()),
            field("output_tokens", count().prop_map(str::to_owned).boxed()),
            field("cached_tokens", count().prop_map(str::to_owned).boxed()),
            field("prompt_tokens_details", details.boxed()),
        )
            .prop_map(|(a, b, c, d, e, f, g)| format!("{{\"x\":1{a}{b}{c}{d}{e}{f}{g}}}"));
        let usage = prop_oneof![Just("null".to_owned()), Just("[1]".to_owned()), usage];
        let text = || {
            select(vec![
                "\"t\"",
                "null",
                "[]",
                "[{\"type\":\"reasoning.text\",\"text\":\"r\"}]",
            ])
        };
        let message = (
            field("reasoning", text().prop_map(str::to_owned).boxed()),
            field("reasoning_content", text().prop_map(str::to_owned).boxed()),
            field("reasoning_details", text().prop_map(str::to_owned).boxed()),
        )
            .prop_map(|(a, b, c)| format!("{{\"content\":\"the \\\"usage\\\" key\"{a}{b}{c}}}"));
        let choice = (message, field("usage", usage.clone().boxed()))
            .prop_map(|(m, u)| format!("{{\"index\":0,\"message\":{m}{u}}}"));
        let choices = prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            proptest::collection::vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(","))),
        ];
        let answer = (
            field(
                "error",
                select(vec!["null", "\"busy\"", "{\"message\":\"m\"}"])
                    .prop_map(str::to_owned)
                    .boxed(),
            ),
            field(
                "object",
                select(vec!["\"chat.completion\"", "\"error\"", "5"])
                    .prop_map(str::to_owned)
                    .boxed(),
            ),
            field("choices", choices.boxed()),
            field("usage", usage.boxed()),
        )
            .prop_map(|(a, b, c, d)| format!("{{\"id\":\"c\"{a}{b}{c}{d}}}"));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&answer, |body| {
                for endpoint in [Endpoint::Chat, Endpoint::Embeddings] {
                    if let Some(usage) = skim(body.as_bytes(), endpoint) {
                        prop_assert_eq!(
                            full(body.as_bytes(), endpoint),
                            (false, false, usage),
                            "{}",
                            body
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
