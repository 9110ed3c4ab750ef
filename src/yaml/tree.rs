//! Builds the JSON value of one YAML document from granit-parser events,
//! with go-yaml v2's rules for anchors, merge keys, map keys and limits.
//! The tree is built with an explicit stack, so deep input cannot overflow
//! the thread's stack.

use std::borrow::Cow;
use std::collections::HashMap;

use granit_parser::{ErrorKind, Event, Marker, Options, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Value};

use super::MAX_DEPTH;

use super::scalar::{self, Scalar};

/// A failure inside one document, with its 1-based line in that document.
pub(super) struct Failure {
    pub line: Option<usize>,
    pub message: String,
}

type Result<T> = std::result::Result<T, Failure>;

fn fail<T>(span: Option<&Span>, message: impl Into<String>) -> Result<T> {
    Err(Failure {
        line: span.map(|s| s.start.line()),
        message: message.into(),
    })
}

/// Largest number of syntax repairs one document may need before it is
/// rejected.
const MAX_REPAIRS: usize = 64;

/// Parses the first document in `text` and ignores anything after it, as
/// go-yaml's `Unmarshal` does. A text with no document gives null.
///
/// libyaml, under go-yaml, accepts two things YAML 1.2 parsers reject: a
/// comment right after a token (`"x"#note`) and the escape `\'` in a
/// double-quoted scalar. Both are repaired in a copy of the text (a space
/// before the `#`, the backslash dropped), which keeps every line where
/// it was, and parsing starts again.
pub(super) fn parse_first_document(text: &str) -> Result<Value> {
    if let Some(line) = leading_end_marker(text) {
        // libyaml reads a stream's first document as implicit, and `...`
        // is no node.
        return Err(Failure {
            line: Some(line),
            message: "did not find expected node content".to_string(),
        });
    }
    let mut source = Cow::Borrowed(text);
    for _ in 0..MAX_REPAIRS {
        match build(&source) {
            Ok(value) => return Ok(value),
            Err(Attempt::Failed(failure)) => return Err(failure),
            Err(Attempt::Repair(repair)) => source = Cow::Owned(repair.apply(&source)),
        }
    }
    match build(&source) {
        Ok(value) => Ok(value),
        Err(Attempt::Failed(failure)) => Err(failure),
        Err(Attempt::Repair(_)) => fail(None, "too many comments or \\' escapes to read"),
    }
}

/// Finds the 1-based line of a `...` that comes before any content.
fn leading_end_marker(text: &str) -> Option<usize> {
    let (number, line) = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))?;
    let rest = line.strip_prefix("...")?;
    let ends = rest.is_empty() || rest.starts_with([' ', '\t']);
    ends.then_some(number + 1)
}

enum Attempt {
    Failed(Failure),
    Repair(Repair),
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Self {
        Attempt::Failed(failure)
    }
}

/// A change that makes libyaml-only syntax readable, at byte offsets.
enum Repair {
    SpaceBefore(usize),
    DropBackslashes(Vec<usize>),
}

impl Repair {
    fn apply(&self, text: &str) -> String {
        match self {
            Repair::SpaceBefore(at) => format!("{} {}", &text[..*at], &text[*at..]),
            Repair::DropBackslashes(offsets) => text
                .char_indices()
                .filter(|(at, _)| !offsets.contains(at))
                .map(|(_, c)| c)
                .collect(),
        }
    }
}

fn build(text: &str) -> std::result::Result<Value, Attempt> {
    let mut parser = Parser::new_from_str_with_options(text, parser_options());
    let mut builder = Builder::new(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|error| scan_failure(text, &error))?;
        match event {
            Event::StreamEnd | Event::DocumentEnd => break,
            Event::StreamStart | Event::DocumentStart(..) => {}
            Event::Alias(id) => builder.alias(id, &span)?,
            Event::Scalar(value, style, anchor, tag) => {
                builder.scalar(&value, style, anchor, tag.as_deref(), &span)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                builder.open(Collection::Seq(Vec::new()), anchor, &span)?;
            }
            Event::MappingStart(_, anchor, _) => {
                let map = Collection::Map {
                    entries: Map::new(),
                    key: None,
                };
                builder.open(map, anchor, &span)?;
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(&span)?,
            // Not asked for in the options.
            _ => {}
        }
    }
    let root = builder
        .root
        .map_or(Ok(Value::Null), |node| node.into_json(None));
    Ok(root?)
}

/// Byte offset of a parser position in `text`.
fn byte_offset(text: &str, marker: &Marker) -> usize {
    marker.byte_offset().unwrap_or_else(|| {
        text.char_indices()
            .nth(marker.index())
            .map_or(text.len(), |(at, _)| at)
    })
}

