//! Microsoft clouds and the sign-in and Graph endpoints of each, with the
//! operator-wide endpoint overrides used for emulators and test setups.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Name of the operator flag that sets [`EndpointOverrides::authority_host`].
pub const AUTHORITY_HOST_FLAG: &str = "--authority-host";
/// Name of the operator flag that sets [`EndpointOverrides::graph_endpoint`].
pub const GRAPH_ENDPOINT_FLAG: &str = "--graph-endpoint";

/// Microsoft cloud that hosts the tenant: one of Global, USGovernment,
/// USGovernmentDoD or China. It selects the Entra ID sign-in authority and
/// the Microsoft Graph endpoint, because tokens are not valid across clouds.
/// Defaults to Global.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Cloud {
    /// Microsoft's global service, including GCC: login.microsoftonline.com
    /// and graph.microsoft.com.
    #[default]
    Global,
    /// Azure US Government, also called GCC High: login.microsoftonline.us
    /// and graph.microsoft.us.
    USGovernment,
    /// Azure US Government for the Department of Defense:
    /// login.microsoftonline.us and dod-graph.microsoft.us.
    USGovernmentDoD,
    /// Microsoft 365 operated by 21Vianet in China: login.chinacloudapi.cn
    /// and microsoftgraph.chinacloudapi.cn.
    China,
}

impl Cloud {
    /// Returns the Entra ID authority host of this cloud.
    pub fn authority_host(self) -> &'static str {
        match self {
            Self::Global => "https://login.microsoftonline.com",
            Self::USGovernment | Self::USGovernmentDoD => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Returns the canonical Microsoft Graph root of this cloud.
    pub fn graph_root(self) -> &'static str {
        match self {
            Self::Global => "https://graph.microsoft.com",
            Self::USGovernment => "https://graph.microsoft.us",
            Self::USGovernmentDoD => "https://dod-graph.microsoft.us",
            Self::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// Returns the OAuth scope requested for Graph tokens in this cloud,
    /// `{graph root}/.default`.
    ///
    /// The scope always names the cloud's canonical Graph root, even when
    /// [`EndpointOverrides::graph_endpoint`] sends requests elsewhere: the
    /// override replaces where requests go, not which resource the token is
    /// for, so an emulator or proxy receives the same scopes as Entra ID.
    pub fn scope(self) -> String {
        format!("{}/.default", self.graph_root())
    }
}

/// Base URLs that requests for one tenant go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Entra ID authority host. The token endpoint is
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: Url,
    /// Microsoft Graph root that `/beta/...` paths are appended to.
    pub graph: Url,
}

impl Endpoints {
    /// Resolves the endpoints of `cloud`. An override, when set, replaces the
    /// cloud's value for every cloud.
    pub fn resolve(cloud: Cloud, overrides: &EndpointOverrides) -> Self {
        let authority = overrides
            .authority_host
            .clone()
            .unwrap_or_else(|| parse_builtin(cloud.authority_host()));
        let graph = overrides
            .graph_endpoint
            .clone()
            .unwrap_or_else(|| parse_builtin(cloud.graph_root()));
        Self { authority, graph }
    }
}

fn parse_builtin(url: &'static str) -> Url {
    Url::parse(url).expect("built-in endpoint URLs are valid")
}

/// Operator-wide replacements for the built-in endpoints, set only from
/// operator flags (never from a policy, so a policy author cannot redirect
/// credentials to another host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointOverrides {
    /// Replaces the Entra ID authority host of every cloud.
    pub authority_host: Option<Url>,
    /// Replaces the Microsoft Graph root of every cloud.
    pub graph_endpoint: Option<Url>,
}

impl EndpointOverrides {
    /// Parses and validates the values of [`AUTHORITY_HOST_FLAG`] and
    /// [`GRAPH_ENDPOINT_FLAG`]. An empty value counts as unset, so a
    /// deployment can pass an empty variable.
    ///
    /// A URL must use https, except that plain http is accepted for loopback
    /// hosts (127.0.0.0/8, ::1 and `localhost`), and must not carry
    /// credentials, a query or a fragment.
    pub fn parse(authority: Option<&str>, graph: Option<&str>) -> Result<Self, InvalidEndpoint> {
        Ok(Self {
            authority_host: parse_override(AUTHORITY_HOST_FLAG, authority)?,
            graph_endpoint: parse_override(GRAPH_ENDPOINT_FLAG, graph)?,
        })
    }
}

/// Error for an endpoint override that is not an acceptable URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {value:?}: {problem}")]
pub struct InvalidEndpoint {
    /// The operator flag that carried the value.
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// Description of the problem and its fix.
    pub problem: String,
}

fn parse_override(flag: &'static str, value: Option<&str>) -> Result<Option<Url>, InvalidEndpoint> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = |problem: String| InvalidEndpoint {
        flag,
        value: value.to_string(),
        problem,
    };
    let url = Url::parse(value).map_err(|err| {
        invalid(format!(
            "not an absolute URL ({err}); use a URL such as https://host"
        ))
    })?;
    check_endpoint_url(&url).map_err(invalid)?;
    Ok(Some(url))
}

const PLAIN_HTTP_PROBLEM: &str =
    "plain http is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost); use https";

