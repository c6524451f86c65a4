//! ACL policy text checked as OpenBao checks it before storing a policy.
//!
//! OpenBao (`internal/vault/policy/policy.go`, `ParseACLPolicyWithTemplating` and
//! `parsePaths`, and `internal/vault/logical_system.go` `handlePoliciesSet`) reads a
//! policy with HCL 1 (`sdk/helper/hclutil/hcl.go` `ParseConfig`: JSON when the text
//! starts with `{`), then decodes each `path` stanza into a struct and validates it.
//! This module parses the text with an HCL parser (`hcl-edit`) or `serde_json` into
//! the same shape HCL 1 builds (items with a key list and a value) and applies the
//! same checks in the same order, so the verdict here is OpenBao's but for the
//! caveats below. `castle-vault/tests/openbao.rs` holds a corpus that proves it.
//!
//! # Caveats
//! `hcl-edit` reads HCL 2, whose syntax is stricter than HCL 1's in places OpenBao
//! accepts: quoted attribute names (`"capabilities" = [...]`), several attributes on
//! one line or separated by commas, a block whose body has quoted keys
//! (`allowed_parameters { "*" = [] }`), a block inside an object
//! (`control_group = { factor "x" { ... } }`), hexadecimal numbers, `${` in a block
//! label; and `serde_json` refuses JSON missing its closing braces, which HCL 1's JSON
//! reader forgives. Those are refused here although OpenBao takes them. The
//! template of `list_scan_response_keys_filter_path` is checked only for balanced
//! actions, known functions and the use of `.key`, not compiled as a Go template.

use std::fmt::Write as _;

use base64::Engine as _;
use hcl_edit::Span as _;
use hcl_edit::expr::{Expression, ObjectKey, UnaryOperator};
use hcl_edit::structure::{Body, Structure};
use hcl_edit::template::{Element, Template};
use serde_json::Value;

/// A value as HCL 1 holds it: literals keep their token kind because the decoder
/// treats them differently (a number decodes into a string, a float into no int).
#[derive(Debug, Clone)]
enum Node {
    Str(String),
    Int(String),
    Float(String),
    Bool,
    /// Only JSON has it.
    Null,
    List(Vec<Node>),
    Object(Vec<Item>),
}

/// `keys... = value` or `keys... { ... }`: a block's labels are further keys.
#[derive(Debug, Clone)]
struct Item {
    keys: Vec<String>,
    /// The line HCL 1 reports for the item: that of its `=`, 0 for a block.
    line: Option<usize>,
    value: Node,
}

impl Node {
    /// The HCL 1 AST type name OpenBao's messages print.
    fn ast_type(&self) -> &'static str {
        match self {
            Node::List(_) => "*ast.ListType",
            Node::Object(_) => "*ast.ObjectType",
            _ => "*ast.LiteralType",
        }
    }
}

/// Checks policy text as `PUT sys/policies/acl/:name` does.
///
/// # Errors
/// OpenBao's refusal, as close to its wording as the checks allow
/// (`failed to parse policy: ...`).
pub(crate) fn check_policy(raw: &str) -> Result<(), String> {
    check(&decoded(raw))
        .map(|_| ())
        .map_err(|e| format!("failed to parse policy: {}", e.message()))
}

/// The rule a policy breaks, if it is read at all: `None` for a policy OpenBao
/// takes and for one that only HCL 2 cannot read (see the module's caveats), so
/// a spec check built on it never refuses what OpenBao would store.
pub(crate) fn broken_rule(raw: &str) -> Option<String> {
    match check(&decoded(raw)) {
        Err(Refusal::Rule(e)) => Some(format!("failed to parse policy: {e}")),
        _ => None,
    }
}

/// Why a policy is refused.
enum Refusal {
    /// The text does not parse (as HCL 2 or JSON).
    Syntax(String),
    /// It parses and breaks one of OpenBao's rules.
    Rule(String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Refusal::Syntax(m) | Refusal::Rule(m) => m,
        }
    }
}

