//! The command line's client of the admin port: HTTPS trusting the node's certificate, HTTP Basic with the operator pair.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use zeroize::Zeroizing;

/// How a command reaches a node's admin port: flattened into every admin command.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The node's admin port.
    #[arg(
        long,
        env = "PSK_EDGE_ADMIN_URL",
        default_value = "https://127.0.0.1:8443"
    )]
    pub admin_url: String,
    /// The certificate (PEM) to trust for the admin port. Default: DATA_DIR/admin-cert.pem.
    #[arg(long)]
    pub admin_ca: Option<PathBuf>,
    /// The node's data directory: where the certificate and operator.secret are found.
    #[arg(long, env = "PSK_EDGE_DATA_DIR", default_value_os_t = crate::up::default_data_dir())]
    pub data_dir: PathBuf,
}

/// An HTTPS client of one node's admin port, authenticating with the operator pair.
pub struct AdminClient {
    host: String,
    port: u16,
    tls: tokio_rustls::TlsConnector,
    authorization: Zeroizing<String>,
}

impl AdminClient {
    /// Credentials: see [`operator_pair`].
    pub fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let url = url::Url::parse(&args.admin_url).context("--admin-url is not a URL")?;
        if url.scheme() != "https" {
            anyhow::bail!("--admin-url must start with https://");
        }
        let host = match url.host().context("--admin-url has no host")? {
            url::Host::Domain(name) => name.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let ca = args
            .admin_ca
            .clone()
            .unwrap_or_else(|| args.data_dir.join("admin-cert.pem"));
        let pem = std::fs::read(&ca)
            .with_context(|| format!("reading the admin certificate {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (key, secret) = operator_pair(args)?;
        let pair = Zeroizing::new(format!("{key}:{}", *secret));
        Ok(AdminClient {
            host,
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            authorization: Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
            )),
        })
    }

    /// One request on a fresh connection; the status and the body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to the admin port {}:{}", self.host, self.port))?;
        let name = ServerName::try_from(self.host.clone())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .context("TLS with the admin port")?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{}:{}", self.host, self.port))
            .header(http::header::AUTHORIZATION, self.authorization.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A tenant key (PSK_EDGE_API_KEY/_SECRET), else the operator pair from the
/// environment, else DATA_DIR/operator.secret.
fn operator_pair(args: &AdminArgs) -> anyhow::Result<(String, Zeroizing<String>)> {
    if let (Ok(key), Ok(secret)) = (
        std::env::var("PSK_EDGE_API_KEY"),
        std::env::var("PSK_EDGE_API_SECRET"),
    ) {
        return Ok((key, Zeroizing::new(secret)));
    }
    if let (Ok(key), Ok(secret)) = (
        std::env::var("PSK_EDGE_OPERATOR_KEY"),
        std::env::var("PSK_EDGE_OPERATOR_SECRET"),
    ) {
        return Ok((key, Zeroizing::new(secret)));
    }
    let path = args.data_dir.join("operator.secret");
    let text =
        Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
            format!("no PSK_EDGE_OPERATOR_KEY/_SECRET and no {}", path.display())
        })?);
    let Some((key, secret)) = text.trim().split_once(':') else {
        bail!("{} must hold KEY:SECRET", path.display());
    };
    Ok((key.to_owned(), Zeroizing::new(secret.to_owned())))
}
