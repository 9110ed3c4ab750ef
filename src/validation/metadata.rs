//! Checks `metadata` as the API server does when an object is created:
//! field types (it decodes into ObjectMeta), unknown fields, and the name,
//! namespace, label, annotation and finalizer rules, with its messages.

use serde_json::{Map, Value};

use super::{FieldError, push};

/// ObjectMeta's fields and the Go type each decodes into.
const FIELDS: &[(&str, Kind)] = &[
    ("name", Kind::Text("string")),
    ("generateName", Kind::Text("string")),
    ("namespace", Kind::Text("string")),
    ("selfLink", Kind::Text("string")),
    ("uid", Kind::Text("types.UID")),
    ("resourceVersion", Kind::Text("string")),
    ("generation", Kind::Integer),
    ("creationTimestamp", Kind::Time),
    ("deletionTimestamp", Kind::Time),
    ("deletionGracePeriodSeconds", Kind::Integer),
    ("labels", Kind::StringMap),
    ("annotations", Kind::StringMap),
    ("ownerReferences", Kind::List("v1.OwnerReference")),
    ("finalizers", Kind::List("string")),
    ("managedFields", Kind::List("v1.ManagedFieldsEntry")),
];

#[derive(Clone, Copy)]
enum Kind {
    Text(&'static str),
    Integer,
    Time,
    StringMap,
    /// A list of the named Go type: strings, or objects for the others.
    List(&'static str),
}

const DNS_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub(super) const DNS_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUALIFIED_NAME: &str = "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Largest total size of all annotation keys and values, in bytes.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Checks the `metadata` of a manifest whose null fields were dropped.
pub(super) fn check(metadata: Option<&Value>, errors: &mut Vec<FieldError>) {
    let empty = Map::new();
    let fields = match metadata {
        None => &empty,
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            let message = decode_error(other, "metadata", "v1.ObjectMeta");
            return push(errors, "metadata", message);
        }
    };
    let before = errors.len();
    check_fields(fields, errors);
    if errors.len() > before {
        // The API server stops at the first field it cannot decode.
        return;
    }
    check_names(fields, errors);
    check_labels(fields.get("labels"), errors);
    check_annotations(fields.get("annotations"), errors);
    check_finalizers(fields.get("finalizers"), errors);
    check_owner_references(fields.get("ownerReferences"), errors);
}

/// Reports unknown fields and values that do not decode into ObjectMeta.
fn check_fields(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for (key, value) in fields {
        let path = format!("metadata.{key}");
        match FIELDS.iter().find(|(name, _)| name == key) {
            None => push(errors, &path, format!("unknown field {path:?}")),
            Some((_, kind)) => {
                if let Some(message) = type_error(*kind, value, &path) {
                    push(errors, &path, message);
                }
            }
        }
    }
}

fn type_error(kind: Kind, value: &Value, path: &str) -> Option<String> {
    let fits = match kind {
        Kind::Text(_) | Kind::Time => value.is_string(),
        Kind::Integer => value.is_i64(),
        Kind::StringMap => value.is_object(),
        Kind::List(_) => value.is_array(),
    };
    if !fits {
        return Some(decode_error(value, path, go_type(kind)));
    }
    match (kind, value) {
        (Kind::Time, Value::String(text)) if text.parse::<jiff::Timestamp>().is_err() => Some(
            format!("parsing time {text:?} as \"2006-01-02T15:04:05Z07:00\": not an RFC 3339 time"),
        ),
        (Kind::StringMap, Value::Object(map)) => map
            .values()
            .find(|v| !v.is_string())
            .map(|v| decode_error(v, path, "string")),
        (Kind::List(item), Value::Array(items)) => {
            let want_string = item == "string";
            items
                .iter()
                .find(|v| {
                    if want_string {
                        !v.is_string()
                    } else {
                        !v.is_object()
                    }
                })
                .map(|v| decode_error(v, path, item))
        }
        _ => None,
    }
}

fn go_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text(name) => name,
        Kind::Integer => "int64",
        Kind::Time => "v1.Time",
        Kind::StringMap => "map[string]string",
        Kind::List("string") => "[]string",
        Kind::List("v1.OwnerReference") => "[]v1.OwnerReference",
        Kind::List(_) => "[]v1.ManagedFieldsEntry",
    }
}

