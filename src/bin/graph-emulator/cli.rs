//! Command-line options.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::assertion::parse_certificate;
use crate::identity::{ANY_TENANT, Certificate, Permission};
use crate::tenant_id;

const LONG_ABOUT: &str = "\
Emulates the Microsoft Graph profile photo update settings \
(/beta/admin/people/photoUpdateSettings) and the Entra ID client-credentials \
token endpoint (/{tenant}/oauth2/v2.0/token) for tests and demos.

On start it prints one line to stdout, `graph-emulator listening on \
http://127.0.0.1:PORT` (https with --tls-cert), and logs one line per request \
to stderr. RUST_LOG sets the log filter (default: info).";

/// Options of the `graph-emulator` binary.
#[derive(Debug, Parser)]
#[command(
    name = "graph-emulator",
    version,
    about = "Emulates Microsoft Graph photo update settings and the Entra ID token endpoint",
    long_about = LONG_ABOUT,
    after_long_help = include_str!("control-api.md")
)]
pub struct Args {
    /// Address to listen on, as IP:PORT or localhost:PORT; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen_addr)]
    pub listen: SocketAddr,

    /// Allow a --listen address that is not loopback. The control API has no
    /// authentication, so anyone who can reach the port can change tenant state.
    #[arg(long)]
    pub allow_remote: bool,

    /// App registration, repeatable or comma-separated. TENANT is a GUID, a
    /// domain or * for any tenant. The optional 4th field `read` grants only
    /// PeopleSettings.Read.All, so PATCH and DELETE get 403; the default is
    /// PeopleSettings.ReadWrite.All. Secrets cannot contain ':' or ','.
    #[arg(
        long = "client",
        value_name = "TENANT:CLIENT_ID:SECRET[:read]",
        env = "GRAPH_EMULATOR_CLIENTS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub clients: Vec<ClientSpec>,

    /// Certificate credential of an app, repeatable: token requests may
    /// authenticate with a client assertion signed by the key of the first
    /// certificate in CERT_PEM_FILE (PS256 or RS256, with the certificate's
    /// SHA-256 thumbprint in x5t#S256). Adds to a --client registration of
    /// the same TENANT and CLIENT_ID, or creates one with read-write
    /// permission.
    #[arg(long = "client-cert", value_name = "TENANT:CLIENT_ID:CERT_PEM_FILE")]
    pub client_certificates: Vec<CertificateSpec>,

    /// Federated identity credential of an app, repeatable: token requests
    /// may authenticate with a federated token (such as a Kubernetes
    /// ServiceAccount token with audience api://AzureADTokenExchange) whose
    /// sub claim is SUBJECT, or any subject with *. The token's signature
    /// and issuer are not checked. Adds to a registration like --client-cert.
    #[arg(long = "federated", value_name = "TENANT:CLIENT_ID:SUBJECT")]
    pub federated: Vec<FederatedSpec>,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3599)]
    pub token_lifetime: u64,

    /// Maximum valid token requests per client in 60 seconds; more get
    /// AADSTS50196. Rejected requests count too, so a client that keeps
    /// retrying stays blocked until it pauses.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub max_token_requests_per_minute: u32,

    /// Resource whose tokens the Graph endpoint accepts, such as
    /// https://graph.microsoft.us to stand in for the US Government cloud.
    /// Graph requests with a token issued for another cloud's Graph get 401.
    /// Without it, a token for any cloud's Graph is accepted.
    #[arg(long, value_name = "URL")]
    pub graph_audience: Option<String>,

    /// Delay added to every Graph and token endpoint response, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,

    /// HTTP status of a successful PATCH: 200 with the updated object, or 204 without a body.
    #[arg(long, value_enum, default_value_t = PatchStatus::Ok)]
    pub patch_status: PatchStatus,

    /// Limit of Graph requests per tenant in a sliding window of SECONDS; more
    /// get 429 with Retry-After set to the seconds until a request slot frees.
    #[arg(long, value_name = "N/SECONDS")]
    pub throttle_per_tenant: Option<ThrottleLimit>,

    /// PEM certificate chain; serves HTTPS instead of HTTP. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Format of the log lines on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Maximum number of entries kept in the request log of the control API.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub request_log_limit: usize,
}

