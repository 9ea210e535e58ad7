//! The API over HTTPS (`--tls-listen` with `--tls-cert` and `--tls-key`): the same API as
//! `--listen`, for callers on other machines, above all routers, whose route stream carries the
//! certificates' private keys. Handshakes run in tasks of their own (bounded in time), so a
//! client that stalls one holds up nobody else; axum serves what they yield.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait to be accepted (in the kernel's
/// backlog), so a flood costs no more than this many handshakes' state.
const HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("--tls-cert and --tls-key: {0}")]
    Config(rustls::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Connections whose handshake succeeded, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Binds `addr`, serving the chain in `cert` with the key in `key` (PEM files).
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> Result<TlsListener, TlsError> {
        let file = |path: &Path, why: String| TlsError::File {
            path: path.to_path_buf(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file(cert, e.to_string()))?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file(key, e.to_string()))?;
        // ring, as the router (through Pingora) and the ACME client use. rustls 0.23.48
        // deprecates it for lacking post-quantum key exchange, which needs aws-lc-rs, a C
        // build drove keeps out.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| TlsError::Bind { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| TlsError::Bind { addr, source })?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener { local, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    loop {
        // Ends (letting the port go) once the server is gone.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = ready.closed() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = ready.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
