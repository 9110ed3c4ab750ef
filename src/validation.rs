//! Validates a `PhotoUpdatePolicy` manifest without a cluster, against the
//! same OpenAPI schema and CEL rules the CRD installs in the API server. The
//! one-shot CLI uses it so that `plan` and `apply` accept exactly what
//! `kubectl apply` would.

mod metadata;

use std::collections::HashSet;
use std::fmt;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::Value;

use crate::policy::PhotoUpdatePolicy;

/// One rule a manifest breaks, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Returns the CRD's OpenAPI v3 schema as JSON.
pub fn crd_schema() -> Value {
    let crd = PhotoUpdatePolicy::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the derived CRD has a schema");
    serde_json::to_value(schema).expect("a schema serializes to JSON")
}

/// Parses a namespace name from the command line or the environment. The
/// API server lists an empty collection for a name that cannot exist, so
/// an invalid name would give a healthy operator that manages nothing.
pub fn parse_namespace(name: &str) -> Result<String, String> {
    if name.len() > 63 {
        return Err(format!(
            "{name:?} is not a valid namespace name: it must be no more than 63 characters"
        ));
    }
    if !metadata::is_dns_label(name) {
        return Err(format!(
            "{name:?} is not a valid namespace name: {}",
            metadata::DNS_LABEL
        ));
    }
    Ok(name.to_string())
}

/// Validates `manifest` as the API server would on create: type, kind and
/// metadata, the schema's structural rules (types, required fields, enums,
/// lengths, list sizes and sets, unknown fields), then the CEL rules.
pub fn validate(manifest: &Value) -> Result<(), Vec<FieldError>> {
    admit(manifest).map(|_| ())
}

/// Validates `manifest` like [`validate`] and returns the object the API
/// server would go on to store: null fields dropped, schema defaults filled
/// in (both also what its CEL rules see) and no status.
pub fn admit(manifest: &Value) -> Result<Value, Vec<FieldError>> {
    let mut object = manifest.clone();
    drop_null_fields(&mut object);
    let schema = crd_schema();
    if let Some(spec) = object.get_mut("spec") {
        apply_defaults(&schema["properties"]["spec"], spec);
    }
    let mut errors = Vec::new();
    check_type_meta(&object, &mut errors);
    metadata::check(object.get("metadata"), &mut errors);
    check_structure(&schema, &schema_checked_part(&object), "", &mut errors);
    if let Some(status) = object.get("status") {
        check_unknown_fields(
            &schema["properties"]["status"],
            status,
            "status",
            &mut errors,
        );
    }
    if errors.is_empty() {
        check_cel(&schema, &object, &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // The status subresource leaves a created object without status.
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
    Ok(object)
}

/// Removes every object field whose value is null, at any depth. kubectl
/// and the API server together treat such a field as absent: a null
/// `allowedRoles` is accepted, and a null `secretRef` is reported by the
/// CEL rule that requires it. Null list items stay, and fail type checks.
fn drop_null_fields(value: &mut Value) {
    // A loop, not recursion: manifests may nest up to yaml::MAX_DEPTH.
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(fields) => {
                fields.retain(|_, field| !field.is_null());
                pending.extend(fields.values_mut());
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// Fills in the schema's defaults for absent properties, as the API server
/// does before it validates.
fn apply_defaults(schema: &Value, value: &mut Value) {
    let (Some(properties), Value::Object(fields)) =
        (schema.get("properties").and_then(Value::as_object), value)
    else {
        return;
    };
    for (name, property) in properties {
        if let Some(default) = property.get("default")
            && !fields.contains_key(name)
        {
            fields.insert(name.clone(), default.clone());
        }
        if let Some(field) = fields.get_mut(name) {
            apply_defaults(property, field);
        }
    }
}

/// Returns the part of a manifest the CRD's schema describes. The API
/// server checks type and object metadata itself, and status only for
/// unknown fields, because the status subresource replaces it on create.
fn schema_checked_part(manifest: &Value) -> Value {
    let mut body = manifest.clone();
    if let Some(object) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata", "status"] {
            object.remove(key);
        }
    }
    body
}

fn check_type_meta(manifest: &Value, errors: &mut Vec<FieldError>) {
    let expect = |path: &str, want: &str, errors: &mut Vec<FieldError>| {
        let got = manifest.get(path).and_then(Value::as_str);
        if got != Some(want) {
            errors.push(FieldError {
                path: path.to_string(),
                message: format!("must be {want:?}, found {}", shown(got)),
            });
        }
    };
    expect("apiVersion", "photopolicy.io/v1alpha1", errors);
    expect("kind", "PhotoUpdatePolicy", errors);
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "nothing".to_string(), |v| format!("{v:?}"))
}

fn push(errors: &mut Vec<FieldError>, path: &str, message: String) {
    let path = if path.is_empty() { "<root>" } else { path };
    errors.push(FieldError {
        path: path.to_string(),
        message,
    });
}

/// Walks `value` along `schema`, recording every structural violation.
fn check_structure(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(kind) = schema.get("type").and_then(Value::as_str) else {
        return;
    };
    if !has_type(value, kind) {
        let found = json_type(value);
        push(
            errors,
            path,
            format!("Invalid value: {found:?}: {path} in body must be of type {kind}: {found:?}"),
        );
        return;
    }
    check_enum(schema, value, path, errors);
    match value {
        Value::String(text) => check_string(schema, text, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(_) => check_object(schema, value, path, errors),
        _ => {}
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

/// Names the OpenAPI type of a JSON value, as the API server reports it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_enum(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if !allowed.contains(value) {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        push(
            errors,
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                names.join(", ")
            ),
        );
    }
}

