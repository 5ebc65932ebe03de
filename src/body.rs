//! The one body type the proxy sends and receives, whatever made it: a
//! socket (hyper `Incoming`), a buffer, a relay channel, or the mock provider.

use std::convert::Infallible;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed by a channel: the sender side writes frames, and dropping the
/// receiver (the client went away) makes every further send fail, which is
/// how producers learn to stop.
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, BoxError>(Frame::data(bytes)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

pub fn from_incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// A body that holds `guard` until it is done or dropped: how work that
/// outlives the handler (a relayed stream) stays counted as in flight.
pub fn with_guard<G: Send + Sync + Unpin + 'static>(inner: Body, guard: G) -> Body {
    Guarded {
        inner,
        _guard: guard,
    }
    .boxed()
}

struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
