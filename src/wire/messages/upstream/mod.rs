//! The canonical request as a Messages request, and a Messages upstream's
//! answers (JSON and streamed events) back as chat.
//!
//! - [`request()`]: the chat request -> a Messages request body
//! - [`answer()`]: a Messages answer -> a `chat.completion`
//! - [`ChatChunks`]: Messages stream events -> chat chunks

mod answer;
mod request;
mod stream;

pub use answer::answer;
pub use request::request;
pub use stream::ChatChunks;