/// The text OpenBao stores and reads back for a policy sent as `raw`.
pub(crate) fn stored_text(raw: &str) -> String {
    decoded(raw)
}

/// `handlePoliciesSet` takes text that is valid standard base64 as base64.
fn decoded(raw: &str) -> String {
    let compact: String = raw.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => raw.to_string(),
    }
}

/// One `path` stanza as the ACL uses it: the path as written (leading `/`
/// stripped, a trailing `*` kept) and its capabilities (`deny` alone when denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRule {
    pub(crate) path: String,
    pub(crate) capabilities: Vec<String>,
}

/// The path rules of a policy OpenBao would store (expired stanzas dropped).
///
/// # Errors
/// As [`check_policy`].
pub(crate) fn path_rules(raw: &str) -> Result<Vec<PathRule>, String> {
    check(&decoded(raw)).map_err(|e| format!("failed to parse policy: {}", e.message()))
}

fn check(text: &str) -> Result<Vec<PathRule>, Refusal> {
    let root = if text.trim().starts_with('{') {
        from_json(text)
    } else {
        from_hcl(text)
    }
    .map_err(Refusal::Syntax)?;
    check_items(&root).map_err(Refusal::Rule)
}

fn check_items(root: &[Item]) -> Result<Vec<PathRule>, String> {
    check_keys(root, &["name", "path"])?;
    for item in root.iter().filter(|i| i.keys[0] == "name") {
        if item.keys.len() > 1 {
            return Err("root.name: unknown type for string *ast.ObjectList".into());
        }
        string(&item.value).map_err(|t| format!("root.name: unknown type for string {t}"))?;
    }
    let mut rules = Vec::new();
    for item in root.iter().filter(|i| i.keys[0] == "path") {
        // `path { ... }` has no label: HCL 1 then calls the path "path".
        let key = item.keys.get(1).map_or("path", String::as_str);
        if let Some(rule) =
            check_path(key, &item.value).map_err(|e| format!("path {key:?}: {e}"))?
        {
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// `hclutil.CheckHCLKeys`: every key not in `valid`, reported together.
fn check_keys(items: &[Item], valid: &[&str]) -> Result<(), String> {
    let invalid = invalid_keys(items, valid);
    if invalid.is_empty() {
        return Ok(());
    }
    Err(multierror(&invalid))
}

fn invalid_keys(items: &[Item], valid: &[&str]) -> Vec<String> {
    items
        .iter()
        .filter(|i| !valid.contains(&i.keys[0].as_str()))
        .map(|i| match i.line {
            Some(line) => format!("invalid key {:?} on line {line}", i.keys[0]),
            None => format!("invalid key {:?}", i.keys[0]),
        })
        .collect()
}

/// go-multierror's text.
fn multierror(errors: &[String]) -> String {
    let mut out = if errors.len() == 1 {
        "1 error occurred:\n".to_string()
    } else {
        format!("{} errors occurred:\n", errors.len())
    };
    for e in errors {
        let _ = writeln!(out, "\t* {e}");
    }
    out.push('\n');
    out
}

fn object(node: &Node) -> Result<&[Item], String> {
    match node {
        Node::Object(items) => Ok(items),
        other => Err(format!(
            "cannot check HCL keys of type {}",
            other.ast_type()
        )),
    }
}

/// Values of key `key` (items with more keys are a nested object for it).
fn values<'a>(items: &'a [Item], key: &'a str) -> impl Iterator<Item = Node> + 'a {
    items.iter().filter(move |i| i.keys[0] == key).map(|i| {
        if i.keys.len() > 1 {
            Node::Object(vec![Item {
                keys: i.keys[1..].to_vec(),
                line: i.line,
                value: i.value.clone(),
            }])
        } else {
            i.value.clone()
        }
    })
}

/// The last value of `key`: HCL 1 decodes every occurrence into the same field.
fn last(items: &[Item], key: &str) -> Option<Node> {
    values(items, key).last()
}

/// HCL 1 `decodeString`: a string or a number's text; JSON `null` leaves it unset.
fn string(node: &Node) -> Result<Option<String>, &'static str> {
    match node {
        Node::Str(s) | Node::Int(s) => Ok(Some(s.clone())),
        Node::Null => Ok(None),
        Node::Object(_) => Err("*ast.ObjectList"),
        other => Err(other.ast_type()),
    }
}

/// HCL 1 `decodeSlice` of strings: a list of strings or numbers; an object is
/// taken as the list of its items, none of which is a string.
fn strings(field: &str, node: &Node) -> Result<Vec<String>, String> {
    match node {
        Node::List(elements) => elements
            .iter()
            .enumerate()
            .map(|(n, e)| {
                string(e)
                    .map(Option::unwrap_or_default)
                    .map_err(|t| format!("root.{field}[{n}]: unknown type for string {t}"))
            })
            .collect(),
        Node::Object(items) if items.is_empty() => Ok(Vec::new()),
        Node::Object(_) => Err(format!(
            "root.{field}[0]: unknown type for string *ast.ObjectItem"
        )),
        _ => Err("unknown slice type: *ast.LiteralType".into()),
    }
}

/// Every occurrence of a list field, concatenated as HCL 1 appends them.
fn string_lists(items: &[Item], key: &str, field: &str) -> Result<Vec<String>, String> {
    let mut all = Vec::new();
    for node in values(items, key) {
        all.extend(strings(field, &node)?);
    }
    Ok(all)
}

/// `map[string][]any`: an object whose values are lists or objects.
fn parameters(key: &str, node: &Node) -> Result<(), String> {
    let Node::Object(items) = node else {
        return Err(format!(
            "root.{key}: not an object type for map ({})",
            node.ast_type()
        ));
    };
    if items
        .iter()
        .all(|i| matches!(i.value, Node::List(_) | Node::Object(_)))
    {
        Ok(())
    } else {
        Err("unknown slice type: *ast.LiteralType".into())
    }
}

/// Go's `strconv.ParseInt(s, 0, 0)`: sign, then decimal, `0x`, `0o`, `0b` or
/// leading-zero octal, underscores between digits.
fn go_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
        (16, b.to_string())
    } else if let Some(b) = lower.strip_prefix("0o") {
        (8, b.to_string())
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return None;
    }
    let v = i64::from_str_radix(&body.replace('_', ""), radix).ok()?;
    Some(if neg { -v } else { v })
}

