//! From key paths to `line:column` and back.
//!
//! serde only sees values, so positions come from a second, span-keeping parse of the
//! same text (`toml_edit`): a semantic issue walks it along its key path to the value's
//! span; a parse error's span is walked the other way, to the key path that holds it.

use std::fmt::Write as _;
use std::ops::Range;

use toml_edit::{Document, Item, Value};

/// One step of a key path: `nodes`, `1`, `vmid` is `nodes[1].vmid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}
impl From<&String> for Seg {
    fn from(k: &String) -> Self {
        Seg::Key(k.clone())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// The path as users write it; the empty path is the document itself.
pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        // Writing to a String cannot fail.
        let _ = match seg {
            Seg::Key(k) if out.is_empty() => write!(out, "{k}"),
            Seg::Key(k) => write!(out, ".{k}"),
            Seg::Index(i) => write!(out, "[{i}]"),
        };
    }
    if out.is_empty() {
        out.push_str("(top level)");
    }
    out
}

/// Byte offset to 1-based line and column (columns count characters, not bytes).
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where the value at `path` starts; a path that is absent (a defaulted field) stops
/// at the nearest ancestor that is written in the file.
pub(super) fn value_offset(doc: &Document<&str>, path: &[Seg]) -> usize {
    let mut item = doc.as_item();
    let mut best = 0;
    for seg in path {
        let next = match seg {
            Seg::Key(k) => item.get(k.as_str()),
            Seg::Index(i) => item.get(*i),
        };
        let Some(next) = next else { break };
        item = next;
        if let Some(span) = span_of(item) {
            best = span.start;
        }
    }
    best
}

/// A value's span; a `[table]` or `[[table]]` has none of its own, its header stands in.
fn span_of(item: &Item) -> Option<Range<usize>> {
    item.span()
        .or_else(|| item.as_table().and_then(toml_edit::Table::span))
}

/// The key path of the narrowest key or value whose span holds `offset`: what a
/// parse error's span points into. `None` when nothing does (the document start).
pub(super) fn path_at(doc: &Document<&str>, offset: usize) -> Option<Vec<Seg>> {
    let mut found = None;
    walk_item(doc.as_item(), offset, &mut Vec::new(), &mut found);
    found.map(|(path, _)| path)
}

type Found = Option<(Vec<Seg>, usize)>;

fn holds(span: Option<Range<usize>>, offset: usize) -> Option<usize> {
    let span = span?;
    (span.start <= offset && (offset < span.end || span.is_empty() && offset == span.start))
        .then(|| span.len())
}

fn consider(found: &mut Found, path: &[Seg], width: Option<usize>) {
    if let Some(width) = width
        && found.as_ref().is_none_or(|(_, w)| width <= *w)
    {
        *found = Some((path.to_vec(), width));
    }
}

fn walk_item(item: &Item, offset: usize, path: &mut Vec<Seg>, found: &mut Found) {
    match item {
        Item::Table(table) => {
            consider(found, path, holds(table.span(), offset));
            for (key, child) in table.iter() {
                walk_entry(
                    table.key(key).and_then(toml_edit::Key::span),
                    key,
                    child,
                    offset,
                    path,
                    found,
                );
            }
        }
        Item::ArrayOfTables(array) => {
            for (i, table) in array.iter().enumerate() {
                path.push(Seg::Index(i));
                consider(found, path, holds(table.span(), offset));
                for (key, child) in table.iter() {
                    walk_entry(
                        table.key(key).and_then(toml_edit::Key::span),
                        key,
                        child,
                        offset,
                        path,
                        found,
                    );
                }
                path.pop();
            }
        }
        Item::Value(value) => walk_value(value, offset, path, found),
        Item::None => {}
    }
}

fn walk_entry(
    key_span: Option<Range<usize>>,
    key: &str,
    child: &Item,
    offset: usize,
    path: &mut Vec<Seg>,
    found: &mut Found,
) {
    path.push(Seg::Key(key.to_string()));
    consider(found, path, holds(key_span, offset));
    walk_item(child, offset, path, found);
    path.pop();
}

fn walk_value(value: &Value, offset: usize, path: &mut Vec<Seg>, found: &mut Found) {
    let width = holds(value.span(), offset);
    if width.is_none() {
        return;
    }
    consider(found, path, width);
    match value {
        Value::Array(array) => {
            for (i, v) in array.iter().enumerate() {
                path.push(Seg::Index(i));
                walk_value(v, offset, path, found);
                path.pop();
            }
        }
        Value::InlineTable(table) => {
            for (key, v) in table.iter() {
                path.push(Seg::Key(key.to_string()));
                consider(
                    found,
                    path,
                    holds(table.key(key).and_then(toml_edit::Key::span), offset),
                );
                walk_value(v, offset, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// For text that does not even parse: the `[table]` above the offset and the key on
/// its line, which is as much as a broken document tells.
pub(super) fn key_near(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let header = |l: &str| {
        l.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
            .to_string()
    };
    // A header broken down to its brackets (`[[`) names no table.
    if line.trim_start().starts_with('[') {
        let table = header(line);
        return if table.is_empty() { render(&[]) } else { table };
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header)
        .filter(|t| !t.is_empty());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty());
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => render(&[]),
    }
}