/// Status code of a successful PATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatchStatus {
    #[value(name = "200")]
    Ok,
    #[value(name = "204")]
    NoContent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One `--client` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    /// Lowercase tenant, or `*`.
    pub tenant: String,
    /// Lowercase client ID.
    pub client_id: String,
    pub secret: String,
    pub permission: Permission,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientSpecError {
    #[error("expected TENANT:CLIENT_ID:SECRET or TENANT:CLIENT_ID:SECRET:read")]
    FieldCount,
    #[error("invalid tenant {0:?}: expected a GUID, a domain name or *")]
    Tenant(String),
    #[error("client ID and secret must not be empty")]
    Empty,
    #[error("invalid permission {0:?}: expected read or readWrite")]
    Permission(String),
}

impl FromStr for ClientSpec {
    type Err = ClientSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = text.split(':').collect();
        let (tenant, client_id, secret, permission) = match fields[..] {
            [tenant, client_id, secret] => (tenant, client_id, secret, None),
            [tenant, client_id, secret, permission] => {
                (tenant, client_id, secret, Some(permission))
            }
            _ => return Err(ClientSpecError::FieldCount),
        };
        if tenant != ANY_TENANT && !tenant_id::is_valid(tenant) {
            return Err(ClientSpecError::Tenant(tenant.to_owned()));
        }
        if client_id.is_empty() || secret.is_empty() {
            return Err(ClientSpecError::Empty);
        }
        Ok(ClientSpec {
            tenant: tenant_id::normalize(tenant),
            client_id: client_id.to_ascii_lowercase(),
            secret: secret.to_owned(),
            permission: parse_permission(permission)?,
        })
    }
}

/// One `--client-cert` value, with the certificate already read.
#[derive(Clone, Debug)]
pub struct CertificateSpec {
    /// Lowercase tenant, or `*`.
    pub tenant: String,
    /// Lowercase client ID.
    pub client_id: String,
    pub certificate: Certificate,
}

impl FromStr for CertificateSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (tenant, client_id, path) = registration_fields(text, "CERT_PEM_FILE")?;
        let pem = std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))?;
        let certificate = parse_certificate(&pem).map_err(|error| format!("{path}: {error}"))?;
        Ok(CertificateSpec {
            tenant,
            client_id,
            certificate,
        })
    }
}

/// One `--federated` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedSpec {
    /// Lowercase tenant, or `*`.
    pub tenant: String,
    /// Lowercase client ID.
    pub client_id: String,
    /// Trusted `sub` claim, or `*`.
    pub subject: String,
}

impl FromStr for FederatedSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (tenant, client_id, subject) = registration_fields(text, "SUBJECT")?;
        Ok(FederatedSpec {
            tenant,
            client_id,
            subject: subject.to_owned(),
        })
    }
}

/// Splits `TENANT:CLIENT_ID:REST`, where REST may contain ':' (file paths,
/// `system:serviceaccount:NS:NAME` subjects), and normalizes the first two.
fn registration_fields<'a>(text: &'a str, last: &str) -> Result<(String, String, &'a str), String> {
    let mut fields = text.splitn(3, ':');
    let (Some(tenant), Some(client_id), Some(rest)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("expected TENANT:CLIENT_ID:{last}"));
    };
    if tenant != ANY_TENANT && !tenant_id::is_valid(tenant) {
        return Err(ClientSpecError::Tenant(tenant.to_owned()).to_string());
    }
    if client_id.is_empty() || rest.is_empty() {
        return Err(format!("CLIENT_ID and {last} must not be empty"));
    }
    Ok((
        tenant_id::normalize(tenant),
        client_id.to_ascii_lowercase(),
        rest,
    ))
}