/// HCL 1 `decodeInt`: an integer token, or a string holding one.
fn int(field: &str, node: &Node) -> Result<i64, String> {
    match node {
        Node::Int(s) | Node::Str(s) => {
            go_int(s).ok_or_else(|| format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))
        }
        other => Err(format!("root.{field}: unknown type {}", other.ast_type())),
    }
}

/// Go's `time.ParseDuration`, in seconds.
fn go_duration(s: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (sign, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(sign * total)
}

/// go-secure-stdlib `parseutil.ParseDurationSecond`, in seconds: bare numbers are
/// seconds, `Nd` days, anything else a Go duration; JSON `null` is zero.
fn duration(node: &Node) -> Result<f64, String> {
    match node {
        Node::Null => Ok(0.0),
        Node::Int(s) => go_int(s)
            .map(|v| v as f64)
            .ok_or_else(|| format!("invalid duration {s:?}")),
        Node::Float(s) => s.parse().map_err(|_| format!("invalid duration {s:?}")),
        Node::Str(s) if s.is_empty() => Ok(0.0),
        Node::Str(s) => {
            if let Ok(v) = s.parse::<i64>() {
                return Ok(v as f64);
            }
            if let Some(days) = s.strip_suffix('d') {
                return days
                    .parse::<i64>()
                    .map(|d| d as f64 * 86_400.0)
                    .map_err(|_| format!("strconv.ParseInt: parsing {days:?}: invalid syntax"));
            }
            go_duration(s)
        }
        _ => Err("could not parse duration from input".into()),
    }
}

/// go-secure-stdlib `parseutil.ParseAbsoluteTime`: RFC 3339 or Unix seconds.
fn absolute_time(s: &str) -> Result<time::OffsetDateTime, String> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, rfc3339)
        .ok()
        .or_else(|| {
            s.parse::<i64>()
                .ok()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        })
        .ok_or_else(|| "could not parse string as date and time".into())
}

