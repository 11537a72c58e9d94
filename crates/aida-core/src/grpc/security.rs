//! The credential every gRPC call between AIDA's services carries: a shared
//! secret (`AIDA_INTERNAL_TOKEN` or `AIDA_INTERNAL_TOKEN_FILE`, sent as
//! `authorization: Bearer ...` and checked in constant time), mutual TLS
//! (`AIDA_TLS_CERT`, `AIDA_TLS_KEY`, `AIDA_TLS_CA`: PEM files; servers
//! require a client certificate signed by the CA), or both. A service
//! refuses to start with neither.
//!
//! Health and reflection stay open (grpcurl keeps working without the
//! secret); every AIDA service is wrapped in [`RequireCredential`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Request, Status};

use crate::secret;

/// The environment variable of the shared secret.
pub const TOKEN_VAR: &str = "AIDA_INTERNAL_TOKEN";
/// The shortest shared secret accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 32;

/// A channel to another AIDA service that presents this service's
/// credential on every call.
pub type AuthChannel = InterceptedService<Channel, AttachCredential>;

/// How this service proves itself to the others and checks callers.
#[derive(Clone, Default)]
pub struct Security {
    token: Option<Arc<SecretString>>,
    tls: Option<Arc<TlsFiles>>,
}

/// PEM contents, read once at start.
struct TlsFiles {
    cert: Vec<u8>,
    key: SecretBytes,
    ca: Vec<u8>,
}

/// A private key's bytes, which never print.
struct SecretBytes(Vec<u8>);

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("mutual_tls", &self.tls.is_some())
            .finish()
    }
}

impl Security {
    /// A shared secret only (tests, `aida dev`).
    pub fn with_token(token: SecretString) -> Self {
        Security {
            token: Some(Arc::new(token)),
            tls: None,
        }
    }

    /// Mutual TLS from PEM contents: this service's certificate and key,
    /// and the CA that signs every service's certificate. With `token`,
    /// calls also carry the shared secret.
    pub fn with_tls(cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>, token: Option<SecretString>) -> Self {
        Security {
            token: token.map(Arc::new),
            tls: Some(Arc::new(TlsFiles {
                cert,
                key: SecretBytes(key),
                ca,
            })),
        }
    }

    /// Reads `AIDA_INTERNAL_TOKEN` (or `_FILE`) and `AIDA_TLS_CERT`,
    /// `AIDA_TLS_KEY`, `AIDA_TLS_CA`, and fails unless at least one of the
    /// two is fully set.
    pub fn from_env() -> anyhow::Result<Self> {
        let token = secret::from_env(TOKEN_VAR)?;
        if let Some(token) = &token {
            secret::require_len(TOKEN_VAR, token, MIN_TOKEN_LEN)?;
        }
        let paths: Vec<Option<String>> = ["AIDA_TLS_CERT", "AIDA_TLS_KEY", "AIDA_TLS_CA"]
            .iter()
            .map(|v| std::env::var(v).ok().filter(|p| !p.trim().is_empty()))
            .collect();
        let tls = match (&paths[0], &paths[1], &paths[2]) {
            (Some(cert), Some(key), Some(ca)) => {
                let read = |var: &str, path: &str| {
                    std::fs::read(path).with_context(|| format!("reading {var} ({path})"))
                };
                Some(Arc::new(TlsFiles {
                    cert: read("AIDA_TLS_CERT", cert)?,
                    key: SecretBytes(read("AIDA_TLS_KEY", key)?),
                    ca: read("AIDA_TLS_CA", ca)?,
                }))
            }
            (None, None, None) => None,
            _ => bail!("mutual TLS needs all three of AIDA_TLS_CERT, AIDA_TLS_KEY and AIDA_TLS_CA"),
        };
        let security = Security {
            token: token.map(Arc::new),
            tls,
        };
        security.require()?;
        Ok(security)
    }

