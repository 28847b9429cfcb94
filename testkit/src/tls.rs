//! TLS for the mock IdP: a certificate authority made for the run, server certificates it
//! signs, and the rustls server side that picks a certificate by the name the client asks for
//! (SNI), as a server hosting several names does.
//!
//! ```no_run
//! # async fn demo() {
//! use testkit::idp::{IdpOpts, MockIdp};
//! use testkit::tls::{IdpTls, TestCa};
//! let ca = TestCa::new("oidcgate test CA");
//! let tls = IdpTls::new(ca.server_cert(&["idp.example.test", "127.0.0.1"]));
//! let idp = MockIdp::start_with(IdpOpts::tls("idp.example.test", tls)).await;
//! assert!(idp.issuer().starts_with("https://idp.example.test:"));
//! // Envoy trusts `ca.pem_file()` and checks the name `idp.example.test`.
//! # }
//! ```
//!
//! Nothing here reaches the network; every key is made in memory when asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A certificate authority of its own: its certificate is written to a PEM file (Envoy's
/// `trusted_ca`), which is removed when the CA is dropped.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    file: PathBuf,
}

impl TestCa {
    /// A new self-signed CA whose subject is `common_name`.
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = cert.pem();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let file = std::env::temp_dir().join(format!(
            "oidcgate-ca-{}-{}.pem",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&file, &pem).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
            file,
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A file holding [`TestCa::pem`], for Envoy's `validation_context.trusted_ca`.
    pub fn pem_file(&self) -> &Path {
        &self.file
    }

    /// A server certificate signed by this CA for `names`: DNS names, or IP addresses
    /// (`127.0.0.1`), all in its subject alternative names; the first is also its CN.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server cert params");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("signed cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified =
            CertifiedKey::from_der(vec![cert.der().clone()], key, &ring::default_provider())
                .expect("key matches its certificate");
        ServerCert {
            names,
            key: Arc::new(certified),
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A server certificate with its key, and the names it is for.
#[derive(Clone, Debug)]
pub struct ServerCert {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl ServerCert {
    /// Whether a client asking for `sni` gets this certificate: one of its names, compared
    /// without regard to case.
    fn serves(&self, sni: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(sni))
    }
}

/// What a client gets that asks for a name (SNI) the server does not hold a certificate for.
#[derive(Clone, Debug)]
pub enum UnknownName {
    /// The handshake is refused (a fatal alert), as a server hosting several names may do.
    Refuse,
    /// This certificate instead, as a CDN or load balancer serves its default one.
    Default(ServerCert),
}

/// The IdP's TLS side: the certificate for its names, what other names get, and what
/// clients asked for. A ClientHello without SNI gets the certificate (so does one naming an
/// IP address, which SNI cannot carry).
#[derive(Clone)]
pub struct IdpTls {
    resolver: Arc<Resolver>,
}

/// What the IdP's TLS side has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSeen {
    /// The SNI of every ClientHello, in order (`None`: no SNI sent).
    pub server_names: Vec<Option<String>>,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed, on either side (a certificate the client refused, a name the
    /// server refused, a client that hung up).
    pub failed_handshakes: u64,
}

#[derive(Debug)]
struct Resolver {
    cert: ServerCert,
    unknown: UnknownName,
    names: Mutex<Vec<Option<String>>>,
    handshakes: AtomicU64,
    failed: AtomicU64,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_string);
        self.names.lock().unwrap().push(sni.clone());
        match sni {
            None => Some(self.cert.key.clone()),
            Some(name) if self.cert.serves(&name) => Some(self.cert.key.clone()),
            Some(_) => match &self.unknown {
                UnknownName::Refuse => None,
                UnknownName::Default(other) => Some(other.key.clone()),
            },
        }
    }
}

impl IdpTls {
    /// Serves `cert`; a client asking for another name is refused.
    pub fn new(cert: ServerCert) -> IdpTls {
        IdpTls::with_unknown_name(cert, UnknownName::Refuse)
    }

    /// Serves `cert`; a client asking for another name gets what `unknown` says.
    pub fn with_unknown_name(cert: ServerCert, unknown: UnknownName) -> IdpTls {
        IdpTls {
            resolver: Arc::new(Resolver {
                cert,
                unknown,
                names: Mutex::default(),
                handshakes: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// What clients have asked for so far.
    pub fn seen(&self) -> TlsSeen {
        TlsSeen {
            server_names: self.resolver.names.lock().unwrap().clone(),
            handshakes: self.resolver.handshakes.load(Ordering::SeqCst),
            failed_handshakes: self.resolver.failed.load(Ordering::SeqCst),
        }
    }

    /// The server side of one connection: TLS 1.2 or 1.3, HTTP/1.1 only (what Envoy's IdP
    /// cluster speaks without `http2_protocol_options`).
    pub(crate) fn acceptor(&self) -> Acceptor {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        Acceptor {
            inner: TlsAcceptor::from(Arc::new(config)),
            resolver: self.resolver.clone(),
        }
    }
}

/// Completes TLS handshakes for the server, counting them.
#[derive(Clone)]
pub(crate) struct Acceptor {
    inner: TlsAcceptor,
    resolver: Arc<Resolver>,
}

impl Acceptor {
    /// The handshake on `stream`; `None` when it fails (the connection is then dropped).
    pub(crate) async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        match self.inner.accept(stream).await {
            Ok(tls) => {
                self.resolver.handshakes.fetch_add(1, Ordering::SeqCst);
                Some(tls)
            }
            Err(_) => {
                self.resolver.failed.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }
}
