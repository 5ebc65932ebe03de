//! The Responses dialect (`POST /v1/responses`), translated onto the
//! canonical chat exchange and back, so failover, compression and limits
//! apply unchanged whatever the upstream speaks.
//!
//! - [`request`]: a Responses request -> the chat request
//! - [`answer`]: a chat completion -> the Response object

pub mod answer;
pub mod request;

pub use answer::{from_chat, Meta};
pub use request::to_chat;

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`, `rs`).
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}