/// Lists the escapes of the double-quoted scalar that opens at or after
/// byte `start`: the byte offset of each backslash and the character after
/// it.
fn escapes(text: &str, start: usize) -> Vec<(usize, char)> {
    let Some(open) = text[start..].find('"') else {
        return Vec::new();
    };
    let from = start + open + 1;
    let mut found = Vec::new();
    let mut chars = text[from..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some((_, escaped)) => found.push((from + at, escaped)),
                None => break,
            },
            _ => {}
        }
    }
    found
}

fn scan_failure(text: &str, error: &ScanError) -> Attempt {
    let at = byte_offset(text, error.marker());
    match error.kind() {
        ErrorKind::CommentNotSeparated => return Attempt::Repair(Repair::SpaceBefore(at)),
        ErrorKind::UnknownQuotedScalarEscape => {
            let quotes: Vec<usize> = escapes(text, at)
                .into_iter()
                .filter(|(_, escaped)| *escaped == '\'')
                .map(|(offset, _)| offset)
                .collect();
            if !quotes.is_empty() {
                return Attempt::Repair(Repair::DropBackslashes(quotes));
            }
        }
        _ => {}
    }
    let message = match error.kind() {
        ErrorKind::RecursionLimitExceeded => format!("exceeded max depth of {MAX_DEPTH}"),
        _ => error.info(),
    };
    Attempt::Failed(Failure {
        line: Some(error.marker().line()),
        message,
    })
}

/// Sets go-yaml v2's limits: 10,000 nested flow collections (`[`, `{`) and
/// 10,000 indentation levels. The parser's default already has libyaml's
/// 1,024-character limit on implicit keys. Comments are not needed.
fn parser_options() -> Options {
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    options.emit_comments = false;
    options
}

/// A finished node. Scalars keep their YAML type until they land as a key
/// or a value, since the two are converted differently.
#[derive(Clone)]
struct Node {
    content: Content,
    /// Nodes go-yaml visits to decode this one, for its aliasing limit.
    visits: u64,
    /// Levels of nesting below this node.
    height: usize,
    /// Whether the node was written as an alias (`*name`).
    alias: bool,
}

#[derive(Clone)]
enum Content {
    Scalar(Scalar),
    /// A scalar `<<`, which is a merge key when it is used as a key.
    MergeKey(Scalar),
    Seq(Vec<Value>),
    Map(Map<String, Value>),
}

impl Node {
    fn into_json(self, span: Option<&Span>) -> Result<Value> {
        match self.content {
            Content::Scalar(s) | Content::MergeKey(s) => {
                scalar::to_json(&s).or_else(|message| fail(span, message))
            }
            Content::Seq(items) => Ok(Value::Array(items)),
            Content::Map(entries) => Ok(Value::Object(entries)),
        }
    }
}

/// A mapping or sequence still being read.
struct Open {
    collection: Collection,
    anchor: usize,
    visits: u64,
    height: usize,
}

enum Collection {
    Seq(Vec<Value>),
    Map {
        entries: Map<String, Value>,
        key: Option<Key>,
    },
}

/// A key read, waiting for its value.
enum Key {
    Name(String),
    Merge,
}

struct Builder<'t> {
    /// The document's text, for checks the parser's events cannot show.
    text: &'t str,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    budget: AliasBudget,
    root: Option<Node>,
}

impl<'t> Builder<'t> {
    fn new(text: &'t str) -> Self {
        Builder {
            text,
            stack: Vec::new(),
            anchors: HashMap::new(),
            budget: AliasBudget::default(),
            root: None,
        }
    }

