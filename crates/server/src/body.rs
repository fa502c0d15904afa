//! Request bodies read with a size limit, for every endpoint that takes one (REST JSON and
//! uploads, Omaha, FleetLock): each answers in its own format, the reading and the bounded
//! drain of a refused body are here once.

use axum::body::{Body, BodyDataStream};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;

/// How much of a refused body we still read and discard before answering. Closing a socket
/// with unread data makes Linux send RST, which can destroy the answer before the client reads
/// it; draining a bounded amount lets ordinary clients see the error, while a huge body still
/// cannot make us read it all.
pub(crate) const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than the limit; `seen` bytes were read (a lower bound of its length, 0 when the
    /// declared `Content-Length` already said so).
    TooLarge {
        /// Bytes read before giving up.
        seen: usize,
    },
    /// The connection failed while reading (the message says how).
    Read(String),
}

/// Read and discard up to [`DRAIN_LIMIT`] bytes of what is left of `stream`; returns how many.
pub(crate) async fn drain(mut stream: BodyDataStream) -> usize {
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
    seen
}

/// The `Content-Length` the client declared, if it is a number.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Read a whole body of at most `limit` bytes. Counted while streaming, so a body without (or
/// with a false) `Content-Length` cannot get past the limit; a longer one is drained
/// ([`drain`]) and refused.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(format!("reading request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            let seen = buf.len() + chunk.len();
            return Err(BodyError::TooLarge {
                seen: seen + drain(stream).await,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chunked(parts: &[usize]) -> Body {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            parts.iter().map(|n| Ok(vec![b'x'; *n])).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_longer_ones_drained_and_refused() {
        assert_eq!(read_limited(chunked(&[3, 4]), 7).await.unwrap().len(), 7);
        assert_eq!(
            read_limited(chunked(&[3, 4, 5]), 7).await,
            Err(BodyError::TooLarge { seen: 12 })
        );
        // The drain stops once it read more than DRAIN_LIMIT.
        let huge = vec![1024 * 1024; 10];
        let Err(BodyError::TooLarge { seen }) = read_limited(chunked(&huge), 10).await else {
            panic!("not refused");
        };
        assert_eq!(seen, 1024 * 1024 + DRAIN_LIMIT + 1024 * 1024);
        let failing = Body::from_stream(futures_util::stream::iter(vec![Err::<Vec<u8>, _>(
            std::io::Error::other("reset"),
        )]));
        let Err(BodyError::Read(msg)) = read_limited(failing, 10).await else {
            panic!("not a read error");
        };
        assert!(msg.starts_with("reading request body: "), "{msg}");
    }
}
