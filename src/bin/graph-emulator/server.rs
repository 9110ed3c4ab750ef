//! The HTTP/1.1 and HTTP/2 accept loop, optionally behind TLS.
//!
//! The loop serves each connection with hyper directly instead of
//! `axum::serve`, for two reasons: TLS needs its own accept step, and a
//! `resetConnection` fault must close the connection without a response. When
//! the router returns a response marked with [`AbortConnection`], the
//! service returns an error, and hyper then closes the connection without
//! writing a response.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tower::ServiceExt;

use crate::context::AbortConnection;

/// Failure to set up TLS from `--tls-cert` and `--tls-key`.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("failed to read PEM certificates from {path}")]
    ReadCertificates {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    #[error("failed to read a PEM private key from {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("invalid TLS certificate or key")]
    Config(#[source] rustls::Error),
}

/// Error that makes hyper close a connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed by a resetConnection fault rule")]
struct ConnectionAborted;

/// Builds a TLS acceptor with the ring crypto provider, offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let read_certificates = |source| TlsSetupError::ReadCertificates {
        path: cert_path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(cert_path)
        .map_err(read_certificates)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_certificates)?;
    if certificates.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsSetupError::ReadKey {
        path: key_path.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(TlsSetupError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `shutdown` completes. Connections still open
/// then are dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(stream, peer, tls.clone(), router.clone()));
            }
            Err(error) => {
                // Errors such as too many open files pass; wait so that the
                // loop does not spin while they last.
                tracing::warn!(%error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
) {
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<AbortConnection>().is_some() {
                return Err(ConnectionAborted);
            }
            Ok(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => {
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "TLS handshake failed");
                return;
            }
        },
    };
    if let Err(error) = result {
        // Clients that disconnect early and resetConnection faults end here.
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
