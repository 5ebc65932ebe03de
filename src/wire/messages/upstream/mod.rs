//! The canonical request as a Messages request, and a Messages upstream's
//! answers (JSON and streamed events) back as chat.