    fn scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: &Span,
    ) -> Result<()> {
        if style == ScalarStyle::DoubleQuoted {
            self.check_escapes(span)?;
        }
        let tag = tag.map(|t| format!("{}{}", t.handle(), t.suffix()));
        let plain = style == ScalarStyle::Plain;
        let resolved = scalar::resolve(text, plain, tag.as_deref())
            .or_else(|message| fail(Some(span), message))?;
        let merge = text == "<<"
            && match tag.as_deref() {
                None | Some("!") => plain,
                Some(tag) => tag == "tag:yaml.org,2002:merge",
            };
        let content = if merge {
            Content::MergeKey(resolved)
        } else {
            Content::Scalar(resolved)
        };
        self.budget.count(1, 0, span)?;
        let node = Node {
            content,
            visits: 1,
            height: 0,
            alias: false,
        };
        self.finish(node, anchor, span)
    }

    /// Rejects the `\/` escape, which YAML 1.1 lacks, as go-yaml does.
    fn check_escapes(&self, span: &Span) -> Result<()> {
        let start = byte_offset(self.text, &span.start);
        if escapes(self.text, start).iter().any(|(_, c)| *c == '/') {
            return fail(Some(span), "found unknown escape character");
        }
        Ok(())
    }

    fn alias(&mut self, id: usize, span: &Span) -> Result<()> {
        let Some(target) = self.anchors.get(&id) else {
            let open = self.stack.iter().any(|open| open.anchor == id);
            let message = if open {
                "anchor value contains itself"
            } else {
                "unknown anchor referenced"
            };
            return fail(Some(span), message);
        };
        if self.stack.len() + target.height > MAX_DEPTH {
            return fail(Some(span), format!("exceeded max depth of {MAX_DEPTH}"));
        }
        let mut node = target.clone();
        self.budget.count(1, 0, span)?;
        self.budget.count(node.visits, node.visits, span)?;
        node.visits += 1;
        node.alias = true;
        self.finish(node, 0, span)
    }

    fn open(&mut self, collection: Collection, anchor: usize, span: &Span) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return fail(Some(span), format!("exceeded max depth of {MAX_DEPTH}"));
        }
        self.budget.count(1, 0, span)?;
        self.stack.push(Open {
            collection,
            anchor,
            visits: 1,
            height: 0,
        });
        Ok(())
    }

    fn close(&mut self, span: &Span) -> Result<()> {
        let Some(open) = self.stack.pop() else {
            return fail(Some(span), "unbalanced end of collection");
        };
        let content = match open.collection {
            Collection::Seq(items) => Content::Seq(items),
            Collection::Map { entries, .. } => Content::Map(entries),
        };
        let node = Node {
            content,
            visits: open.visits,
            height: open.height + 1,
            alias: false,
        };
        self.finish(node, open.anchor, span)
    }

    /// Records an anchor and hands a finished node to its parent.
    fn finish(&mut self, node: Node, anchor: usize, span: &Span) -> Result<()> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.visits += node.visits;
        parent.height = parent.height.max(node.height);
        match &mut parent.collection {
            Collection::Seq(items) => items.push(node.into_json(Some(span))?),
            Collection::Map { entries, key } => match key.take() {
                None => *key = Some(map_key(node, span)?),
                Some(Key::Name(name)) => {
                    entries.insert(name, node.into_json(Some(span))?);
                }
                Some(Key::Merge) => merge(entries, node, span)?,
            },
        }
        Ok(())
    }
}

/// Turns a key node into the string sigs.k8s.io/yaml makes of it.
fn map_key(node: Node, span: &Span) -> Result<Key> {
    match node.content {
        Content::MergeKey(_) => Ok(Key::Merge),
        Content::Scalar(s) => scalar::key_string(&s)
            .map(Key::Name)
            .or_else(|message| fail(Some(span), message)),
        Content::Seq(_) | Content::Map(_) => fail(
            Some(span),
            "invalid map key: a mapping or sequence cannot be a key",
        ),
    }
}

/// Applies a merge key as go-yaml v2 does: at its position, so it overrides
/// keys set before it. In a list of mappings, earlier ones win.
fn merge(entries: &mut Map<String, Value>, node: Node, span: &Span) -> Result<()> {
    const WANT_MAP: &str = "map merge requires map or sequence of maps as the value";
    let sources = match node.content {
        Content::Map(source) => vec![Value::Object(source)],
        Content::Seq(items) if !node.alias => items,
        _ => return fail(Some(span), WANT_MAP),
    };
    for source in sources.into_iter().rev() {
        let Value::Object(source) = source else {
            return fail(Some(span), WANT_MAP);
        };
        entries.extend(source);
    }
    Ok(())
}

/// go-yaml v2's guard against alias bombs: the share of decoded nodes that
/// come from expanding aliases may not pass a bound that shrinks from 99%
/// to 10% as documents grow.
#[derive(Default)]
struct AliasBudget {
    decoded: u64,
    aliased: u64,
}

impl AliasBudget {
    fn count(&mut self, decoded: u64, aliased: u64, span: &Span) -> Result<()> {
        self.decoded += decoded;
        self.aliased += aliased;
        if self.aliased > 100
            && self.decoded > 1000
            && self.aliased as f64 / self.decoded as f64 > allowed_alias_ratio(self.decoded)
        {
            return fail(Some(span), "document contains excessive aliasing");
        }
        Ok(())
    }
}

fn allowed_alias_ratio(decoded: u64) -> f64 {
    const LOW: u64 = 400_000;
    const HIGH: u64 = 4_000_000;
    match decoded {
        d if d <= LOW => 0.99,
        d if d >= HIGH => 0.10,
        d => 0.99 - 0.89 * ((d - LOW) as f64 / (HIGH - LOW) as f64),
    }
}
