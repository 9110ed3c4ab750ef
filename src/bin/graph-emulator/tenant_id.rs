//! Syntax of tenant identifiers in token endpoint paths and control routes.

/// Returns whether `tenant` is a hyphenated GUID or a DNS domain name, the two
/// forms that Entra ID accepts in `/{tenant}/oauth2/v2.0/token`.
///
/// NOTE: the multi-tenant aliases `common`, `organizations` and `consumers`
/// are rejected here as invalid. Entra ID rejects client-credentials requests
/// to them with other errors, which the emulator does not model.
pub fn is_valid(tenant: &str) -> bool {
    is_guid(tenant) || is_domain(tenant)
}

/// Lowercases a tenant identifier, because Entra ID compares them
/// case-insensitively.
pub fn normalize(tenant: &str) -> String {
    tenant.to_ascii_lowercase()
}

fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

fn is_domain(text: &str) -> bool {
    if text.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = text.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|label| is_dns_label(label)) {
        return false;
    }
    // A top-level domain is never all digits, which also rules out IPv4 addresses.
    let top_level = labels[labels.len() - 1];
    !top_level.bytes().all(|byte| byte.is_ascii_digit())
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_guid_and_domains() {
        assert!(is_valid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(is_valid("contoso.onmicrosoft.com"));
        assert!(is_valid("Contoso.COM"));
    }

    #[test]
    fn rejects_other_forms() {
        for tenant in [
            "",
            "contoso",
            "common",
            "-contoso.com",
            "contoso..com",
            "10.0.0.1",
            "72f988bf86f141af91ab2d7cd011db47",
            "conto_so.com",
        ] {
            assert!(!is_valid(tenant), "{tenant:?} should be invalid");
        }
    }
}
