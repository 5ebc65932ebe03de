//! One pass over a request body that checks it as strictly as parsing it
//! into a `serde_json::Value` would (UTF-8, escapes, numbers in range,
//! nesting depth), so a tree parsed from it later cannot fail, while
//! building nothing: it keeps only what routing and the checks need.
//! serde has no validating visitor that allocates nothing (`IgnoredAny`
//! skips strings and numbers unchecked), hence the small ones here.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::wire::visit::{deserialize_with, scalars_read_as};

/// What a value was, without keeping it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    Null,
    Bool(bool),
    /// A number that fits a u64, as most token counts do.
    Count(u64),
    Number,
    Str,
    Array(usize),
    Object,
}

deserialize_with!(Shape, ShapeOf);

struct ShapeOf;

impl<'de> Visitor<'de> for ShapeOf {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Shape, E> {
        Ok(Shape::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Shape, E> {
        Ok(Shape::Count(n))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Number)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Str)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut n = 0;
        while seq.next_element::<Shape>()?.is_some() {
            n += 1;
        }
        Ok(Shape::Array(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_key::<Shape>()?.is_some() {
            map.next_value::<Shape>()?;
        }
        Ok(Shape::Object)
    }
}

/// `messages`, as far as the proxy checks it: an array whose every item
/// has a string `role`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Messages {
    NotArray,
    Array {
        len: usize,
        /// The first item without a string `role`.
        roleless: Option<usize>,
    },
}

deserialize_with!(Messages, MessagesOf);

struct MessagesOf;

impl<'de> Visitor<'de> for MessagesOf {
    type Value = Messages;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    scalars_read_as!(Messages::NotArray);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Messages, A::Error> {
        ShapeOf.visit_map(map).map(|_| Messages::NotArray)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
        let (mut len, mut roleless) = (0, None);
        while let Some(has_role) = seq.next_element::<HasRole>()? {
            if !has_role.0 && roleless.is_none() {
                roleless = Some(len);
            }
            len += 1;
        }
        Ok(Messages::Array { len, roleless })
    }
}

/// One message: whether it is an object with a string `role`.
struct HasRole(bool);

deserialize_with!(HasRole, HasRoleOf);

struct HasRoleOf;

impl<'de> Visitor<'de> for HasRoleOf {
    type Value = HasRole;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    scalars_read_as!(HasRole(false));
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<HasRole, A::Error> {
        ShapeOf.visit_seq(seq).map(|_| HasRole(false))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HasRole, A::Error> {
        let mut role = false;
        while let Some(key) = map.next_key::<Key>()? {
            let shape = map.next_value::<Shape>()?;
            if key == Key::Role {
                role = shape == Shape::Str;
            }
        }
        Ok(HasRole(role))
    }
}

/// The keys the scan keeps values of; any other is `Other`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    Model,
    Stream,
    StreamOptions,
    Messages,
    Input,
    Prompt,
    MaxTokens,
    MaxCompletionTokens,
    Role,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyOf)
    }
}

struct KeyOf;

impl Visitor<'_> for KeyOf {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "stream_options" => Key::StreamOptions,
            "messages" => Key::Messages,
            "input" => Key::Input,
            "prompt" => Key::Prompt,
            "max_tokens" => Key::MaxTokens,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            "role" => Key::Role,
            _ => Key::Other,
        })
    }
}

/// A request body's top-level object, checked whole; what the proxy reads of it.
#[derive(Debug, Default)]
pub(super) struct Scanned<'a> {
    /// `model` as written (its place in the body is its offset), and how
    /// many times it was given.
    pub model: Option<&'a RawValue>,
    pub models: usize,
    pub stream: Option<Shape>,
    pub stream_options: Option<Shape>,
    pub messages: Option<Messages>,
    pub input: Option<Shape>,
    pub prompt: Option<Shape>,
    pub max_tokens: Option<Shape>,
    pub max_completion_tokens: Option<Shape>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scanned<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ScannedOf)
    }
}

struct ScannedOf;

impl<'de> Visitor<'de> for ScannedOf {
    type Value = Scanned<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned<'de>, A::Error> {
        let mut s = Scanned::default();
        // A repeated key: the last one counts, as in a parsed tree.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => {
                    let raw: &'de RawValue = map.next_value()?;
                    serde_json::from_str::<Shape>(raw.get()).map_err(de::Error::custom)?;
                    s.model = Some(raw);
                    s.models += 1;
                }
                Key::Messages => s.messages = Some(map.next_value()?),
                key => {
                    let shape = map.next_value::<Shape>()?;
                    let slot = match key {
                        Key::Stream => &mut s.stream,
                        Key::StreamOptions => &mut s.stream_options,
                        Key::Input => &mut s.input,
                        Key::Prompt => &mut s.prompt,
                        Key::MaxTokens => &mut s.max_tokens,
                        Key::MaxCompletionTokens => &mut s.max_completion_tokens,
                        _ => continue,
                    };
                    *slot = Some(shape);
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The scan refuses exactly what a `Value` parse refuses.
    #[test]
    fn refuses_what_a_tree_parse_refuses() {
        let bodies: &[&[u8]] = &[
            br#"{"model":"m","temperature":1e400}"#,
            br#"{"model":"m","x":"\ud800"}"#,
            br#"{"model":"m","x":"\q"}"#,
            b"{\"model\":\"m\",\"x\":\"\xff\"}",
            b"{\"model\":\"m\",\"\xff\":1}",
            br#"{"model":"m","x":[1,2,}"#,
            br#"{"model":1e999}"#,
            br#"{"model":"m"} x"#,
            br#"{"model":"m","messages":[{"role":"user","content":"\u00zz"}]}"#,
            br#"{"model":"m","x":-0.5e-400,"y":18446744073709551616}"#,
            br#"{"model":"m","x":"ok","y":[{"z":null,"w":true}]}"#,
        ];
        for body in bodies {
            let tree = serde_json::from_slice::<Value>(body).is_ok();
            let scan = serde_json::from_slice::<Scanned>(body).is_ok();
            assert_eq!(scan, tree, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_slice::<Scanned>(deep.as_bytes()).is_err());
    }

    #[test]
    fn keeps_what_routing_reads() {
        let body = br#"{"model":"a","stream":true,"max_tokens":64,"model":"b\"c",
            "messages":[{"role":"user"},{"content":"x"},{"role":1}],"input":null}"#;
        let s: Scanned = serde_json::from_slice(body).unwrap();
        assert_eq!(s.model.unwrap().get(), r#""b\"c""#);
        assert_eq!(s.models, 2);
        assert_eq!(s.stream, Some(Shape::Bool(true)));
        assert_eq!(s.max_tokens, Some(Shape::Count(64)));
        assert_eq!(
            s.messages,
            Some(Messages::Array {
                len: 3,
                roleless: Some(1)
            })
        );
        assert_eq!(s.input, Some(Shape::Null));
        assert_eq!(s.prompt, None);
    }
}
