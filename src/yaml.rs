//! Reads manifests the way `kubectl apply -f` does, so that `plan` and
//! `apply` see the same values kubectl would send to the API server.
//!
//! kubectl splits the stream into documents on lines starting with `---`,
//! decodes each document with sigs.k8s.io/yaml (go-yaml v2, which follows
//! YAML 1.1) and turns it into JSON. YAML 1.1 differs from the YAML 1.2
//! that most Rust crates implement: plain `yes`, `no`, `on`, `off`, `y` and
//! `n` are booleans, `010` is octal, and `<<` merges mappings. This module
//! uses granit-parser for the syntax and applies the 1.1 rules on top. A
//! stream whose first non-blank character is `{` is read as a sequence of
//! JSON values first, again as kubectl does.

mod scalar;
mod tree;

use std::fmt;

use serde_json::Value;

/// Deepest nesting of mappings and sequences accepted, go-yaml v2's limit.
pub const MAX_DEPTH: usize = 10_000;

/// Largest document accepted, in bytes: the API server's limit on a request
/// body, so no object above it could be created anyway.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;

/// A failure to read a stream, with the document and line where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// 1-based line in the whole stream, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for YamlError {}

/// One decoded document and its 1-based position in the stream. Positions
/// count the empty and null documents that are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub index: usize,
    pub value: Value,
}

/// Decodes every document in `text` to the JSON value kubectl would build
/// from it, skipping empty and null documents.
pub fn load_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    Ok(load_indexed(text)?.into_iter().map(|d| d.value).collect())
}

/// Decodes like [`load_documents`] and keeps each document's position for
/// messages.
pub fn load_indexed(text: &str) -> Result<Vec<Document>, YamlError> {
    if looks_like_json(text) {
        load_json_stream(text)
    } else {
        load_yaml_stream(text, 0, 0)
    }
}

/// kubectl looks at the first 4096 bytes: a `{` after any white space means
/// a JSON stream.
fn looks_like_json(text: &str) -> bool {
    let head = &text.as_bytes()[..text.len().min(4096)];
    String::from_utf8_lossy(head).trim_start().starts_with('{')
}

/// Reads concatenated JSON values. As in kubectl, a syntax error in the
/// first or second value switches to YAML from the end of the last good
/// value. A syntax error in a later value is final.
fn load_json_stream(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut documents = Vec::new();
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut consumed = 0;
    let mut count = 0;
    loop {
        match values.next() {
            None => return Ok(documents),
            Some(Ok(value)) => {
                count += 1;
                consumed = values.byte_offset();
                if !value.is_null() {
                    documents.push(Document {
                        index: count,
                        value,
                    });
                }
            }
            Some(Err(error)) if count > 1 => {
                return Err(YamlError {
                    document: count + 1,
                    line: Some(error.line()),
                    message: format!("invalid JSON: {error}"),
                });
            }
            Some(Err(_)) => {
                let rest = &text[consumed..];
                let (skipped, rest) = skip_to_line_end(rest);
                let first_line = text[..consumed + skipped].matches('\n').count();
                documents.extend(load_yaml_stream(rest, count, first_line)?);
                return Ok(documents);
            }
        }
    }
}

/// Skips white space up to and including the first line break, as kubectl
/// does before it reads the rest of a stream as YAML.
fn skip_to_line_end(text: &str) -> (usize, &str) {
    let mut skipped = 0;
    for c in text.chars() {
        if !c.is_whitespace() {
            break;
        }
        skipped += c.len_utf8();
        if c == '\n' {
            break;
        }
    }
    (skipped, &text[skipped..])
}

/// One document's text and the stream line it starts on (0-based).
struct Chunk {
    text: String,
    first_line: usize,
}

/// Reads YAML documents. `before` documents and `line_offset` lines came
/// earlier in the stream.
fn load_yaml_stream(
    text: &str,
    before: usize,
    line_offset: usize,
) -> Result<Vec<Document>, YamlError> {
    let mut documents = Vec::new();
    for (position, chunk) in split_documents(text, before)?.into_iter().enumerate() {
        let index = before + position + 1;
        let error = |line: Option<usize>, message: String| YamlError {
            document: index,
            line: line.map(|l| l + chunk.first_line + line_offset),
            message,
        };
        if chunk.text.len() > MAX_DOCUMENT_BYTES {
            return Err(error(
                None,
                format!(
                    "the document is {} bytes, more than the {MAX_DOCUMENT_BYTES} bytes the API server accepts for one object",
                    chunk.text.len()
                ),
            ));
        }
        let value = tree::parse_first_document(&chunk.text)
            .map_err(|failure| error(failure.line, failure.message))?;
        if !value.is_null() {
            documents.push(Document { index, value });
        }
    }
    Ok(documents)
}

/// Splits a stream as kubectl's YAMLReader does: a line starting with `---`
/// ends the current document, and may be followed only by spaces or a
/// comment. A `---` line that opens a document stays part of it. Line ends
/// are normalised to `\n`.
fn split_documents(text: &str, before: usize) -> Result<Vec<Chunk>, YamlError> {
    let mut chunks = Vec::new();
    let mut current = Chunk {
        text: String::new(),
        first_line: 0,
    };
    for (number, line) in lines(text).enumerate() {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                // The separator opens the next document.
                let opened = usize::from(!current.text.is_empty());
                return Err(YamlError {
                    document: before + chunks.len() + 1 + opened,
                    line: Some(number + 1),
                    message: format!("invalid Yaml document separator: {rest}"),
                });
            }
            if !current.text.is_empty() {
                let next = Chunk {
                    text: String::new(),
                    first_line: number + 1,
                };
                chunks.push(std::mem::replace(&mut current, next));
                continue;
            }
        }
        if current.text.is_empty() {
            current.first_line = number;
        }
        current.text.push_str(line);
        current.text.push('\n');
    }
    if !current.text.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

