//! A small HTTP/1.1 server around an axum [`Router`] that, unlike `axum::serve`, can be taken
//! down and brought back on the same port, and can reset individual connections.
//!
//! Both are needed to imitate an IdP that goes away: `down` must make new connections fail with
//! "connection refused" *and* cut connections that are already open (Envoy keeps its callout
//! connections alive), and the `Reset` fault must abort one exchange mid-request.
//!
//! With an [`Acceptor`] (the IdP's TLS mode, `tls.rs`) each connection is HTTPS. With
//! [`ConnOpts::raw_heads`] (the echo's) a handler sees the request head as it came in bytes,
//! header names in their case, which hyper's `HeaderMap` does not keep.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::tls::Acceptor;

/// Request extension identifying the TCP connection a request arrived on, so a handler can
/// reset that connection instead of answering.
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<Notify>);

impl ConnHandle {
    /// Drops the connection with a TCP RST and never completes: the handler's future is
    /// cancelled together with the connection.
    pub(crate) async fn reset<T>(&self) -> T {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// Binds `127.0.0.1:port` (`0` for any free port).
pub(crate) async fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"))
}

/// How each connection is served.
#[derive(Clone, Default)]
pub(crate) struct ConnOpts {
    /// HTTPS: a TLS handshake first.
    pub(crate) tls: Option<Acceptor>,
    /// One request per connection (no keep-alive), whose bytes as read are given to the
    /// handler as a [`RawHead`] request extension.
    pub(crate) raw_heads: bool,
}

/// Request extension: the bytes read on the request's connection, its head first (with
/// [`ConnOpts::raw_heads`], the connection carries that request only).
#[derive(Clone)]
pub(crate) struct RawHead(Arc<Mutex<Vec<u8>>>);

/// At most this much of a connection is kept for [`RawHead`].
const RAW_HEAD_BYTES: usize = 64 * 1024;

impl RawHead {
    /// The header names of the request head, as sent (case and order kept); `None` if the
    /// bytes are not a complete HTTP/1 request head.
    pub(crate) fn header_names(&self) -> Option<Vec<String>> {
        let bytes = self.0.lock().unwrap().clone();
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&bytes) {
            Ok(httparse::Status::Complete(_)) => {
                Some(request.headers.iter().map(|h| h.name.to_string()).collect())
            }
            _ => None,
        }
    }
}

/// A connection that keeps a copy of what is read from it, when `seen` is given.
struct Recording<S> {
    inner: S,
    seen: Option<Arc<Mutex<Vec<u8>>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(seen)) = (&polled, &self.seen) {
            let mut seen = seen.lock().unwrap();
            let room = RAW_HEAD_BYTES.saturating_sub(seen.len());
            let new = &buf.filled()[before..];
            seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(crate) struct HttpServer {
    port: u16,
    router: Router,
    opts: ConnOpts,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `router` on an already bound listener (callers that need to know the port before
    /// building the router, like the IdP whose issuer contains it, bind first).
    /// Each connection as `opts` says.
    pub(crate) fn serve(listener: TcpListener, router: Router, opts: ConnOpts) -> HttpServer {
        let port = listener
            .local_addr()
            .expect("bound listener has an address")
            .port();
        let running = spawn(listener, router.clone(), opts.clone());
        HttpServer {
            port,
            router,
            opts,
            running: Mutex::new(Some(running)),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening and closes every open connection; returns once both are done, so a
    /// connection attempt made afterwards is refused.
    pub(crate) async fn down(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(Running { stop, task }) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Listens again on the same port. No-op when already up.
    pub(crate) async fn up(&self) {
        if self.running.lock().unwrap().is_some() {
            return;
        }
        let listener = listen(self.port).await;
        let running = spawn(listener, self.router.clone(), self.opts.clone());
        // Two concurrent `up` calls would both bind; the second bind fails with EADDRINUSE and
        // panics above, so at most one `Running` is ever stored here.
        *self.running.lock().unwrap() = Some(running);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().unwrap().take() {
            // Aborting drops the accept loop's JoinSet, which aborts every connection task.
            running.task.abort();
        }
    }
}

fn spawn(listener: TcpListener, router: Router, opts: ConnOpts) -> Running {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, router, opts, stopped));
    Running { stop, task }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    opts: ConnOpts,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Also taken when the sender is dropped together with the server.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), opts.clone()));
                }
                // Transient (e.g. EMFILE): back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow for the server's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, router: Router, opts: ConnOpts) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket, kept outside hyper (and TLS) so that a reset can
    // set SO_LINGER=0 on it: the kernel then answers the final close with RST instead of FIN.
    let Some((stream, twin)) = split_twin(stream) else {
        return;
    };
    let raw = opts.raw_heads;
    match opts.tls {
        None => serve_http(stream, twin, router, raw).await,
        Some(tls) => {
            if let Some(stream) = tls.accept(stream).await {
                serve_http(stream, twin, router, raw).await;
            }
        }
    }
}

/// HTTP/1.1 on an accepted connection, plain or TLS; `twin` is its socket, for a reset.
async fn serve_http<S>(stream: S, twin: std::net::TcpStream, router: Router, raw_heads: bool)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let reset = Arc::new(Notify::new());
    let handle = ConnHandle(reset.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let raw = raw_heads.then(|| RawHead(seen.clone()));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        if let Some(raw) = &raw {
            request.extensions_mut().insert(raw.clone());
        }
        router.clone().oneshot(request)
    });
    let stream = Recording {
        inner: stream,
        seen: raw_heads.then_some(seen),
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(!raw_heads)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = reset.notified() => {
            let _ = socket2::SockRef::from(&twin).set_linger(Some(Duration::ZERO));
        }
    }
    // Both descriptors are closed here; the last close sends the RST when lingering is off.
}

fn split_twin(stream: TcpStream) -> Option<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std().ok()?;
    let twin = std_stream.try_clone().ok()?;
    let stream = TcpStream::from_std(std_stream).ok()?;
    Some((stream, twin))
}

/// `http://127.0.0.1:<port>`.
pub(crate) fn origin(port: u16) -> String {
    format!("http://{}", SocketAddr::from(([127, 0, 0, 1], port)))
}