/// `identitytpl.PopulateString` with `ValidityCheckOnly`: `{{` and `}}` pair up.
fn templating_balanced(path: &str) -> bool {
    let mut pieces = path.split("{{");
    if pieces.next().is_some_and(|first| first.contains("}}")) {
        return false;
    }
    pieces.all(|p| p.split("}}").count() == 2)
}

/// Control groups (OpenBao 2.7): `ttl`, `self_auth_allowed` and named `factor`s, each
/// with valid `controlled_capabilities` and an `identity` of groups and approvals.
fn check_control_group(node: &Node) -> Result<(), String> {
    const OPERATIONS: [&str; 14] = [
        "create",
        "read",
        "update",
        "patch",
        "delete",
        "list",
        "scan",
        "help",
        "alias-lookahead",
        "resolve-role",
        "header",
        "revoke",
        "renew",
        "rollback",
    ];
    let items = object(node)?;
    check_keys(items, &["ttl", "self_auth_allowed", "factor"])?;
    if let Some(flag) = last(items, "self_auth_allowed")
        && !matches!(flag, Node::Bool)
    {
        return Err(format!(
            "path control_group: root.self_auth_allowed: unknown type {}",
            flag.ast_type()
        ));
    }
    let mut factors = Vec::new();
    for factor in items.iter().filter(|i| i.keys[0] == "factor") {
        let body = object(&factor.value)?;
        let mut invalid: Vec<String> = invalid_keys(body, &["controlled_capabilities", "identity"]);
        if factor.keys.len() < 2 {
            invalid.push("require name key".into());
        }
        if !invalid.is_empty() {
            let prefixed: Vec<String> = invalid
                .iter()
                .map(|e| format!("path control_group factor: {e}"))
                .collect();
            return Err(format!(
                "error handling control_group factor: {}",
                multierror(&prefixed)
            ));
        }
        factors.push(body);
    }
    if let Some(ttl) = last(items, "ttl") {
        duration(&ttl).map_err(|e| format!("path control_group: invalid ttl: {e}"))?;
    }
    if factors.is_empty() {
        return Err("requires at least one factor but had none".into());
    }
    for (n, body) in factors.iter().enumerate() {
        let capabilities =
            string_lists(body, "controlled_capabilities", "controlled_capabilities")?;
        if let Some(bad) = capabilities
            .iter()
            .find(|c| !OPERATIONS.contains(&c.as_str()))
        {
            return Err(format!("path control_group Operation(s) not valid: {bad}"));
        }
        if capabilities.is_empty() {
            return Err(format!("factor {n}: missing controlled capabilities"));
        }
        let identity = match last(body, "identity") {
            Some(Node::Object(items)) => items,
            _ => Vec::new(),
        };
        let approvals = match identity
            .iter()
            .rfind(|i| i.keys[0].eq_ignore_ascii_case("approvals"))
        {
            Some(i) => int("Approvals", &i.value)?,
            None => 0,
        };
        if approvals == 0 {
            return Err(format!("factor {n}: missing required approvals"));
        }
        if string_lists(&identity, "group_names", "group_names")?.is_empty() {
            return Err(format!("factor {n}: missing approving groups"));
        }
    }
    Ok(())
}