/// The lines of `text` without their `\n` or `\r\n` ends, as Go's
/// `bufio.Reader.ReadLine` returns them.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let ended = body.len() < text.len();
    let pieces: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };
    let count = pieces.len();
    pieces.into_iter().enumerate().map(move |(i, piece)| {
        let has_newline = i + 1 < count || ended;
        if has_newline {
            piece.strip_suffix('\r').unwrap_or(piece)
        } else {
            piece
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut documents = load_documents(text).unwrap();
        assert_eq!(documents.len(), 1, "{documents:?}");
        documents.remove(0)
    }

    #[test]
    fn yaml_1_1_scalars_in_a_manifest() {
        let value = one("suspend: yes\noff: n\nmode: 0644\nhex: 0x1F\nq: 'yes'\nempty:\n");
        assert_eq!(
            value,
            json!({"suspend": true, "false": false, "mode": 420, "hex": 31, "q": "yes", "empty": null})
        );
    }

    #[test]
    fn documents_are_split_as_kubectl_splits_them() {
        let text = "---\na: 1\n---\n\n--- # comment\n# only a comment\n---\nb: 2\n...\nc: 3\n";
        let documents = load_indexed(text).unwrap();
        let found: Vec<(usize, Value)> =
            documents.into_iter().map(|d| (d.index, d.value)).collect();
        assert_eq!(found, vec![(1, json!({"a": 1})), (4, json!({"b": 2}))]);
    }

    #[test]
    fn text_after_separator_is_rejected() {
        let error = load_documents("a: 1\n--- b: 2\n").unwrap_err();
        assert_eq!(error.document, 2);
        assert_eq!(error.line, Some(2));
        assert!(
            error
                .message
                .contains("invalid Yaml document separator: b: 2")
        );
    }

    #[test]
    fn crlf_line_ends() {
        assert_eq!(one("a: 1\r\n---\r\n").get("a"), Some(&json!(1)));
        assert_eq!(load_documents("a: 1\r\n---\r\nb: x\r\n").unwrap().len(), 2);
    }

    #[test]
    fn merge_keys() {
        let value = one("base: &b {p: 1, q: 2}\nm:\n  <<: *b\n  q: 3\n");
        assert_eq!(value["m"], json!({"p": 1, "q": 3}));
        let value = one("m:\n  <<: [{p: 1}, {p: 2, r: 2}]\n");
        assert_eq!(value["m"], json!({"p": 1, "r": 2}));
        // go-yaml v2 applies a merge at its position, so it overrides keys
        // written before it.
        let value = one("m:\n  q: 1\n  <<: {q: 2}\n");
        assert_eq!(value["m"], json!({"q": 2}));
        assert!(load_documents("m:\n  <<: [1]\n").is_err());
        assert_eq!(one("m: {'<<': {q: 2}}\n")["m"], json!({"<<": {"q": 2}}));
    }

    #[test]
    fn anchors_and_aliases() {
        let value = one("a: &x [1, yes]\nb: *x\n");
        assert_eq!(value["b"], json!([1, true]));
        let error = load_documents("a: &x [*x]\n").unwrap_err();
        assert!(error.message.contains("contains itself"), "{error}");
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        assert_eq!(one("a: 1\na: 2\n"), json!({"a": 2}));
    }

    #[test]
    fn rejected_keys_and_values() {
        assert!(load_documents("? [a]\n: 1\n").is_err());
        assert!(load_documents("~: 1\n").is_err());
        let error = load_documents("a: .nan\n").unwrap_err();
        assert!(error.message.contains("NaN"), "{error}");
        assert_eq!(
            one("1.5: a\n2: b\ntrue: c\n"),
            json!({"1.5": "a", "2": "b", "true": "c"})
        );
    }

    #[test]
    fn empty_and_null_documents_are_skipped() {
        assert_eq!(load_documents("").unwrap(), Vec::<Value>::new());
        assert_eq!(
            load_documents("# nothing\n---\nnull\n---\n~\n").unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn deep_nesting_fails_fast() {
        let text = "[".repeat(200 * 1024);
        let started = std::time::Instant::now();
        let error = load_documents(&text).unwrap_err();
        assert!(
            error.message.contains("exceeded max depth of 10000"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load_documents(&deep).is_ok());
    }

    #[test]
    fn oversized_document_is_rejected() {
        let text = format!("a: {}\n", "x".repeat(MAX_DOCUMENT_BYTES));
        let error = load_documents(&text).unwrap_err();
        assert!(error.message.contains("bytes"), "{error}");
    }

    #[test]
    fn json_streams() {
        let documents = load_documents("{\"a\": 1, \"a\": 2}\n{\"b\": 1.0}").unwrap();
        assert_eq!(documents, vec![json!({"a": 2}), json!({"b": 1.0})]);
        // Not JSON after all: read as YAML, booleans included.
        assert_eq!(one("{a: yes}"), json!({"a": true}));
    }

    #[test]
    fn errors_name_the_line_in_the_stream() {
        let error = load_documents("a: 1\n---\nb: 1\nc: [\n").unwrap_err();
        assert_eq!(error.document, 2);
        assert!(error.line.is_some_and(|line| line >= 3), "{error}");
    }
}
