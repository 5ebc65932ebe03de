//! `config show`: the effective config written back as routes.toml.
//!
//! The typed [`Config`] is serialized rather than printed key by key, so the
//! output cannot drift from what `parse` reads (the `show_round_trips` test
//! parses it again). [`Secret`](super::Secret) has no `Serialize`, so a key
//! cannot be printed by mistake; whether each key variable is set is added as
//! a comment after it instead.

use std::collections::HashMap;
use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use toml_edit::visit_mut::{self, VisitMut};
use toml_edit::{Item, KeyMut, Table, Value};

use super::raw::CompressionMode;
use super::read::Choice;
use super::{Config, Provider, Route};

impl Config {
    /// This config as routes.toml text, with every secret left out.
    pub fn to_toml(&self) -> String {
        let mut doc = match toml_edit::ser::to_document(self) {
            Ok(doc) => doc,
            Err(err) => return format!("# cannot write the config as TOML: {err}\n"),
        };
        let mut layout = Layout {
            set: self.key_variables(),
            in_value: false,
        };
        layout.visit_document_mut(&mut doc);
        if let Some(providers) = doc.get_mut("providers").and_then(Item::as_table_mut) {
            for p in self.providers.iter().filter(|p| !p.enabled) {
                if let Some(table) = providers.get_mut(&p.name).and_then(Item::as_table_mut) {
                    table.decor_mut().set_suffix("  # disabled");
                }
            }
        }
        format!("# effective config from {}\n{doc}", self.source)
    }

    /// Every variable that holds a key, and whether it is set.
    fn key_variables(&self) -> HashMap<String, bool> {
        let server = &self.server;
        let admin = server
            .admin_key_env
            .iter()
            .map(|var| (var.clone(), server.admin_key.is_some()));
        let clients = server
            .keys
            .iter()
            .map(|k| (k.key_env.clone(), k.key.is_some()));
        let providers = self.providers.iter().filter_map(|p| {
            let var = p.api_key_env.clone()?;
            Some((var, p.api_key.is_some()))
        });
        let cluster =
            (self.cluster.iter()).map(|c| (c.redis_url_env.clone(), c.redis_url.is_some()));
        admin
            .chain(clients)
            .chain(providers)
            .chain(cluster)
            .collect()
    }
}

/// Lays the serialized document out like routes.toml ([sections] and
/// [[arrays]] rather than inline tables) and notes after each `*_env` key
/// whether its variable is set.
struct Layout {
    set: HashMap<String, bool>,
    /// Inside a value such as an inline array: left as written.
    in_value: bool,
}

impl VisitMut for Layout {
    fn visit_item_mut(&mut self, node: &mut Item) {
        if !self.in_value {
            // Inline tables become [tables], arrays of them [[arrays]].
            let item = std::mem::take(node);
            let item = item.into_table().map(Item::Table).unwrap_or_else(|i| i);
            *node = item
                .into_array_of_tables()
                .map(Item::ArrayOfTables)
                .unwrap_or_else(|i| i);
        }
        visit_mut::visit_item_mut(self, node);
    }

    fn visit_table_mut(&mut self, node: &mut Table) {
        // A table holding only tables ([providers]) needs no header of its own.
        if !node.is_empty() {
            node.set_implicit(true);
        }
        visit_mut::visit_table_mut(self, node);
    }

    fn visit_value_mut(&mut self, node: &mut Value) {
        let outer = self.in_value;
        self.in_value = true;
        visit_mut::visit_value_mut(self, node);
        self.in_value = outer;
    }

    fn visit_table_like_kv_mut(&mut self, key: KeyMut<'_>, node: &mut Item) {
        if key.get().ends_with("_env") {
            if let Some(value) = node.as_value_mut() {
                let set = value.as_str().and_then(|var| self.set.get(var));
                let note = if set == Some(&true) {
                    "set (value hidden)"
                } else {
                    "not set"
                };
                value.decor_mut().set_suffix(format!("  # {note}"));
            }
        }
        visit_mut::visit_table_like_kv_mut(self, key, node);
    }
}

/// Providers and routes are tables keyed by name, in file order.
pub(super) trait HasName {
    fn name(&self) -> &str;
}

impl HasName for Provider {
    fn name(&self) -> &str {
        &self.name
    }
}

impl HasName for Route {
    fn name(&self) -> &str {
        &self.name
    }
}

pub(super) fn by_name<S: Serializer, T: HasName + Serialize>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(items.len()))?;
    for item in items {
        map.serialize_entry(item.name(), item)?;
    }
    map.end()
}

/// A header may carry a credential (a custom auth scheme): show that it is
/// set, not its value.
pub(super) fn headers<S: Serializer>(
    headers: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(headers.len()))?;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let secret = ["auth", "key", "token", "secret", "cookie"]
            .iter()
            .any(|word| lower.contains(word));
        let value = if secret { "(set, value hidden)" } else { value };
        map.serialize_entry(name, value)?;
    }
    map.end()
}

pub(super) fn duration<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*duration))
}

/// The word routes.toml uses for a [`Choice`].
pub(super) fn word<S: Serializer, T: Choice>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.word())
}

pub(super) fn compression_mode<S: Serializer>(on: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(CompressionMode(*on).word())
}
