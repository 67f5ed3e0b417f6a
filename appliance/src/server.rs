//! The listeners: HTTPS (the application) and plain HTTP (redirect to HTTPS,
//! CA download). Thin: accept, TLS handshake, hand the connection to hyper.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use netstack::limits::{ConnGate, ConnPermit};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its first bytes after the handshake (browsers
/// open connections ahead of use, so this is generous).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a client has for a request's headers, and that an HTTP/1.1
/// connection may stay idle between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

async fn serve_connection<I>(io: I, peer: SocketAddr, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(100)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// A stream whose first bytes were already read: they are yielded first.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts the next connection the gate admits; one over budget is closed
/// at once (so the backlog drains), and an accept error (out of file
/// descriptors) is waited out, never spun on.
async fn accept(listener: &TcpListener, gate: &ConnGate, stop: &CancellationToken) -> Option<(TcpStream, SocketAddr, ConnPermit)> {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept on {:?}: {e}", listener.local_addr().ok());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return None,
        };
        match gate.admit(peer.ip()) {
            Ok(permit) => return Some((tcp, peer, permit)),
            Err(why) => tracing::debug!(%peer, ?why, "web connection refused"),
        }
    }
}

/// Accepts TLS connections until `stop` fires. With `turn`, a connection
/// that negotiates ALPN `stun.turn` (RFC 7443), or whose first bytes are
/// STUN, goes to the TURN server instead of HTTP: TURN over TLS on the
/// HTTPS port, for networks that allow nothing but 443.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    turn: Option<netstack::driver::StreamEvents>,
    gate: ConnGate,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let Ok(local) = listener.local_addr() else { return };
    let turn_five = move |peer| netstack::turn::FiveTuple { client: peer, server: local, transport: netstack::turn::Transport::Tls };
    while let Some((tcp, peer, permit)) = accept(&listener, &gate, &stop).await {
        let (acceptor, app, turn, stop) = (acceptor.clone(), app.clone(), turn.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                // a TLS-ALPN-01 validation: the handshake was the answer
                Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(crate::certs::local::ACME_TLS_ALPN) => {
                    tracing::debug!(%peer, "answered a TLS-ALPN-01 validation");
                }
                Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(crate::certs::local::TURN_ALPN) => match turn {
                    Some(events) => netstack::driver::serve_stream(stream, turn_five(peer), events, stop).await,
                    None => tracing::debug!(%peer, "TURN over TLS asked, but TURN is off"),
                },
                Ok(Ok(stream)) if turn.is_some() => {
                    let mut stream = stream;
                    let mut first = [0u8; 1];
                    let Ok(Ok(1)) = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.read(&mut first)).await else {
                        return;
                    };
                    let stream = Prefixed { prefix: first.to_vec(), at: 0, inner: stream };
                    // A TURN session starts with a STUN request (first byte
                    // 0-3); ChannelData (0x40-0x4F) only ever follows one and
                    // collides with ASCII methods such as GET, HEAD, DELETE.
                    if first[0] <= 0x03 {
                        let events = turn.expect("checked");
                        netstack::driver::serve_stream(stream, turn_five(peer), events, stop).await;
                    } else {
                        serve_connection(stream, peer, app).await;
                    }
                }
                Ok(Ok(stream)) => serve_connection(stream, peer, app).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Plain HTTP: everything redirects to the same path over HTTPS, except the
/// CA certificate, which must be downloadable before it is trusted.
pub async fn serve_http(
    listener: TcpListener,
    https_port: u16,
    ca_pem: String,
    challenges: Arc<crate::certs::acme::Challenges>,
    gate: ConnGate,
    stop: CancellationToken,
) {
    let app = Router::new()
        // ACME HTTP-01 (RFC 8555 §8.3): the key authorization of a pending
        // challenge, nothing else
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move |axum::extract::Path(token): axum::extract::Path<String>| {
                let answer = challenges.http_answer(&token);
                async move {
                    match answer {
                        Some(a) => ([(header::CONTENT_TYPE, "application/octet-stream")], a).into_response(),
                        None => (StatusCode::NOT_FOUND, "no such challenge").into_response(),
                    }
                }
            }),
        )
        .route(
            "/parvis-ca.pem",
            axum::routing::get(move || {
                let pem = ca_pem.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/x-pem-file"),
                      (header::CONTENT_DISPOSITION, "attachment; filename=\"parvis-ca.pem\"")], pem)
                }
            }),
        )
        .fallback(move |req: Request<axum::body::Body>| async move { redirect(&req, https_port) });
    while let Some((tcp, peer, permit)) = accept(&listener, &gate, &stop).await {
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection::<TcpStream>(tcp, peer, app).await;
        });
    }
}

fn redirect(req: &Request<axum::body::Body>, https_port: u16) -> Response {
    let host = crate::web::request_host(req.headers(), req.uri()).unwrap_or("localhost");
    let host_only = crate::web::strip_port(host);
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = format!("https://{host_only}{port}{path}");
    match (target.parse::<Uri>(), HeaderValue::from_str(&target)) {
        (Ok(_), Ok(v)) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        _ => (StatusCode::BAD_REQUEST, "bad Host header").into_response(),
    }
}
