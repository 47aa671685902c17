//! Every API client k1s builds retries a request the server refused with 429 (Too Many
//! Requests) after its `Retry-After`, up to ten times, as client-go does. A burst that fills
//! the API server's in-flight limits then slows the components down instead of losing their
//! writes: the in-process controllers and simulated nodes, `k1s agent` over HTTPS and the scale
//! benchmark all share this layer ([`RetryOn429`] in a `kube::Client` stack, or [`client`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tokio::sync::Mutex;
use tower::{Service, ServiceExt};

/// Retries of a request refused with 429 (client-go's maxRetries).
pub const RETRIES_ON_429: u32 = 10;

/// How long the server asks to wait, from Retry-After in seconds (1 s when absent, at most 10).
pub fn retry_after<B>(resp: &Response<B>) -> Duration {
    let secs = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.clamp(1, 10))
}

/// The layer that wraps a client's service in [`Retry`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryOn429;

impl<S> tower::Layer<S> for RetryOn429 {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
}

/// Sends a request again while the answer is 429. Request bodies kube builds are whole byte
/// buffers, so they can be sent again; a streamed body is sent once. The inner service (kube's
/// HTTPS stack is not `Clone`) is shared, and locked only to start each attempt.
#[derive(Debug)]
pub struct Retry<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
        }
    }
}

impl<S, B> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Each attempt waits for the inner service when it starts.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        // Starts one attempt: the lock is held until the request is handed over, not while it
        // is answered.
        let send = move |req: Request<Body>| {
            let inner = inner.clone();
            async move {
                let mut svc = inner.lock().await;
                svc.ready().await?;
                Ok::<_, S::Error>(svc.call(req))
            }
        };
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut attempt = 0;
            loop {
                let copy = if attempt < RETRIES_ON_429 {
                    body.try_clone()
                } else {
                    None
                };
                let Some(copy) = copy else {
                    return send(Request::from_parts(parts, body)).await?.await;
                };
                let resp = send(Request::from_parts(parts.clone(), copy))
                    .await?
                    .await?;
                if resp.status() != StatusCode::TOO_MANY_REQUESTS {
                    return Ok(resp);
                }
                attempt += 1;
                let wait = retry_after(&resp);
                tracing::debug!(uri = %parts.uri, attempt, ?wait, "the API server answered 429; retrying");
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// A client for `config` whose requests are retried on 429.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RetryOn429)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A server that answers 429 `busy` times, then 200 with the body it was sent. (Retry-After
    /// is at least 1 s: the tests wait in real time.)
    fn server(
        busy: u32,
        calls: Arc<AtomicU32>,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = kube::Error,
        Future = impl Future<Output = Result<Response<Body>, kube::Error>> + Send,
    > {
        tower::service_fn(move |req: Request<Body>| {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let body = req.into_body().collect_bytes().await?;
                let status = if n < busy {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::OK
                };
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("0"),
                );
                Ok(resp)
            }
        })
    }

    #[tokio::test]
    async fn a_refused_request_is_sent_again_with_its_body() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut svc = tower::Layer::layer(&RetryOn429, server(2, calls.clone()));
        let req = Request::new(Body::from(b"{\"a\":1}".to_vec()));
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let body = resp.into_body().collect_bytes().await.unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn the_429_is_returned_after_ten_retries() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut svc = tower::Layer::layer(&RetryOn429, server(u32::MAX, calls.clone()));
        let req = Request::new(Body::from(b"x".to_vec()));
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(calls.load(Ordering::SeqCst), RETRIES_ON_429 + 1);
    }

    #[test]
    fn retry_after_is_clamped_to_one_to_ten_seconds() {
        let with = |v: &'static str| {
            let mut r = Response::new(());
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(v));
            retry_after(&r)
        };
        assert_eq!(with("0"), Duration::from_secs(1));
        assert_eq!(with("3"), Duration::from_secs(3));
        assert_eq!(with("600"), Duration::from_secs(10));
        assert_eq!(retry_after(&Response::new(())), Duration::from_secs(1));
    }
}