    /// Fails, naming the variables, unless a credential is configured.
    pub fn require(&self) -> anyhow::Result<()> {
        if self.token.is_none() && self.tls.is_none() {
            bail!(
                "no internal credential: set {TOKEN_VAR} (or {TOKEN_VAR}_FILE; at least {MIN_TOKEN_LEN} bytes, the same on every service) \
                 or AIDA_TLS_CERT, AIDA_TLS_KEY and AIDA_TLS_CA for mutual TLS"
            );
        }
        Ok(())
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server side of mutual TLS: present our certificate and require
    /// one signed by the CA from every client.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|tls| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.cert, &tls.key.0))
                .client_ca_root(Certificate::from_pem(&tls.ca))
        })
    }

    fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.tls.as_ref().map(|tls| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key.0))
        })
    }

    /// Checks callers of the services this one serves.
    pub fn guard(&self) -> RequireCredential {
        RequireCredential {
            expected: self.token.clone(),
        }
    }

    /// Adds this service's credential to outgoing calls.
    pub fn credential(&self) -> AttachCredential {
        let header = self.token.as_ref().map(|token| {
            let mut value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
                .parse()
                .unwrap_or_else(|_| MetadataValue::from_static(""));
            value.set_sensitive(true);
            value
        });
        AttachCredential { header }
    }

    /// A lazily connecting channel to `addr` (`host:port` or a URL) that
    /// carries the credential: over TLS when mutual TLS is configured.
    pub fn connect_lazy(&self, addr: &str) -> anyhow::Result<AuthChannel> {
        let endpoint = self.endpoint(addr)?;
        Ok(InterceptedService::new(
            endpoint.connect_lazy(),
            self.credential(),
        ))
    }

    /// The endpoint for `addr`, with TLS when configured; for callers that
    /// tune it further before connecting.
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        let url = endpoint_url(addr, self.uses_tls());
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid gRPC address {url:?}"))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = self.client_tls() {
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("setting up TLS to {url}"))?;
        }
        Ok(endpoint)
    }
}

/// `host:port` or a URL, as `http://` or `https://` depending on TLS.
fn endpoint_url(addr: &str, tls: bool) -> String {
    let addr = addr.trim();
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    if tls {
        format!("https://{bare}")
    } else {
        format!("http://{bare}")
    }
}

/// The server-side check: a call without the shared secret is refused with
/// `UNAUTHENTICATED` before it reaches the service. With mutual TLS only,
/// the transport has already checked the client's certificate.
#[derive(Clone)]
pub struct RequireCredential {
    expected: Option<Arc<SecretString>>,
}

impl tonic::service::Interceptor for RequireCredential {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Constant time over the secret's bytes: a mismatch takes as long
        // wherever it is. (Only the length can be learnt, and it is public.)
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes()),
        ) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "a valid internal credential is required (authorization: Bearer $AIDA_INTERNAL_TOKEN)",
            ))
        }
    }
}

/// The client side: adds `authorization: Bearer <secret>` to every call.
#[derive(Clone)]
pub struct AttachCredential {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for AttachCredential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        // The caller's trace goes on in the callee.
        crate::telemetry::inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn token() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn the_guard_accepts_only_the_shared_secret() {
        let security = Security::with_token(token());
        let mut guard = security.guard();
        let mut attach = security.credential();
        let signed = attach.call(Request::new(())).unwrap();
        assert!(guard.call(signed).is_ok());
        assert_eq!(
            guard.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut forged = Request::new(());
        forged.metadata_mut().insert(
            "authorization",
            "Bearer 0123456789abcdef0123456789abcdeX".parse().unwrap(),
        );
        assert!(guard.call(forged).is_err());
    }

    #[test]
    fn nothing_configured_is_refused_and_nothing_prints() {
        let err = Security::default().require().unwrap_err().to_string();
        assert!(
            err.contains(TOKEN_VAR) && err.contains("AIDA_TLS_CERT"),
            "{err}"
        );
        let shown = format!("{:?}", Security::with_token(token()));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn addresses_get_the_scheme_tls_needs() {
        assert_eq!(endpoint_url("h:1", false), "http://h:1");
        assert_eq!(endpoint_url("http://h:1", true), "https://h:1");
        assert_eq!(endpoint_url("https://h:1", false), "http://h:1");
    }
}
