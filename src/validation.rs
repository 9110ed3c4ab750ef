//! Validates a `PhotoUpdatePolicy` manifest without a cluster, against the
//! same OpenAPI schema and CEL rules the CRD installs in the API server. The
//! one-shot CLI uses it so that `plan` and `apply` accept exactly what
//! `kubectl apply` would.

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

/// Validates `manifest` as the API server would on create: type, kind and
/// name, the schema's structural rules (types, required fields, enums,
/// lengths, list sizes and sets, unknown fields), then the CEL rules.
pub fn validate(manifest: &Value) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    check_type_meta(manifest, &mut errors);
    let schema = crd_schema();
    // The API server checks type and object metadata itself, and status
    // goes through its own subresource.
    let mut body = manifest.clone();
    if let Some(object) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata", "status"] {
            object.remove(key);
        }
    }
    check_structure(&schema, &body, "", &mut errors);
    if errors.is_empty() {
        check_cel(&schema, manifest, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
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
    let name = manifest.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        Some(name) if is_dns_subdomain(name) => {}
        other => errors.push(FieldError {
            path: "metadata.name".to_string(),
            message: format!(
                "must be a lowercase DNS subdomain name (letters, digits, '-' and '.'), found {}",
                shown(other)
            ),
        }),
    }
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "nothing".to_string(), |v| format!("{v:?}"))
}

fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
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
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            push(errors, path, "must not be null".to_string());
        }
        return;
    }
    let Some(kind) = schema.get("type").and_then(Value::as_str) else {
        return;
    };
    if !has_type(value, kind) {
        push(errors, path, format!("must be of type {kind}"));
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
            format!("Too long: may not be more than {max} characters"),
        );
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        push(
            errors,
            path,
            format!("must be at least {min} characters long"),
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
            None => push(errors, &join(path, key), "unknown field".to_string()),
        }
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