/// One `path "..." { ... }` stanza, as `parsePaths` takes it.
fn check_path(key: &str, node: &Node) -> Result<Option<PathRule>, String> {
    const CAPABILITIES: [&str; 8] = [
        "create", "read", "update", "delete", "list", "sudo", "patch", "scan",
    ];
    if !templating_balanced(key) {
        return Err(
            "failed to validate policy templating: unbalanced templating characters".into(),
        );
    }
    let items = object(node)?;
    check_keys(
        items,
        &[
            "comment",
            "policy",
            "capabilities",
            "allowed_parameters",
            "denied_parameters",
            "required_parameters",
            "min_wrapping_ttl",
            "max_wrapping_ttl",
            "mfa_methods",
            "pagination_limit",
            "expiration",
            "list_scan_response_keys_filter_path",
            "control_group",
        ],
    )?;
    for group in values(items, "control_group") {
        check_control_group(&group)
            .map_err(|e| format!("error handling control_group: {}", multierror(&[e])))?;
    }

    // Decoding into `PathRules`: wrong value types fail here, in field order.
    let decode = |e: String| format!("path {key:?}: {e}");
    let scalar = |k: &str| -> Result<Option<String>, String> {
        match last(items, k) {
            Some(v) => {
                string(&v).map_err(|t| decode(format!("root.{k}: unknown type for string {t}")))
            }
            None => Ok(None),
        }
    };
    let policy = scalar("policy")?;
    let mut capabilities = string_lists(items, "capabilities", "Capabilities").map_err(decode)?;
    let expiration = scalar("expiration")?;
    let min_ttl = last(items, "min_wrapping_ttl");
    let max_ttl = last(items, "max_wrapping_ttl");
    for k in ["allowed_parameters", "denied_parameters"] {
        for v in values(items, k) {
            parameters(k, &v).map_err(decode)?;
        }
    }
    string_lists(items, "required_parameters", "required_parameters").map_err(decode)?;
    string_lists(items, "mfa_methods", "mfa_methods").map_err(decode)?;
    if let Some(limit) = last(items, "pagination_limit") {
        int("pagination_limit", &limit).map_err(decode)?;
    }
    let filter_path = scalar("list_scan_response_keys_filter_path")?.unwrap_or_default();

    if let Some(expiration) = expiration.filter(|e| !e.is_empty()) {
        let at = absolute_time(&expiration)
            .map_err(|e| decode(format!("invalid expiration time: {e}")))?;
        // An expired stanza is dropped unchecked.
        if at < time::OffsetDateTime::now_utc() {
            return Ok(None);
        }
    }
    let path = key.strip_prefix('/').unwrap_or(key);
    if path.contains("+*") {
        return Err(format!(
            "path {path:?}: invalid use of wildcards ('+*' is forbidden)"
        ));
    }
    match policy.as_deref().unwrap_or_default() {
        "" => {}
        "deny" => capabilities = vec!["deny".into()],
        "read" => capabilities.extend(["read", "list"].map(String::from)),
        "write" => {
            capabilities.extend(["create", "read", "update", "delete", "list"].map(String::from))
        }
        "sudo" => capabilities
            .extend(["create", "read", "update", "delete", "list", "sudo"].map(String::from)),
        other => return Err(format!("path {key:?}: invalid policy {other:?}")),
    }
    for capability in &capabilities {
        match capability.as_str() {
            // `deny` ends the stanza: nothing after it is looked at.
            "deny" => {
                return Ok(Some(PathRule {
                    path: path.to_string(),
                    capabilities: vec!["deny".into()],
                }));
            }
            c if CAPABILITIES.contains(&c) => {}
            c => return Err(format!("path {key:?}: invalid capability {c:?}")),
        }
    }
    let min = match min_ttl {
        Some(v) => duration(&v).map_err(|e| format!("error parsing min_wrapping_ttl: {e}"))?,
        None => 0.0,
    };
    let max = match max_ttl {
        Some(v) => duration(&v).map_err(|e| format!("error parsing max_wrapping_ttl: {e}"))?,
        None => 0.0,
    };
    if min != 0.0 && max != 0.0 && max < min {
        return Err("max_wrapping_ttl cannot be less than min_wrapping_ttl".into());
    }
    if !filter_path.is_empty() {
        if !capabilities.iter().any(|c| c == "list") {
            return Err("list_scan_response_keys_filter_path needs to be used on a path with the list capability".into());
        }
        check_filter_template(&filter_path)?;
    }
    Ok(Some(PathRule {
        path: path.to_string(),
        capabilities,
    }))
}

