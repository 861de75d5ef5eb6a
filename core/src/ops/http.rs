//! A minimal HTTP/1.1 server for operations: `GET /metrics` (with the `prometheus`
//! feature), `GET /health/live` and `GET /health/ready`.
//!
//! One request per connection (every answer says `Connection: close`), up to 32 connections
//! served at once (more are closed unanswered), a request head of at most 8 KiB read within
//! 10 s and parsed by `httparse`. A hand-written loop serves it rather than `hyper`: four
//! fixed answers to probes and a scraper need no keep-alive, bodies or HTTP/2, and the
//! runtime's dependencies stay few. It serves while the runtime runs, through its graceful shutdown, and stops
//! listening before [`Runtime::run`](crate::Runtime::run) returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::health::{Health, HealthStatus};
use crate::error::{Error, Result};

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

/// What the server answers with.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) health: Health,
    #[cfg(feature = "prometheus")]
    pub(crate) prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

/// Binds `addr`.
///
/// # Errors
/// [`Error::Listen`] when the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
}

/// A running server; dropping it stops it at once.
#[derive(Debug)]
pub(crate) struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` in the background.
    pub(crate) fn start(listener: TcpListener, endpoints: Endpoints) -> Self {
        let (stop, stopped) = oneshot::channel();
        Self { stop: Some(stop), task: tokio::spawn(serve(listener, Arc::new(endpoints), stopped)) }
    }

    /// Stops listening and waits until the listener is closed.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, mut stopped: oneshot::Receiver<()>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    #[cfg(feature = "prometheus")]
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        #[cfg(feature = "prometheus")]
        let upkept = upkeep.tick();
        #[cfg(not(feature = "prometheus"))]
        let upkept = std::future::pending::<tokio::time::Instant>();
        tokio::select! {
            _ = &mut stopped => break,
            _ = upkept => {
                // Folds recorded histogram samples into their buckets, scraped or not.
                #[cfg(feature = "prometheus")]
                endpoints.prometheus.run_upkeep();
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        tracing::debug!("http: {MAX_CONNECTIONS} connections open already; closing the one from {peer}");
                        continue;
                    };
                    let endpoints = Arc::clone(&endpoints);
                    connections.spawn(async move {
                        answer(stream, &endpoints).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::debug!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// A response: status and a plain-text body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Self { status, reason, content_type: "text/plain; charset=utf-8", body, allow: false }
    }

    fn probe(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Up => Self::text(200, "OK", "ok"),
            HealthStatus::Down(reason) => Self::text(503, "Service Unavailable", reason),
        }
    }
}

/// Reads one request from `stream` and answers it.
async fn answer(mut stream: TcpStream, endpoints: &Endpoints) {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) | Ok(Err(_)) => return, // closed before a request, or broken
        Err(_) => {
            let response = Response::text(408, "Request Timeout", "no complete request within 10 s");
            let _ = write(&mut stream, &response, false).await;
            return;
        }
    };
    let (response, head_only) = match request {
        Ok(Request { method, path }) => (route(&method, &path, endpoints).await, method == "HEAD"),
        Err(response) => (response, false),
    };
    let _ = write(&mut stream, &response, head_only).await;
}

/// The method and path of a request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// Reads until the request head is complete: the request, or the 400 to answer with;
/// `Ok(None)` when the client closed without sending anything.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<std::result::Result<Request, Response>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok((!head.is_empty()).then(|| Err(bad_request("the request head broke off"))));
        }
        head.extend_from_slice(&chunk[..read]);
        match parse(&head) {
            Ok(None) if head.len() > MAX_HEAD => return Ok(Some(Err(bad_request("the request head is too long")))),
            Ok(None) => {}
            Ok(Some(request)) => return Ok(Some(Ok(request))),
            Err(response) => return Ok(Some(Err(response))),
        }
    }
}

/// A 400 saying `why`.
fn bad_request(why: &str) -> Response {
    Response::text(400, "Bad Request", format!("bad request: {why}"))
}

/// The request in `head`, parsed by `httparse` (HTTP/1.0 and 1.1 only): `Ok(None)` while
/// the head is incomplete, or the 400 to answer with.
fn parse(head: &[u8]) -> std::result::Result<Option<Request>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (request.method, request.path) else {
                return Err(bad_request("no request line"));
            };
            if !target.starts_with('/') {
                return Err(bad_request("the target must be a path"));
            }
            let path = target.split(['?', '#']).next().unwrap_or(target);
            Ok(Some(Request { method: method.to_owned(), path: path.to_owned() }))
        }
        Err(error) => Err(bad_request(&format!("{error} (only HTTP/1.0 and HTTP/1.1 are spoken here)"))),
    }
}

async fn route(method: &str, path: &str, endpoints: &Endpoints) -> Response {
    if !matches!(path, "/metrics" | "/health/live" | "/health/ready") {
        return Response::text(
            404,
            "Not Found",
            format!("no such path: {path} (try /metrics, /health/live, /health/ready)"),
        );
    }
    if !matches!(method, "GET" | "HEAD") {
        let mut response = Response::text(405, "Method Not Allowed", format!("{method} is not allowed here: use GET"));
        response.allow = true;
        return response;
    }
    match path {
        "/health/live" => Response::probe(endpoints.health.liveness()),
        "/health/ready" => Response::probe(endpoints.health.readiness().await),
        _ => metrics(endpoints),
    }
}

#[cfg(feature = "prometheus")]
fn metrics(endpoints: &Endpoints) -> Response {
    Response {
        status: 200,
        reason: "OK",
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: endpoints.prometheus.render(),
        allow: false,
    }
}

#[cfg(not(feature = "prometheus"))]
fn metrics(_: &Endpoints) -> Response {
    Response::text(404, "Not Found", "metrics are exported with the `prometheus` feature of exactly")
}

async fn write(stream: &mut TcpStream, response: &Response, head_only: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.reason,
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_waits_for_the_whole_head() {
        let request = |method: &str, path: &str| Ok(Some(Request { method: method.into(), path: path.into() }));
        assert_eq!(parse(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"), request("GET", "/health/live"));
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\n\n"), request("GET", "/metrics"));
        assert_eq!(parse(b"HEAD /metrics HTTP/1.1\r\n"), Ok(None), "incomplete: read on");
        assert_eq!(parse(b""), Ok(None));
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(bad).is_err_and(|r| r.status == 400), "{:?} was accepted", String::from_utf8_lossy(bad));
        }
    }
}
