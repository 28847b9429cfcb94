//! A small HTTP/1.1 server around an axum [`Router`] that, unlike `axum::serve`, can be taken
//! down and brought back on the same port, and can reset individual connections.
//!
//! Both are needed to imitate an IdP that goes away: `down` must make new connections fail with
//! "connection refused" *and* cut connections that are already open (Envoy keeps its callout
//! connections alive), and the `Reset` fault must abort one exchange mid-request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

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

pub(crate) struct HttpServer {
    port: u16,
    router: Router,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `router` on an already bound listener (callers that need to know the port before
    /// building the router, like the IdP whose issuer contains it, bind first).
    pub(crate) fn serve(listener: TcpListener, router: Router) -> HttpServer {
        let port = listener
            .local_addr()
            .expect("bound listener has an address")
            .port();
        let running = spawn(listener, router.clone());
        HttpServer {
            port,
            router,
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
        let running = spawn(listener, self.router.clone());
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

fn spawn(listener: TcpListener, router: Router) -> Running {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, router, stopped));
    Running { stop, task }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Also taken when the sender is dropped together with the server.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone()));
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

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket, kept outside hyper so that a reset can set
    // SO_LINGER=0 on it: the kernel then answers the final close with RST instead of FIN.
    let Some((stream, twin)) = split_twin(stream) else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let handle = ConnHandle(reset.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
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