/// The filter path is a Go template given `.path` and `.key`: its actions must
/// close, call only functions Go templates and OpenBao's template helper
/// (`sdk/helper/template/template.go`) define, and use `.key`, or two keys would
/// give one path.
fn check_filter_template(template: &str) -> Result<(), String> {
    const WORDS: &[&str] = &[
        // text/template keywords and builtins
        "if",
        "else",
        "end",
        "range",
        "with",
        "define",
        "template",
        "block",
        "break",
        "continue",
        "nil",
        "true",
        "false",
        "and",
        "call",
        "html",
        "index",
        "slice",
        "js",
        "len",
        "not",
        "or",
        "print",
        "printf",
        "println",
        "urlquery",
        "eq",
        "ge",
        "gt",
        "le",
        "lt",
        "ne",
        // OpenBao's
        "random",
        "truncate",
        "truncate_sha256",
        "uppercase",
        "lowercase",
        "replace",
        "sha256",
        "base64",
        "decode_base64",
        "hex",
        "decode_hex",
        "unix_time",
        "unix_time_millis",
        "timestamp",
        "uuid",
        "glob",
    ];
    let compile = |e: String| {
        format!(
            "unable to compile template for list_scan_response_keys_filter_path: unable to parse template: template: template:1: {e}"
        )
    };
    let mut uses_key = false;
    for piece in template.split("{{").skip(1) {
        let Some((action, _)) = piece.split_once("}}") else {
            return Err(compile("unclosed action".into()));
        };
        for word in action.split(|c: char| c.is_whitespace() || "|()-".contains(c)) {
            if word.starts_with(|c: char| c.is_alphabetic()) && !WORDS.contains(&word) {
                return Err(compile(format!("function {word:?} not defined")));
            }
        }
        uses_key |= action.contains(".key");
    }
    if !uses_key {
        return Err(
            "list_scan_response_keys_filter_path resulted in same path for two different keys"
                .into(),
        );
    }
    Ok(())
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Marks a repeated key so that `hcl-edit`, which refuses one, reads it: HCL 1 as
/// OpenBao uses it (`ParseDontErrorOnDuplicateKeys`) takes repeats, and its decoder
/// appends repeated lists and keeps the last scalar.
const REPEAT: &str = "-castle-repeat-";

fn from_hcl(src: &str) -> Result<Vec<Item>, String> {
    let mut text = src.to_string();
    loop {
        let error = match hcl_edit::parser::parse_body(&text) {
            Ok(body) => return body_items(&text, &body),
            Err(e) => e,
        };
        let repeat = error.message().contains("redefined") && text.len() < 8 * src.len() + 64;
        match repeat.then(|| mark_repeat(&text, error.location().offset())) {
            Some(Some(marked)) => text = marked,
            _ => {
                return Err(format!(
                    "At {}:{}: {}",
                    error.location().line(),
                    error.location().column(),
                    error.message()
                ));
            }
        }
    }
}

/// `text` with the key starting at `offset` (an identifier or a quoted string)
/// renamed to a unique name that [`key_name`] reads back.
fn mark_repeat(text: &str, offset: usize) -> Option<String> {
    let after = text.get(offset..)?;
    let start = offset + after.len() - after.trim_start().len();
    let rest = &text[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        start + 1 + quoted.find('"').unwrap_or(quoted.len())
    } else {
        start
            + rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len())
    };
    let marker = format!("{REPEAT}{}", text.matches(REPEAT).count());
    Some(format!("{}{marker}{}", &text[..end], &text[end..]))
}

/// A key as written, without the mark [`mark_repeat`] gave a repeat.
fn key_name(key: &str) -> String {
    key.find(REPEAT).map_or(key, |i| &key[..i]).to_string()
}