fn check_string(schema: &Value, text: &str, path: &str, errors: &mut Vec<FieldError>) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        push(
            errors,
            path,
            format!("Too long: may not be more than {max} bytes"),
        );
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        push(
            errors,
            path,
            format!("Invalid value: {text:?}: {path} in body should be at least {min} chars long"),
        );
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        push(
            errors,
            path,
            format!("Too many: {}: must have at most {max} items", items.len()),
        );
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            if !seen.insert(item.to_string()) {
                push(
                    errors,
                    &format!("{path}[{index}]"),
                    format!("Duplicate value: {item}"),
                );
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            check_structure(item_schema, item, &format!("{path}[{index}]"), errors);
        }
    }
}

fn check_object(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let object = value.as_object().expect("checked by has_type");
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !object.contains_key(required) {
            push(errors, &join(path, required), "Required value".to_string());
        }
    }
    let Some(properties) = properties else {
        return;
    };
    for (key, field) in object {
        match properties.get(key) {
            Some(field_schema) => check_structure(field_schema, field, &join(path, key), errors),
            None => unknown_field(errors, &join(path, key)),
        }
    }
}

fn unknown_field(errors: &mut Vec<FieldError>, path: &str) {
    push(errors, path, format!("unknown field {path:?}"));
}

/// Reports fields the schema does not know, and nothing else.
fn check_unknown_fields(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Object(fields) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (key, field) in fields {
                match properties.get(key) {
                    Some(field_schema) => {
                        check_unknown_fields(field_schema, field, &join(path, key), errors);
                    }
                    None => unknown_field(errors, &join(path, key)),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                check_unknown_fields(&schema["items"], item, &format!("{path}[{index}]"), errors);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_cel(schema: &Value, manifest: &Value, errors: &mut Vec<FieldError>) {
    if let Err(failures) = Validator::new().validate(schema, manifest, None) {
        errors.extend(failures.iter().map(|failure| FieldError {
            path: failure.field_path.clone(),
            message: failure.message.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_namespace;

    #[test]
    fn namespace_names() {
        for valid in ["tenants", "a", "ns-1", "0abc", &"a".repeat(63)] {
            assert_eq!(parse_namespace(valid).as_deref(), Ok(valid));
        }
        for invalid in ["", "Bad_NS!", "Tenants", "-a", "a-", "a.b", &"a".repeat(64)] {
            let error = parse_namespace(invalid).unwrap_err();
            assert!(
                error.starts_with(&format!("{invalid:?} is not a valid namespace name")),
                "{error}"
            );
        }
    }
}
