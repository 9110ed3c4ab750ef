//! Reads the objects named by `-f` the way `kubectl apply -f` does: a file,
//! every `.yaml`, `.yml` and `.json` file of a directory (not its
//! subdirectories, in name order), or standard input for `-`. Each
//! document is decoded as kubectl decodes it, and a List's items stand for
//! themselves.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::yaml::{self, YamlError};

/// Largest input read from one file or from standard input.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// The extensions kubectl reads from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The place an object was found, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, or `stdin`.
    pub source: String,
    /// 1-based document in that source.
    pub document: usize,
    /// 1-based item, when the document is a List.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// A failure to read the input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge { path: String },
    /// The YAML error is part of the message, not a separate cause, so
    /// that it is printed once.
    #[error("{path}: {error}")]
    Parse { path: String, error: YamlError },
    #[error("{location}: {message}")]
    Object { location: Location, message: String },
}

/// Reads every object named by `path`, with the place each was found.
pub fn read_objects(path: &str) -> Result<Vec<(Location, Value)>, InputError> {
    let mut objects = Vec::new();
    for (source, text) in read_sources(path)? {
        let documents = yaml::load_indexed(&text).map_err(|error| InputError::Parse {
            path: source.clone(),
            error,
        })?;
        for document in documents {
            let location = Location {
                source: source.clone(),
                document: document.index,
                item: None,
            };
            flatten(location, document.value, &mut objects)?;
        }
    }
    Ok(objects)
}

/// Reads the texts named by `path`: standard input, a directory's manifest
/// files, or one file.
fn read_sources(path: &str) -> Result<Vec<(String, String)>, InputError> {
    if path == "-" {
        let text = read_limited(std::io::stdin().lock(), "stdin")?;
        return Ok(vec![("stdin".to_string(), text)]);
    }
    let files = if Path::new(path).is_dir() {
        manifest_files(path)?
    } else {
        vec![PathBuf::from(path)]
    };
    files
        .into_iter()
        .map(|file| {
            let name = file.display().to_string();
            let opened = std::fs::File::open(&file).map_err(|source| InputError::Read {
                path: name.clone(),
                source,
            })?;
            let text = read_limited(opened, &name)?;
            Ok((name, text))
        })
        .collect()
}

/// Lists the `.yaml`, `.yml` and `.json` files directly in `dir`, sorted.
fn manifest_files(dir: &str) -> Result<Vec<PathBuf>, InputError> {
    let read_error = |source| InputError::Read {
        path: dir.to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        if manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_limited(reader: impl Read, name: &str) -> Result<String, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Read {
            path: name.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            path: name.to_string(),
        });
    }
    String::from_utf8(bytes).map_err(|error| InputError::Read {
        path: name.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.utf8_error()),
    })
}

/// Adds a document's objects: the document itself, or the items of a
/// List. As in kubectl, any object with an `items` field is a list. Items
/// with neither `apiVersion` nor `kind` take the list's apiVersion and its
/// kind without the `List` suffix, so a PhotoUpdatePolicyList contains
/// PhotoUpdatePolicy items. Lists inside lists are rejected, as kubectl
/// rejects them.
fn flatten(
    location: Location,
    value: Value,
    objects: &mut Vec<(Location, Value)>,
) -> Result<(), InputError> {
    let reject = |location: Location, message: String| InputError::Object { location, message };
    let Value::Object(mut fields) = value else {
        let message = format!("is {}, not an object", kind_of(&value));
        return Err(reject(location, message));
    };
    let Some(items) = fields.remove("items") else {
        objects.push((location, Value::Object(fields)));
        return Ok(());
    };
    let items = match items {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => {
            let message = format!("items of a List must be a list, found {}", kind_of(&other));
            return Err(reject(location, message));
        }
    };
    let api_version = fields.get("apiVersion").cloned();
    let item_kind = fields
        .get("kind")
        .and_then(Value::as_str)
        .map(|kind| kind.strip_suffix("List").unwrap_or(kind).to_string());
    for (index, item) in items.into_iter().enumerate() {
        let location = Location {
            item: Some(index + 1),
            ..location.clone()
        };
        let Value::Object(mut item) = item else {
            let message = format!("is {}, not an object", kind_of(&item));
            return Err(reject(location, message));
        };
        if item.contains_key("items") {
            return Err(reject(
                location,
                "a List inside a List is not supported".to_string(),
            ));
        }
        if !item.contains_key("apiVersion") && !item.contains_key("kind") {
            if let Some(api_version) = &api_version {
                item.insert("apiVersion".to_string(), api_version.clone());
            }
            if let Some(kind) = &item_kind {
                item.insert("kind".to_string(), Value::String(kind.clone()));
            }
        }
        objects.push((location, Value::Object(item)));
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(document: usize, item: Option<usize>) -> Location {
        Location {
            source: "f".to_string(),
            document,
            item,
        }
    }

    fn flattened(value: Value) -> Result<Vec<(Location, Value)>, InputError> {
        let mut objects = Vec::new();
        flatten(at(1, None), value, &mut objects)?;
        Ok(objects)
    }

    #[test]
    fn list_items_stand_for_themselves() {
        let list =
            json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]});
        let objects = flattened(list).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1], (at(1, Some(2)), json!({"kind": "B"})));
    }

    #[test]
    fn typed_list_items_take_the_item_kind() {
        let list = json!({"apiVersion": "photopolicy.io/v1alpha1", "kind": "PhotoUpdatePolicyList", "items": [{"spec": {}}]});
        let objects = flattened(list).unwrap();
        assert_eq!(objects[0].1["kind"], "PhotoUpdatePolicy");
        assert_eq!(objects[0].1["apiVersion"], "photopolicy.io/v1alpha1");
    }

    #[test]
    fn null_items_make_an_empty_list() {
        assert!(
            flattened(json!({"kind": "PhotoUpdatePolicy", "items": null}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rejected_shapes() {
        assert!(flattened(json!("text")).is_err());
        assert!(flattened(json!({"kind": "List", "items": "x"})).is_err());
        let nested = json!({"kind": "List", "items": [{"kind": "List", "items": []}]});
        let error = flattened(nested).unwrap_err().to_string();
        assert!(error.starts_with("f: document 1, item 1: "), "{error}");
    }
}