fn parse_permission(text: Option<&str>) -> Result<Permission, ClientSpecError> {
    match text {
        None => Ok(Permission::ReadWrite),
        Some(value) if value.eq_ignore_ascii_case("read") => Ok(Permission::Read),
        Some(value) if value.eq_ignore_ascii_case("readwrite") => Ok(Permission::ReadWrite),
        Some(value) => Err(ClientSpecError::Permission(value.to_owned())),
    }
}

/// Value of `--throttle-per-tenant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleLimit {
    pub max_requests: u32,
    pub window: Duration,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected N/SECONDS with N and SECONDS at least 1, for example 10/60")]
pub struct ThrottleLimitError;

impl FromStr for ThrottleLimit {
    type Err = ThrottleLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (requests, seconds) = text.split_once('/').ok_or(ThrottleLimitError)?;
        let max_requests: u32 = requests.trim().parse().map_err(|_| ThrottleLimitError)?;
        let seconds: u64 = seconds.trim().parse().map_err(|_| ThrottleLimitError)?;
        if max_requests == 0 || seconds == 0 {
            return Err(ThrottleLimitError);
        }
        Ok(ThrottleLimit {
            max_requests,
            window: Duration::from_secs(seconds),
        })
    }
}

/// Parses `IP:PORT`, or `localhost:PORT` as 127.0.0.1.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in {text:?}"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| {
        format!("invalid address {text:?}: expected IP:PORT, for example 127.0.0.1:8080")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_spec_defaults_to_read_write() {
        let spec: ClientSpec = "Contoso.com:App-1:s3cret".parse().unwrap();
        assert_eq!(spec.tenant, "contoso.com");
        assert_eq!(spec.client_id, "app-1");
        assert_eq!(spec.secret, "s3cret");
        assert_eq!(spec.permission, Permission::ReadWrite);
    }

    #[test]
    fn client_spec_read_permission() {
        let spec: ClientSpec = "*:app:s:read".parse().unwrap();
        assert_eq!(spec.tenant, "*");
        assert_eq!(spec.permission, Permission::Read);
    }

    #[test]
    fn client_spec_rejects_bad_input() {
        assert_eq!(
            "contoso.com:app".parse::<ClientSpec>(),
            Err(ClientSpecError::FieldCount)
        );
        assert_eq!(
            "contoso:app:s".parse::<ClientSpec>(),
            Err(ClientSpecError::Tenant("contoso".into()))
        );
        assert_eq!(
            "contoso.com:app:s:write".parse::<ClientSpec>(),
            Err(ClientSpecError::Permission("write".into()))
        );
        assert_eq!(
            "contoso.com::s".parse::<ClientSpec>(),
            Err(ClientSpecError::Empty)
        );
    }

    #[test]
    fn federated_subject_keeps_its_colons() {
        let spec: FederatedSpec = "Contoso.com:App:system:serviceaccount:ppo:operator"
            .parse()
            .unwrap();
        assert_eq!(spec.tenant, "contoso.com");
        assert_eq!(spec.client_id, "app");
        assert_eq!(spec.subject, "system:serviceaccount:ppo:operator");
        assert!("*:app:*".parse::<FederatedSpec>().is_ok());
        assert!("contoso.com:app".parse::<FederatedSpec>().is_err());
        assert!("contoso:app:sub".parse::<FederatedSpec>().is_err());
        assert!("contoso.com::sub".parse::<FederatedSpec>().is_err());
    }

    #[test]
    fn certificate_spec_names_unreadable_file() {
        let error = "*:app:/nonexistent/cert.pem"
            .parse::<CertificateSpec>()
            .unwrap_err();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }

    #[test]
    fn throttle_limit_parses() {
        let limit: ThrottleLimit = "10/60".parse().unwrap();
        assert_eq!(limit.max_requests, 10);
        assert_eq!(limit.window, Duration::from_secs(60));
        assert!("0/60".parse::<ThrottleLimit>().is_err());
        assert!("10".parse::<ThrottleLimit>().is_err());
    }

    #[test]
    fn listen_addr_accepts_localhost() {
        let addr = parse_listen_addr("localhost:0").unwrap();
        assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert!(parse_listen_addr("example:80").is_err());
    }

    #[test]
    fn command_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
