//! TLS for `https://` session checks (rustls, the platform's roots).

/// TLS for `https://`: the platform's roots and hostname check (as reqwest),
/// HTTP/1.1 by ALPN.
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    pub fn for_url(url: &url::Url) -> anyhow::Result<Self> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = match url.host() {
            Some(url::Host::Domain(d)) => rustls::pki_types::ServerName::try_from(d.to_owned())?,
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip).into(),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip).into(),
            None => anyhow::bail!("session_check.url has no host"),
        };
        Ok(Self { connector: std::sync::Arc::new(config).into(), name })
    }
}
