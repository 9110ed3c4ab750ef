//! Validation and merge of a PATCH body into stored photoUpdateSettings,
//! written from the documented behaviour of the Graph beta resource.

use serde_json::Value;

use crate::tenants::Settings;

/// A PATCH body that Graph rejects with 400 BadRequest. The messages follow
/// the wording of Graph and OData errors.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error(
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."
    )]
    InvalidJson,
    #[error("The request body must be a JSON object, not {0}.")]
    NotAnObject(&'static str),
    #[error(
        "The property '{0}' does not exist on type 'microsoft.graph.photoUpdateSettings'. Make sure to only use property names that are defined by the type."
    )]
    UnknownProperty(String),
    #[error(
        "Cannot convert the literal '{0}' to the expected type 'microsoft.graph.photoUpdateSource'."
    )]
    InvalidSource(String),
    #[error("The property 'allowedRoles' must be an array of strings or null, not {0}.")]
    RolesNotArray(&'static str),
    #[error("The entry at index {index} of 'allowedRoles' must be a string, not {found}.")]
    RoleNotString { index: usize, found: &'static str },
    #[error(
        "allowedRoles must be null or empty when source is onPremises, because on-premises photos cannot be restricted to roles."
    )]
    RolesWithOnPremises,
}

/// Applies a PATCH body to `current` and returns the merged settings.
///
/// The PATCH is partial, so a property that the body leaves out keeps its
/// value. `source` is matched case-insensitively and stored in its canonical
/// spelling. Role strings are stored exactly as sent, including whitespace.
/// `id` and `@odata.*` annotations in the body are ignored.
pub fn apply_patch(current: &Settings, body: &[u8]) -> Result<Settings, PatchError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|_| PatchError::InvalidJson)?;
    let Value::Object(properties) = parsed else {
        return Err(PatchError::NotAnObject(json_kind(&parsed)));
    };
    let mut merged = current.clone();
    for (name, value) in properties {
        match name.as_str() {
            "source" => {
                merged.insert(name, canonical_source(value)?);
            }
            "allowedRoles" => {
                check_roles(&value)?;
                merged.insert(name, value);
            }
            "id" => {}
            _ if name.starts_with("@odata.") => {}
            _ => return Err(PatchError::UnknownProperty(name)),
        }
    }
    if restricts_on_premises(&merged) {
        return Err(PatchError::RolesWithOnPremises);
    }
    Ok(merged)
}

/// Maps a `source` value to the stored one: `cloud` or `onPremises` in any
/// letter case, or null.
///
/// NOTE: the docs do not say whether Graph accepts `"source": null`; the
/// emulator accepts it because the property is null on tenants that never set
/// it. A client cannot set the `unknownFutureValue` sentinel.
fn canonical_source(value: Value) -> Result<Value, PatchError> {
    let text = match value {
        Value::Null => return Ok(Value::Null),
        Value::String(text) => text,
        other => return Err(PatchError::InvalidSource(other.to_string())),
    };
    if text.eq_ignore_ascii_case("cloud") {
        Ok(Value::from("cloud"))
    } else if text.eq_ignore_ascii_case("onPremises") {
        Ok(Value::from("onPremises"))
    } else {
        Err(PatchError::InvalidSource(text))
    }
}

fn check_roles(value: &Value) -> Result<(), PatchError> {
    let roles = match value {
        Value::Null => return Ok(()),
        Value::Array(roles) => roles,
        other => return Err(PatchError::RolesNotArray(json_kind(other))),
    };
    match roles.iter().position(|role| !role.is_string()) {
        Some(index) => Err(PatchError::RoleNotString {
            index,
            found: json_kind(&roles[index]),
        }),
        None => Ok(()),
    }
}

fn restricts_on_premises(settings: &Settings) -> bool {
    let on_premises = settings.get("source").and_then(Value::as_str) == Some("onPremises");
    let has_roles = settings
        .get("allowedRoles")
        .and_then(Value::as_array)
        .is_some_and(|roles| !roles.is_empty());
    on_premises && has_roles
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tenants::default_settings;

    fn patch(current: Value, body: Value) -> Result<Value, PatchError> {
        let Value::Object(current) = current else {
            unreachable!()
        };
        apply_patch(&current, body.to_string().as_bytes()).map(Value::Object)
    }

    #[test]
    fn absent_property_keeps_value() {
        let merged = patch(
            json!({"source": "cloud", "allowedRoles": ["a"]}),
            json!({"source": "CLOUD"}),
        );
        assert_eq!(
            merged,
            Ok(json!({"source": "cloud", "allowedRoles": ["a"]}))
        );
    }

    #[test]
    fn lowercase_on_premises_is_canonical() {
        let merged = patch(json!({}), json!({"source": "onpremises"}));
        assert_eq!(merged, Ok(json!({"source": "onPremises"})));
    }

    #[test]
    fn on_premises_rejects_roles_after_merge() {
        let merged = patch(
            json!({"source": "cloud", "allowedRoles": ["a"]}),
            json!({"source": "onPremises"}),
        );
        assert_eq!(merged, Err(PatchError::RolesWithOnPremises));
    }

    #[test]
    fn on_premises_accepts_empty_roles() {
        let merged = patch(
            json!({}),
            json!({"source": "onPremises", "allowedRoles": []}),
        );
        assert_eq!(
            merged,
            Ok(json!({"source": "onPremises", "allowedRoles": []}))
        );
    }

    #[test]
    fn annotations_and_id_are_ignored() {
        let merged = patch(json!({}), json!({"@odata.type": "x", "id": "y"}));
        assert_eq!(merged, Ok(json!({})));
    }

    #[test]
    fn invalid_bodies_are_rejected() {
        let current = default_settings();
        let cases: [(&[u8], PatchError); 7] = [
            (b"{", PatchError::InvalidJson),
            (b"[]", PatchError::NotAnObject("an array")),
            (
                br#"{"colour": 1}"#,
                PatchError::UnknownProperty("colour".into()),
            ),
            (
                br#"{"source": "unknownFutureValue"}"#,
                PatchError::InvalidSource("unknownFutureValue".into()),
            ),
            (br#"{"source": 1}"#, PatchError::InvalidSource("1".into())),
            (
                br#"{"allowedRoles": "a"}"#,
                PatchError::RolesNotArray("a string"),
            ),
            (
                br#"{"allowedRoles": ["a", 2]}"#,
                PatchError::RoleNotString {
                    index: 1,
                    found: "a number",
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(apply_patch(&current, body), Err(expected));
        }
    }
}
