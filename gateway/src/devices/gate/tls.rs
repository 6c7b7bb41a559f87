//! The device listener's TLS server configuration (docs/operations.md, "Device security: what
//! is enforced where").

use std::sync::Arc;

use tokio_rustls::rustls;

use crate::config::{files, DeviceTls};

/// Builds the device listener's TLS server configuration from the files the config named
/// (checked at load, read again here at start). `Err` is `(which key under devices, message)`.
pub fn server_config(tls: &DeviceTls) -> Result<Arc<rustls::ServerConfig>, (String, String)> {
    let files = files::load_device_tls(tls)?;
    let provider = files::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls_cert_file".to_owned(), e.to_string()))?;
    let builder = match (files.client_roots, &tls.client_ca_file) {
        (Some(roots), Some(ca_file)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ("tls_client_ca_file".to_owned(), format!("{ca_file}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(files.certs, files.key).map_err(|e| files::device_key_mismatch(tls, &e))?;
    Ok(Arc::new(config))
}
