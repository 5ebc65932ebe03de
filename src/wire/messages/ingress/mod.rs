//! A client's Messages request as the canonical request, and the answer
//! back in the Messages dialect (a Message, stream events, errors).
//!
//! - [`request`]: `POST /v1/messages` (and `count_tokens`) bodies -> chat
//! - [`content`]: the conversation's blocks -> chat messages
//! - [`answer`]: a chat completion -> the Message
//! - [`stream`]: a chat stream -> Anthropic's stream events
//! - [`error`]: errors in Anthropic's shape

pub mod answer;
mod content;
pub mod error;
pub mod request;
pub mod stream;

pub use answer::answer;
pub use error::{error_from_openai, error_json, error_response};
pub use request::{parse, parse_count, Request};
pub use stream::MessagesEvents;

/// A fresh id with Anthropic's prefix for its kind (`msg`, `toolu`).
fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}
