//! The Responses dialect (`POST /v1/responses`), translated onto the
//! canonical chat exchange and back, so failover, compression and limits
//! apply unchanged whatever the upstream speaks.
//!
//! - [`request`]: a Responses request -> the chat request
//! - [`answer`]: a chat completion -> the Response object
//! - [`stream`]: a chat stream -> the Responses events
//! - [`stored`]: a stored response read back as a conversation and as items

pub mod answer;
pub mod request;
pub mod stored;
pub mod stream;

pub use answer::{envelope, from_chat, Meta};
pub use request::Request;
pub use stream::ResponseEvents;

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`, `rs`).
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}