/// Checks the scheme, host and parts of an override URL, and returns the
/// problem as a message.
fn check_endpoint_url(url: &Url) -> Result<(), String> {
    let Some(host) = url.host() else {
        return Err("the URL has no host".to_string());
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(PLAIN_HTTP_PROBLEM.to_string()),
        other => return Err(format!("unsupported scheme {other:?}; use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain a user name or password".to_string());
    }
    if url.query().is_some() {
        return Err("the URL must not contain a query".to_string());
    }
    if url.fragment().is_some() {
        return Err("the URL must not contain a fragment".to_string());
    }
    Ok(())
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_graph(value: &str) -> Result<EndpointOverrides, InvalidEndpoint> {
        EndpointOverrides::parse(None, Some(value))
    }

    #[test]
    fn builtin_endpoints_per_cloud() {
        let none = EndpointOverrides::default();
        let cases = [
            (
                Cloud::Global,
                "https://login.microsoftonline.com/",
                "https://graph.microsoft.com/",
            ),
            (
                Cloud::USGovernment,
                "https://login.microsoftonline.us/",
                "https://graph.microsoft.us/",
            ),
            (
                Cloud::USGovernmentDoD,
                "https://login.microsoftonline.us/",
                "https://dod-graph.microsoft.us/",
            ),
            (
                Cloud::China,
                "https://login.chinacloudapi.cn/",
                "https://microsoftgraph.chinacloudapi.cn/",
            ),
        ];
        for (cloud, authority, graph) in cases {
            let endpoints = Endpoints::resolve(cloud, &none);
            assert_eq!(endpoints.authority.as_str(), authority, "{cloud:?}");
            assert_eq!(endpoints.graph.as_str(), graph, "{cloud:?}");
        }
    }

    #[test]
    fn overrides_replace_every_cloud() {
        let overrides = EndpointOverrides::parse(
            Some("http://127.0.0.1:8080"),
            Some("http://localhost:9090/g"),
        )
        .unwrap();
        for cloud in [Cloud::Global, Cloud::China] {
            let endpoints = Endpoints::resolve(cloud, &overrides);
            assert_eq!(endpoints.authority.as_str(), "http://127.0.0.1:8080/");
            assert_eq!(endpoints.graph.as_str(), "http://localhost:9090/g");
        }
    }

    #[test]
    fn scope_keeps_canonical_root() {
        assert_eq!(
            Cloud::Global.scope(),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            Cloud::USGovernmentDoD.scope(),
            "https://dod-graph.microsoft.us/.default"
        );
    }

    #[test]
    fn serde_spellings() {
        for (cloud, name) in [
            (Cloud::Global, "Global"),
            (Cloud::USGovernment, "USGovernment"),
            (Cloud::USGovernmentDoD, "USGovernmentDoD"),
            (Cloud::China, "China"),
        ] {
            let json = serde_json::to_string(&cloud).unwrap();
            assert_eq!(json, format!("{name:?}"));
            let back: Cloud = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cloud);
        }
        assert_eq!(Cloud::default(), Cloud::Global);
    }

    #[test]
    fn loopback_http_accepted() {
        for value in [
            "http://127.0.0.1:1234",
            "http://127.5.6.7",
            "http://[::1]:8443/",
            "http://localhost:3000",
            "http://LOCALHOST",
        ] {
            assert!(parse_graph(value).is_ok(), "{value}");
        }
    }

    #[test]
    fn https_accepted() {
        let parsed = parse_graph("https://graph.example.test/").unwrap();
        assert_eq!(
            parsed.graph_endpoint.unwrap().as_str(),
            "https://graph.example.test/"
        );
    }

    #[test]
    fn empty_value_is_unset() {
        assert_eq!(
            EndpointOverrides::parse(Some(""), Some("  ")).unwrap(),
            EndpointOverrides::default()
        );
    }

    #[test]
    fn plain_http_remote_rejected() {
        let err = parse_graph("http://example.com").unwrap_err();
        assert_eq!(err.flag, GRAPH_ENDPOINT_FLAG);
        let message = err.to_string();
        assert!(message.contains("--graph-endpoint"), "{message}");
        assert!(message.contains("http://example.com"), "{message}");
        assert!(message.contains("use https"), "{message}");
        assert!(parse_graph("http://10.0.0.1").is_err());
        assert!(parse_graph("http://[::2]").is_err());
        assert!(parse_graph("http://localhost.example.com").is_err());
    }

    #[test]
    fn bad_parts_rejected() {
        let cases = [
            (
                "https://user:pw@graph.example.test",
                "user name or password",
            ),
            ("https://graph.example.test/?a=b", "query"),
            ("https://graph.example.test/#top", "fragment"),
            ("ftp://graph.example.test", "unsupported scheme"),
            ("graph.example.test", "not an absolute URL"),
        ];
        for (value, problem) in cases {
            let err = parse_graph(value).unwrap_err();
            assert!(err.problem.contains(problem), "{value}: {err}");
        }
    }

    #[test]
    fn authority_error_names_its_flag() {
        let err = EndpointOverrides::parse(Some("http://login.example.test"), None).unwrap_err();
        assert_eq!(err.flag, AUTHORITY_HOST_FLAG);
        assert!(
            err.to_string().starts_with("invalid --authority-host"),
            "{err}"
        );
    }
}
