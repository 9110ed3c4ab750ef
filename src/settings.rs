//! Photo update settings as values: the desired form taken from a policy and
//! the observed form reported by Graph. Nothing here does I/O.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Role names accepted in `allowedRoles`, with the Entra role template IDs
/// they stand for. Graph documents only these three roles for this setting.
pub const ROLE_NAMES: [(&str, &str); 3] = [
    (
        "GlobalAdministrator",
        "62e90394-69f5-4237-9190-012177145e10",
    ),
    ("UserAdministrator", "fe930be7-5e62-47db-91af-98c3a49a38b1"),
    (
        "PeopleAdministrator",
        "024906de-61e5-49c8-8572-40335f1e0e10",
    ),
];

/// Place where profile photos are managed, in Graph's canonical spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Cloud,
    OnPremises,
}

impl Source {
    /// Parses Graph's enum spelling without regard to case, as Graph does.
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("cloud") {
            Some(Self::Cloud)
        } else if value.eq_ignore_ascii_case("onPremises") {
            Some(Self::OnPremises)
        } else {
            None
        }
    }

    /// Returns the canonical camelCase spelling that Graph returns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cloud => "cloud",
            Self::OnPremises => "onPremises",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a role entry that is neither a known role name nor a role
/// template ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {value:?}: {}", role_fix(.value))]
pub struct InvalidRole {
    pub value: String,
}

/// Returns the fix for an invalid role entry: role names are case-sensitive,
/// and spaces around an ID are not trimmed.
fn role_fix(value: &str) -> &'static str {
    if ROLE_NAMES
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(value))
    {
        "role names are case-sensitive, write GlobalAdministrator, UserAdministrator or \
         PeopleAdministrator"
    } else if value.trim() != value {
        "remove the spaces around it"
    } else {
        "use a role template ID of 8-4-4-4-12 hexadecimal digits, such as \
         \"fe930be7-5e62-47db-91af-98c3a49a38b1\", or one of GlobalAdministrator, \
         UserAdministrator, PeopleAdministrator"
    }
}

/// Reports whether `value` is a GUID in its 8-4-4-4-12 hex form.
pub fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    groups.len() == lengths.len()
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Resolves a role name or template ID to the lowercase template ID that is
/// sent to Graph. Surrounding whitespace is an error, not trimmed, so the
/// manifest shows exactly what is applied.
pub fn resolve_role(value: &str) -> Result<String, InvalidRole> {
    if let Some((_, id)) = ROLE_NAMES.iter().find(|(name, _)| *name == value) {
        return Ok((*id).to_string());
    }
    if is_guid(value) {
        return Ok(value.to_ascii_lowercase());
    }
    Err(InvalidRole {
        value: value.to_string(),
    })
}

/// Returns the role name for a template ID, when it is one of the known roles.
pub fn role_name(id: &str) -> Option<&'static str> {
    ROLE_NAMES
        .iter()
        .find(|(_, known)| known.eq_ignore_ascii_case(id))
        .map(|(name, _)| *name)
}

/// The setting a policy declares, normalized: canonical source and a set of
/// lowercase role template IDs. An empty set means every user may update
/// their own photo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSettings {
    pub source: Source,
    pub allowed_roles: BTreeSet<String>,
}

/// The setting as Graph reported it. Values are kept verbatim, so an enum
/// member this build does not know (such as `unknownFutureValue`) or a role
/// ID with stray spaces is shown to the user as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSettings {
    /// `None` when Graph returned null or left the property out.
    pub source: Option<String>,
    /// `None` when Graph returned null or left the property out.
    pub allowed_roles: Option<Vec<String>>,
}

impl ObservedSettings {
    /// Reports whether the observed setting already is `desired`. Sources
    /// compare without regard to case; roles compare as sets of template IDs
    /// without regard to case, and an absent list equals an empty one.
    pub fn matches(&self, desired: &DesiredSettings) -> bool {
        let source_matches = self
            .source
            .as_deref()
            .and_then(Source::parse)
            .is_some_and(|s| s == desired.source);
        let observed_roles: BTreeSet<String> = self
            .allowed_roles
            .iter()
            .flatten()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        source_matches && observed_roles == desired.allowed_roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(source: Source, roles: &[&str]) -> DesiredSettings {
        DesiredSettings {
            source,
            allowed_roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn source_parses_any_case() {
        assert_eq!(Source::parse("onpremises"), Some(Source::OnPremises));
        assert_eq!(Source::parse("ONPREMISES"), Some(Source::OnPremises));
        assert_eq!(Source::parse("Cloud"), Some(Source::Cloud));
        assert_eq!(Source::parse("unknownFutureValue"), None);
        assert_eq!(Source::parse(""), None);
    }

    #[test]
    fn role_names_resolve_to_template_ids() {
        assert_eq!(
            resolve_role("GlobalAdministrator").unwrap(),
            "62e90394-69f5-4237-9190-012177145e10"
        );
        assert_eq!(
            resolve_role("FE930BE7-5E62-47DB-91AF-98C3A49A38B1").unwrap(),
            "fe930be7-5e62-47db-91af-98c3a49a38b1"
        );
    }

    #[test]
    fn role_with_leading_space_is_rejected_with_fix() {
        let err = resolve_role(" fe930be7-5e62-47db-91af-98c3a49a38b1").unwrap_err();
        assert!(
            err.to_string().ends_with(": remove the spaces around it"),
            "{err}"
        );
        let err = resolve_role("globaladministrator").unwrap_err();
        assert!(
            err.to_string().contains("role names are case-sensitive"),
            "{err}"
        );
        let err = resolve_role("Admins").unwrap_err();
        assert!(err.to_string().contains("8-4-4-4-12"), "{err}");
        assert!(resolve_role("fe930be7-5e62-47db-91af-98c3a49a38b").is_err());
        assert!(resolve_role("fe930be75e6247db91af98c3a49a38b1").is_err());
    }

    #[test]
    fn observed_null_roles_match_empty_set() {
        let observed = ObservedSettings {
            source: Some("cloud".into()),
            allowed_roles: None,
        };
        assert!(observed.matches(&desired(Source::Cloud, &[])));
        assert!(!observed.matches(&desired(Source::OnPremises, &[])));
    }

    #[test]
    fn observed_roles_compare_as_sets() {
        let observed = ObservedSettings {
            source: Some("cloud".into()),
            allowed_roles: Some(vec![
                "FE930BE7-5e62-47db-91af-98c3a49a38b1".into(),
                "62e90394-69f5-4237-9190-012177145e10".into(),
            ]),
        };
        let want = desired(
            Source::Cloud,
            &[
                "62e90394-69f5-4237-9190-012177145e10",
                "fe930be7-5e62-47db-91af-98c3a49a38b1",
            ],
        );
        assert!(observed.matches(&want));
    }

    #[test]
    fn observed_role_with_space_is_drift() {
        let observed = ObservedSettings {
            source: Some("cloud".into()),
            allowed_roles: Some(vec![" fe930be7-5e62-47db-91af-98c3a49a38b1".into()]),
        };
        let want = desired(Source::Cloud, &["fe930be7-5e62-47db-91af-98c3a49a38b1"]);
        assert!(!observed.matches(&want));
    }

    #[test]
    fn unknown_or_missing_source_is_drift() {
        let want = desired(Source::Cloud, &[]);
        let unknown = ObservedSettings {
            source: Some("unknownFutureValue".into()),
            allowed_roles: None,
        };
        assert!(!unknown.matches(&want));
        assert!(!ObservedSettings::default().matches(&want));
    }
}

#[cfg(test)]
#[path = "settings_proptests.rs"]
mod proptests;