fn body_items(src: &str, body: &Body) -> Result<Vec<Item>, String> {
    body.iter()
        .map(|structure| match structure {
            Structure::Attribute(a) => Ok(Item {
                keys: vec![key_name(a.key.as_str())],
                line: a.key.span().map(|s| line_of(src, s.start)),
                value: hcl_value(src, &a.value)?,
            }),
            Structure::Block(b) => Ok(Item {
                keys: std::iter::once(b.ident.as_str().to_string())
                    .chain(b.labels.iter().map(|l| l.as_str().to_string()))
                    .collect(),
                line: Some(0),
                value: Node::Object(body_items(src, &b.body)?),
            }),
        })
        .collect()
}

/// The source text of a parsed node.
fn source(src: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.and_then(|s| src.get(s))
        .unwrap_or_default()
        .to_string()
}

/// A template as HCL 1 keeps it: literal text, `${...}` left as written.
fn template_text(src: &str, template: &Template) -> String {
    template
        .iter()
        .map(|element| match element {
            Element::Literal(text) => text.value().clone(),
            other => source(src, other.span()),
        })
        .collect()
}

/// HCL 1 has literals, lists and objects only: any HCL 2 expression beyond those
/// (a variable, `null`, a call, an operator) is a syntax error there too.
fn hcl_value(src: &str, expr: &Expression) -> Result<Node, String> {
    let unsupported = |expr: &Expression| {
        let at = expr.span().map_or(0, |s| s.start);
        format!(
            "At {}:1: unexpected token {:?}",
            line_of(src, at),
            source(src, expr.span())
        )
    };
    Ok(match expr {
        Expression::String(s) => Node::Str(s.value().clone()),
        Expression::Number(n) => {
            let text = source(src, n.span());
            if n.value().is_f64() {
                Node::Float(text)
            } else {
                Node::Int(text)
            }
        }
        Expression::Bool(_) => Node::Bool,
        Expression::Array(a) => Node::List(
            a.iter()
                .map(|e| hcl_value(src, e))
                .collect::<Result<_, _>>()?,
        ),
        Expression::Object(o) => Node::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Ident(i) => key_name(i.as_str()),
                        ObjectKey::Expression(Expression::String(s)) => key_name(s.value()),
                        ObjectKey::Expression(other) => return Err(unsupported(other)),
                    };
                    Ok(Item {
                        keys: vec![key],
                        line: k.span().map(|s| line_of(src, s.start)),
                        value: hcl_value(src, v.expr())?,
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Expression::StringTemplate(t) => Node::Str(template_text(src, t)),
        Expression::HeredocTemplate(h) => Node::Str(template_text(src, &h.template)),
        Expression::UnaryOp(op) if *op.operator.value() == UnaryOperator::Neg => {
            match hcl_value(src, &op.expr)? {
                Node::Int(t) => Node::Int(format!("-{t}")),
                Node::Float(t) => Node::Float(format!("-{t}")),
                _ => return Err(unsupported(expr)),
            }
        }
        other => return Err(unsupported(other)),
    })
}

/// HCL 1's JSON reader reads the first value and ignores what follows it.
fn from_json(src: &str) -> Result<Vec<Item>, String> {
    let value = serde_json::Deserializer::from_str(src)
        .into_iter::<Value>()
        .next()
        .ok_or("no JSON value")?
        .map_err(|e| e.to_string())?;
    match json_node(&value)? {
        Node::Object(items) => Ok(flatten(items)),
        _ => Err("expected a JSON object".into()),
    }
}

fn json_node(value: &Value) -> Result<Node, String> {
    Ok(match value {
        Value::Null => Node::Null,
        Value::Bool(_) => Node::Bool,
        Value::Number(n) if n.is_f64() => Node::Float(n.to_string()),
        Value::Number(n) => Node::Int(n.to_string()),
        Value::String(s) => Node::Str(s.clone()),
        Value::Array(a) => Node::List(
            a.iter()
                .map(|v| match v {
                    Value::Null => Err("unexpected token while parsing list: NULL".to_string()),
                    v => json_node(v),
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Node::Object(
            o.iter()
                .map(|(k, v)| {
                    Ok(Item {
                        keys: vec![k.clone()],
                        line: None,
                        value: json_node(v)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// HCL 1's JSON flattening (`json/parser/flatten.go`): an object whose values are
/// all objects becomes items with longer keys (`{"path": {"x": {...}}}` is
/// `path "x" {...}`), a list of objects becomes one item per object.
fn flatten(items: Vec<Item>) -> Vec<Item> {
    let mut out = Vec::new();
    for item in items {
        flatten_item(item, &mut out);
    }
    out
}

fn flatten_item(item: Item, out: &mut Vec<Item>) {
    let Item { keys, line, value } = item;
    match value {
        Node::Object(children)
            if !children.is_empty()
                && children.iter().all(|c| matches!(c.value, Node::Object(_))) =>
        {
            for child in children {
                let keys = keys.iter().chain(&child.keys).cloned().collect();
                flatten_item(
                    Item {
                        keys,
                        line,
                        value: child.value,
                    },
                    out,
                );
            }
        }
        Node::List(elements)
            if !elements.is_empty() && elements.iter().all(|e| matches!(e, Node::Object(_))) =>
        {
            for element in elements {
                flatten_item(
                    Item {
                        keys: keys.clone(),
                        line,
                        value: element,
                    },
                    out,
                );
            }
        }
        Node::Object(children) => out.push(Item {
            keys,
            line,
            value: Node::Object(flatten(children)),
        }),
        value => out.push(Item { keys, line, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_as_go_reads_them() {
        for (text, value) in [
            ("10", Some(10)),
            ("-5", Some(-5)),
            ("0x10", Some(16)),
            ("0o17", Some(15)),
            ("017", Some(15)),
            ("0b101", Some(5)),
            ("1_000", Some(1000)),
            ("_1", None),
            ("08", None),
            ("ten", None),
            ("", None),
        ] {
            assert_eq!(go_int(text), value, "{text}");
        }
        for (text, seconds) in [
            ("0", Ok(0.0)),
            ("1h30m", Ok(5400.0)),
            ("-1.5h", Ok(-5400.0)),
            ("300ms", Ok(0.3)),
            ("2h45m10s", Ok(9910.0)),
        ] {
            assert_eq!(go_duration(text), seconds, "{text}");
        }
        for bad in ["1", "h", "1x", ".h", "1..5h", "-", ""] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration(&Node::Str("2d".into())), Ok(172_800.0));
        assert_eq!(duration(&Node::Str("90".into())), Ok(90.0));
        assert!(duration(&Node::Bool).is_err());
    }

    #[test]
    fn json_flattens_as_hcl_1_does() {
        let items = from_json(r#"{"path": {"a": {"capabilities": []}, "b": {}}}"#).unwrap();
        let keys: Vec<Vec<String>> = items.iter().map(|i| i.keys.clone()).collect();
        assert_eq!(keys, [["path", "a"], ["path", "b"]]);
        let items = from_json(r#"{"path": [{"a": {}}, {"b": {}}]}"#).unwrap();
        assert_eq!(items.len(), 2);
        // Values that are not all objects stay one item.
        let items = from_json(r#"{"path": {"a": {}, "n": 1}}"#).unwrap();
        assert_eq!(items[0].keys, ["path"]);
    }

    #[test]
    fn repeated_keys_read_back_under_their_own_name() {
        let items = from_hcl("a = 1\na = 2\nb { \"k\" = 1 }\n").unwrap_err();
        assert!(items.contains("At 3:"), "{items}");
        let items = from_hcl("a = 1\na = 2\nc = { \"k\" = [], \"k\" = [] }\n").unwrap();
        let keys: Vec<&str> = items.iter().map(|i| i.keys[0].as_str()).collect();
        assert_eq!(keys, ["a", "a", "c"]);
        let Node::Object(inner) = &items[2].value else {
            panic!("c is an object")
        };
        assert!(inner.iter().all(|i| i.keys == ["k"]));
    }
}