/// Formats Go's message for a JSON value that does not fit a field.
fn decode_error(value: &Value, path: &str, go_type: &str) -> String {
    let found = match value {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "bool".to_string(),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(_) => "number".to_string(),
        Value::String(_) => "string".to_string(),
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
    };
    format!(
        "json: cannot unmarshal {found} into Go struct field ObjectMeta.{path} of type {go_type}"
    )
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn check_names(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    let name = text(fields, "name");
    let generate_name = text(fields, "generateName");
    match (name, generate_name) {
        (Some(name), _) => check_dns_subdomain(name, "metadata.name", errors),
        (None, Some(_)) => push(
            errors,
            "metadata.name",
            "Required value: kubectl apply cannot use generateName; set metadata.name".to_string(),
        ),
        (None, None) => push(
            errors,
            "metadata.name",
            "Required value: name or generateName is required".to_string(),
        ),
    }
    if let Some(prefix) = generate_name {
        // A generated name adds characters, so a trailing '-' is fine.
        let masked = match prefix.strip_suffix('-') {
            Some(rest) => format!("{rest}a"),
            None => prefix.to_string(),
        };
        let before = errors.len();
        check_dns_subdomain(&masked, "metadata.generateName", errors);
        for error in &mut errors[before..] {
            error.message = error
                .message
                .replace(&format!("{masked:?}"), &format!("{prefix:?}"));
        }
    }
    if let Some(namespace) = text(fields, "namespace") {
        check_dns_label(namespace, "metadata.namespace", errors);
    }
}

fn invalid(errors: &mut Vec<FieldError>, path: &str, value: &str, message: &str) {
    push(errors, path, format!("Invalid value: {value:?}: {message}"));
}

fn check_dns_subdomain(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if name.len() > 253 {
        invalid(errors, path, name, "must be no more than 253 characters");
    }
    if !is_dns_subdomain(name) {
        invalid(errors, path, name, DNS_SUBDOMAIN);
    }
}

fn check_dns_label(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if name.len() > 63 {
        invalid(errors, path, name, "must be no more than 63 characters");
    }
    if !is_dns_label(name) {
        invalid(errors, path, name, DNS_LABEL);
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
pub(super) fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
}

/// Reports whether `name` is DNS labels joined by dots.
pub(super) fn is_dns_subdomain(name: &str) -> bool {
    name.split('.').all(is_dns_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Checks a key as Kubernetes' IsQualifiedName does: an optional DNS
/// subdomain prefix and '/', then a name part of at most 63 bytes.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => return vec![QUALIFIED_NAME.to_string()],
    };
    let mut found = Vec::new();
    match prefix {
        Some("") => found.push("prefix part must be non-empty".to_string()),
        Some(prefix) if !is_dns_subdomain(prefix) => {
            found.push(format!("prefix part {DNS_SUBDOMAIN}"));
        }
        Some(prefix) if prefix.len() > 253 => {
            found.push("prefix part must be no more than 253 characters".to_string());
        }
        _ => {}
    }
    if name.is_empty() {
        found.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        found.push("name part must be no more than 63 bytes".to_string());
    }
    if !is_name_part(name) {
        found.push(NAME_PART.to_string());
    }
    found
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

fn check_labels(labels: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(Value::Object(labels)) = labels else {
        return;
    };
    for (key, value) in labels {
        for message in qualified_name_errors(key) {
            invalid(errors, "metadata.labels", key, &message);
        }
        let value = value.as_str().unwrap_or_default();
        if value.len() > 63 {
            invalid(
                errors,
                "metadata.labels",
                value,
                "must be no more than 63 bytes",
            );
        }
        if !is_label_value(value) {
            invalid(errors, "metadata.labels", value, LABEL_VALUE);
        }
    }
}

fn check_annotations(annotations: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(Value::Object(annotations)) = annotations else {
        return;
    };
    let mut size = 0;
    for (key, value) in annotations {
        // The API server ignores letter case in annotation keys.
        for message in qualified_name_errors(&key.to_ascii_lowercase()) {
            invalid(errors, "metadata.annotations", key, &message);
        }
        size += key.len() + value.as_str().map_or(0, str::len);
    }
    if size > ANNOTATIONS_MAX_BYTES {
        push(
            errors,
            "metadata.annotations",
            format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
        );
    }
}

fn check_finalizers(finalizers: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(Value::Array(finalizers)) = finalizers else {
        return;
    };
    for finalizer in finalizers.iter().filter_map(Value::as_str) {
        for message in qualified_name_errors(finalizer) {
            invalid(errors, "metadata.finalizers", finalizer, &message);
        }
    }
}

fn check_owner_references(references: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(Value::Array(references)) = references else {
        return;
    };
    for (index, reference) in references.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            let present = reference
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !present {
                push(
                    errors,
                    &format!("metadata.ownerReferences[{index}].{field}"),
                    "Required value: must not be empty".to_string(),
                );
            }
        }
    }
}
