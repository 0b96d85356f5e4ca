//! A YAML document as a tree that remembers where each node starts and keeps
//! mapping entries in order, duplicates included, so that validation can point at
//! the exact line of every problem.

use saphyr_parser::{Event, Parser, ScanError, Span};

/// A 1-based line and column in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn of(span: &Span) -> Location {
        Location {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub at: Location,
    /// Where the node starts and ends, in characters from the start of the file.
    pub span: (usize, usize),
    pub value: Value,
}

#[derive(Debug)]
pub enum Value {
    /// Scalars keep their text as written: nutcracker reads every value as a string.
    Scalar(String),
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Scalar(_) => "a single value",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }
}

/// A document that is not well-formed YAML, or uses YAML features a proxy config
/// has no use for.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: Location,
    pub message: String,
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> Self {
        SyntaxError {
            at: Location {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
        }
    }
}

/// Parses one YAML document. An empty file gives `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    enum Open {
        Sequence(Location, usize, Vec<Node>),
        Mapping(Location, usize, Vec<(Node, Node)>, Option<Node>),
    }

    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;

    for item in Parser::new_from_str(text) {
        let (event, span) = item?;
        let at = Location::of(&span);
        let (start, end) = (span.start.index(), span.end.index());
        let finished = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        at,
                        message: "a config file holds one YAML document; found a second one".into(),
                    });
                }
                None
            }
            Event::Alias(_) => {
                return Err(SyntaxError {
                    at,
                    message: "YAML aliases (*name) are not supported in a config file".into(),
                })
            }
            Event::Scalar(text, ..) => Some(Node {
                at,
                span: (start, end),
                value: Value::Scalar(text.into_owned()),
            }),
            Event::SequenceStart(..) => {
                stack.push(Open::Sequence(at, start, Vec::new()));
                None
            }
            Event::MappingStart(..) => {
                stack.push(Open::Mapping(at, start, Vec::new(), None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Sequence(at, start, items)) => Some(Node {
                    at,
                    span: (start, end),
                    value: Value::Sequence(items),
                }),
                Some(Open::Mapping(at, start, entries, _)) => Some(Node {
                    at,
                    span: (start, end),
                    value: Value::Mapping(entries),
                }),
                None => None,
            },
            _ => None,
        };
        let Some(node) = finished else { continue };
        match stack.last_mut() {
            Some(Open::Sequence(_, _, items)) => items.push(node),
            Some(Open::Mapping(_, _, entries, pending_key)) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => *pending_key = Some(node),
            },
            None => root = Some(node),
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_locations_order_and_duplicates() {
        let doc = parse("a:\n  x: 1\n  x: 2\n  list:\n    - one\n")
            .unwrap()
            .unwrap();
        let Value::Mapping(top) = doc.value else {
            panic!()
        };
        let (key, pool) = &top[0];
        assert!(matches!(&key.value, Value::Scalar(s) if s == "a"));
        let Value::Mapping(entries) = &pool.value else {
            panic!()
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].0.at, Location { line: 3, column: 3 });
        let Value::Sequence(items) = &entries[2].1.value else {
            panic!()
        };
        assert_eq!(items[0].at, Location { line: 5, column: 7 });
    }

    #[test]
    fn empty_document() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let e = parse("a:\n  b: [1, 2\n").unwrap_err();
        assert!(e.at.line >= 2, "{e:?}");
        assert!(e.message.starts_with("YAML syntax error"));
    }

    #[test]
    fn aliases_are_refused() {
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(e.at.line, 2);
    }
}
