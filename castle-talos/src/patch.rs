//! Machine-config patches with the semantics of Talos v1.12 (`talosctl --config-patch`).
//!
//! A machine config is a list of documents: `docs[0]` is the `v1alpha1` config (it has
//! `version: v1alpha1` and no `kind`), the others carry `apiVersion`, `kind` and, for
//! named kinds, `name`. The rules below follow Talos's source at tag v1.12.11; each
//! names the file it comes from (paths under `pkg/machinery/config/`).
//!
//! Strategic merge (`merge/merge.go`, `configpatcher/strategic.go`):
//! - a patch file holds one or more documents; each is matched to the config's document
//!   with the same `apiVersion`/`kind`/`name` (a document without `kind` that has
//!   `machine:`/`cluster:`/`debug:`/`persist:` or `version`/`apiVersion: v1alpha1` is the
//!   v1alpha1 config, `configloader/internal/decoder/decoder.go`); a patch document that
//!   matches none is appended to the config;
//! - maps merge key by key; lists append, except the keyed lists merged element by
//!   element and the `merge:"replace"` fields replaced whole (see `KEYED_LISTS` and
//!   `REPLACE`);
//! - an empty string or a 0 in the patch does not override (except the fields that are
//!   pointers in Talos, `POINTER_SCALARS`); a boolean always overrides, so `false`
//!   turns off what was `true`; `null` changes nothing;
//! - a value of another type than the config's (a list where a map is, a string where a
//!   number is) is an error, "merge type mismatch";
//! - an `Endpoint` (`cluster.controlPlane.endpoint`, a Go `*url.URL`) merges part by
//!   part: the patch's scheme, host, path, query or fragment replace the config's only
//!   where the patch has one, so `https://10.0.0.1` over `https://a:6443/` gives
//!   `https://10.0.0.1/` (`URL_FIELDS`);
//! - as Talos decodes a patch, `cluster.inlineManifests[].contents` loses its leading
//!   tabs and line breaks (`ClusterInlineManifests.UnmarshalYAML`).
//!
//! `$patch: delete` (`configloader/internal/decoder/delete.go`, `selector.go`): on a map
//! it deletes that key path; on a list element it deletes the config's element whose
//! first key (other than `$patch`) has the same value, e.g. `- interface: eth0`; on a
//! whole document (`apiVersion`, `kind`, `name`, `$patch: delete`) it removes the
//! document. Deletes of a patch document run before its merge, and the v1alpha1
//! document's before the others (`container/container.go`, `Documents`).
//!
//! RFC 6902 patches (`configpatcher/json6902.go`) apply only to a config of exactly one
//! document, as in Talos.
//!
//! Approximations: Talos works on typed Go structs, Castle on untyped JSON.
//! - Deleting a path needs every intermediate key present (Talos: a nil pointer or an
//!   absent map key fails the lookup). The last key may be absent when its parent is a
//!   struct (Talos zeroes the unset field) but must be present when the parent is a
//!   user-keyed map or free-form object (`USER_MAPS`, `FREE_FORM`, taken from the
//!   v1.12 JSON schema and the Go types). Talos also fails on a misspelt field name and
//!   succeeds through non-pointer struct intermediates (`machine.registries`); Castle
//!   cannot tell either without the schema and treats them as above.
//! - Merge type checks compare JSON types (map, list, string, number, boolean); Talos
//!   tells integers from floats inside free-form maps and rejects mistyped fields when
//!   it decodes the patch, before merging.
//! - A list-element delete compares the config element's value as a string, as Talos
//!   does; a number (`- vlanId: 10`) never matches, in Talos too.
//! - A `$patch: delete` for a document that the config does not have is an error here;
//!   Talos carries the delete selector along silently.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::{Error, Result};

/// A machine-config patch in one of Talos's two forms.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// Strategic merge: one or more documents, each merged into the config's document
    /// with the same `apiVersion`/`kind`/`name` (or appended), with `$patch: delete`.
    StrategicMerge(Vec<Value>),
    /// RFC 6902 operations (`add`, `remove`, `replace`, `test`, `move`, `copy`); only
    /// for a single-document config.
    JsonPatch(Vec<Value>),
}

impl Patch {
    /// Parses a patch from YAML (or JSON): a list of `{op, path}` objects is an RFC 6902
    /// patch, one or more map documents (`---`-separated) a strategic merge.
    ///
    /// The order of keys matters for a list element's `$patch: delete` (its first key
    /// selects the element); it is read from the text and kept as the element's only
    /// other key.
    ///
    /// # Errors
    /// The text is not YAML, a document is not a map, a JSON-patch operation lacks `op`
    /// or `path`, or a `$patch` directive other than `delete` is used.
    pub fn parse(yaml: &str) -> Result<Self> {
        let docs: Vec<Yaml> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| Error::Config(format!("patch is not YAML: {e}")))?;
        if let [Yaml::Seq(ops)] = docs.as_slice() {
            let ops = ops.iter().map(Yaml::plain).collect::<Vec<_>>();
            for (i, op) in ops.iter().enumerate() {
                let kind = op.get("op").and_then(Value::as_str);
                if !matches!(
                    kind,
                    Some("add" | "remove" | "replace" | "test" | "move" | "copy")
                ) || op.get("path").and_then(Value::as_str).is_none()
                {
                    return Err(Error::Config(format!(
                        "json patch operation #{}: needs `op` (add, remove, replace, test, move or copy) and `path`; \
                         a strategic-merge patch is a map, not a list",
                        i + 1
                    )));
                }
            }
            return Ok(Patch::JsonPatch(ops));
        }
        let mut out = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            if !matches!(d, Yaml::Map(_)) {
                return Err(Error::Config(format!(
                    "patch document #{}: a strategic-merge patch document is a map (an RFC 6902 patch a list of {{op, path}}, alone in its file)",
                    i + 1
                )));
            }
            let mut doc = d.normalized_at(false, true)?;
            if doc.get("kind").is_none() {
                trim_inline_manifests(&mut doc);
            }
            out.push(doc);
        }
        Ok(Patch::StrategicMerge(out))
    }
}

/// `ClusterInlineManifests.UnmarshalYAML` (v1alpha1/v1alpha1_types.go) strips the
/// leading tabs and line breaks (not spaces) of each manifest's `contents` as it decodes.
fn trim_inline_manifests(doc: &mut Value) {
    let manifests = doc
        .get_mut("cluster")
        .and_then(|c| c.get_mut("inlineManifests"))
        .and_then(Value::as_array_mut);
    for m in manifests.into_iter().flatten() {
        if let Some(Value::String(c)) = m.get_mut("contents") {
            let trimmed = c.trim_start_matches(['\t', '\n', '\u{b}', '\u{c}', '\r']);
            if trimmed.len() != c.len() {
                *c = trimmed.to_string();
            }
        }
    }
}

/// Applies patches in order to a machine config; `docs[0]` is the v1alpha1 document.
/// Nothing changes unless every patch applies.
///
/// # Errors
/// A patch does not apply: a type mismatch, a `$patch: delete` that finds nothing, an
/// RFC 6902 patch on a multi-document config or an operation that fails.
pub fn apply_patches(docs: &mut Vec<Value>, patches: &[Patch]) -> Result<()> {
    let mut work = docs.clone();
    for p in patches {
        match p {
            Patch::StrategicMerge(pdocs) => strategic_merge(&mut work, pdocs)?,
            Patch::JsonPatch(ops) => json6902(&mut work, ops)?,
        }
    }
    *docs = work;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tables of Talos's typed behaviour (Talos v1.12.11, pkg/machinery/config/types/...).
// Patterns are dotted paths within a document; `[]` is any list element, `*` any key.
// The first column is the document kind, `v1alpha1` for the v1alpha1 config.

/// How a keyed list merges its elements.
#[derive(Clone, Copy)]
enum Key {
    /// `NetworkDeviceList.Merge` (v1alpha1/v1alpha1_types.go): by a non-empty
    /// `interface`, else by an equal `deviceSelector`, else append.
    Interface,
    /// Elements whose value at this key is equal merge; an absent key counts as the
    /// zero value of the Go field (a number or a string).
    Number(&'static str),
    String(&'static str),
}

/// Lists merged element by element (custom `Merge` methods).
const KEYED_LISTS: &[(&str, &str, Key)] = &[
    // v1alpha1/v1alpha1_types.go: NetworkDeviceList.Merge
    ("v1alpha1", "machine.network.interfaces", Key::Interface),
    // v1alpha1/v1alpha1_types.go: VlanList.Merge
    (
        "v1alpha1",
        "machine.network.interfaces.[].vlans",
        Key::Number("vlanId"),
    ),
    // v1alpha1/v1alpha1_types.go: AdmissionPluginConfigList.Merge
    (
        "v1alpha1",
        "cluster.apiServer.admissionControl",
        Key::String("name"),
    ),
    // runtime/extensions/service_config.go: ConfigFileList.Merge
    (
        "ExtensionServiceConfig",
        "configFiles",
        Key::String("mountPath"),
    ),
];

/// Fields tagged `merge:"replace"`: a non-null patch value replaces the config's whole.
pub(crate) const REPLACE: &[(&str, &str)] = &[
    // v1alpha1/v1alpha1_types.go
    ("v1alpha1", "cluster.apiServer.auditPolicy"),
    ("v1alpha1", "cluster.network.podSubnets"),
    ("v1alpha1", "cluster.network.serviceSubnets"),
    // network/rule_config.go
    ("NetworkRuleConfig", "ingress"),
    ("NetworkRuleConfig", "portSelector.ports"),
];

/// Fields of Talos's `Endpoint` type (a `*url.URL`): merge.go merges the URL's struct
/// fields one by one, so a patch's URL without a path keeps the config's path.
const URL_FIELDS: &[(&str, &str)] = &[
    // v1alpha1/v1alpha1_types.go: `Endpoint *Endpoint yaml:"endpoint"` (ControlPlaneConfig)
    ("v1alpha1", "cluster.controlPlane.endpoint"),
];

/// Scalar fields that are pointers in Talos: `merge.go` overwrites through a non-nil
/// pointer even with a zero value, so a 0 in the patch does override these.
pub(crate) const POINTER_SCALARS: &[(&str, &str)] = &[
    // v1alpha1/v1alpha1_types.go: KubeSpanMTU *uint32
    ("v1alpha1", "machine.network.kubespan.mtu"),
    // network/bond.go
    ("BondConfig", "miimon"),
    ("BondConfig", "updelay"),
    ("BondConfig", "downdelay"),
    ("BondConfig", "arpInterval"),
    ("BondConfig", "adActorSysPrio"),
    ("BondConfig", "adUserPortKey"),
    ("BondConfig", "resendIGMP"),
    ("BondConfig", "minLinks"),
    ("BondConfig", "lpInterval"),
    ("BondConfig", "packetsPerSlave"),
    ("BondConfig", "numPeerNotif"),
    ("BondConfig", "tlbLogicalLb"),
    ("BondConfig", "allSlavesActive"),
    ("BondConfig", "peerNotifDelay"),
    ("BondConfig", "missedMax"),
    // network/ethernet.go
    ("EthernetConfig", "rings.rx"),
    ("EthernetConfig", "rings.tx"),
    ("EthernetConfig", "rings.rx-mini"),
    ("EthernetConfig", "rings.rx-jumbo"),
    ("EthernetConfig", "rings.rx-buf-len"),
    ("EthernetConfig", "rings.cqe-size"),
    ("EthernetConfig", "rings.tx-push-buf-len"),
    ("EthernetConfig", "channels.rx"),
    ("EthernetConfig", "channels.tx"),
    ("EthernetConfig", "channels.other"),
    ("EthernetConfig", "channels.combined"),
    // block/zswap_config.go
    ("ZswapConfig", "maxPoolPercent"),
];

/// User-keyed maps (`map[string]T`): deleting a key of theirs needs the key present.
/// From the v1.12 JSON schema (/work/shared/reference/talos-v1.12-config.schema.json,
/// properties with `patternProperties`) plus the undocumented `machine.registries` maps
/// of v1alpha1/v1alpha1_types.go and `features` of network/ethernet.go.
pub(crate) const USER_MAPS: &[(&str, &str)] = &[
    ("v1alpha1", "machine.kubelet.extraArgs"),
    ("v1alpha1", "machine.env"),
    ("v1alpha1", "machine.sysctls"),
    ("v1alpha1", "machine.sysfs"),
    ("v1alpha1", "machine.nodeLabels"),
    ("v1alpha1", "machine.nodeAnnotations"),
    ("v1alpha1", "machine.nodeTaints"),
    ("v1alpha1", "machine.registries.mirrors"),
    ("v1alpha1", "machine.registries.config"),
    ("v1alpha1", "cluster.apiServer.extraArgs"),
    ("v1alpha1", "cluster.apiServer.env"),
    ("v1alpha1", "cluster.controllerManager.extraArgs"),
    ("v1alpha1", "cluster.controllerManager.env"),
    ("v1alpha1", "cluster.proxy.extraArgs"),
    ("v1alpha1", "cluster.scheduler.extraArgs"),
    ("v1alpha1", "cluster.scheduler.env"),
    ("v1alpha1", "cluster.etcd.extraArgs"),
    ("v1alpha1", "cluster.extraManifestHeaders"),
    ("EthernetConfig", "features"),
];

/// Free-form objects (`Unstructured`, `map[string]any`): every key below them is a map
/// key, so a delete needs it present. From the same schema (objects without
/// `properties`); `resources` there is a struct of two free-form maps in the Go types.
pub(crate) const FREE_FORM: &[(&str, &str)] = &[
    ("v1alpha1", "machine.kubelet.extraConfig"),
    ("v1alpha1", "machine.kubelet.credentialProviderConfig"),
    ("v1alpha1", "machine.baseRuntimeSpecOverrides"),
    ("v1alpha1", "cluster.apiServer.auditPolicy"),
    ("v1alpha1", "cluster.apiServer.resources.*"),
    ("v1alpha1", "cluster.controllerManager.resources.*"),
    ("v1alpha1", "cluster.scheduler.resources.*"),
    ("v1alpha1", "cluster.scheduler.config"),
    (
        "v1alpha1",
        "cluster.apiServer.admissionControl.[].configuration",
    ),
];

fn matches(pattern: &str, path: &[String]) -> bool {
    let mut n = 0;
    for (p, s) in pattern.split('.').zip(path.iter()) {
        if p != "*" && p != s {
            return false;
        }
        n += 1;
    }
    n == path.len() && pattern.split('.').count() == n
}

fn in_table(table: &[(&str, &str)], kind: &str, path: &[String]) -> bool {
    table.iter().any(|(k, p)| *k == kind && matches(p, path))
}

fn keyed(kind: &str, path: &[String]) -> Option<Key> {
    KEYED_LISTS
        .iter()
        .find(|(k, p, _)| *k == kind && matches(p, path))
        .map(|(_, _, key)| *key)
}

// ---------------------------------------------------------------------------------------
// Documents.

/// The identity Talos matches documents by: apiVersion, kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocId {
    api_version: String,
    /// `v1alpha1` for the v1alpha1 config.
    kind: String,
    name: Option<String>,
}

impl DocId {
    fn legacy() -> Self {
        DocId {
            api_version: String::new(),
            kind: "v1alpha1".into(),
            name: None,
        }
    }

    fn is_legacy(&self) -> bool {
        self.api_version.is_empty() && self.kind == "v1alpha1"
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)?;
        if let Some(n) = &self.name {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

fn str_field(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The identity of a config document: without `kind`, the v1alpha1 config.
fn config_doc_id(doc: &Value) -> DocId {
    match str_field(doc, "kind") {
        None => DocId::legacy(),
        Some(kind) => DocId {
            api_version: str_field(doc, "apiVersion").unwrap_or_default(),
            kind,
            name: str_field(doc, "name"),
        },
    }
}

/// The identity of a patch document, as Talos's decoder sees it (decoder.go `decode`).
fn patch_doc_id(doc: &Value, n: usize) -> Result<DocId> {
    let kind = str_field(doc, "kind");
    let api_version = str_field(doc, "apiVersion");
    match (kind, api_version) {
        (Some(kind), Some(api_version)) => Ok(DocId {
            api_version,
            kind,
            name: str_field(doc, "name"),
        }),
        (Some(kind), None) => Err(Error::Config(format!(
            "patch document #{n} (kind {kind}): missing apiVersion; add `apiVersion: v1alpha1`"
        ))),
        (None, api_version) => {
            let legacy = api_version.as_deref() == Some("v1alpha1")
                || doc.get("version").and_then(Value::as_str) == Some("v1alpha1")
                || ["machine", "cluster", "debug", "persist"]
                    .iter()
                    .any(|k| doc.get(*k).is_some());
            if legacy {
                Ok(DocId::legacy())
            } else {
                Err(Error::Config(format!(
                    "patch document #{n}: missing kind; a patch for the v1alpha1 config has `machine:` or `cluster:` \
                     (or `version: v1alpha1`), a patch for another document names it with `apiVersion`, `kind` (and `name`)"
                )))
            }
        }
    }
}

/// What a `$patch: delete` removes.
#[derive(Debug)]
enum Target {
    /// The whole document.
    Document,
    /// A key path (map delete).
    Key,
    /// The list element (path ends in `[i]`) whose `key` has this string value.
    Element { key: String, value: Option<String> },
}

#[derive(Debug)]
struct Delete {
    id: DocId,
    path: Vec<String>,
    target: Target,
}

impl Delete {
    fn path_str(&self) -> String {
        self.path.join(".")
    }
}

enum Op {
    Delete(Delete),
    Merge(DocId, Value),
}

fn is_delete_marker(m: &Map<String, Value>) -> bool {
    m.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// Collects the `$patch: delete` directives of a patch document and removes them from
/// it, dropping maps and lists they leave empty (delete.go `processNode`).
fn extract_deletes(
    v: &mut Value,
    path: &mut Vec<String>,
    parent_is_list: bool,
    id: &DocId,
    out: &mut Vec<Delete>,
) -> Result<bool> {
    match v {
        Value::Object(m) => {
            if let Some(other) = m.get("$patch")
                && other.as_str() != Some("delete")
            {
                return Err(Error::Config(format!(
                    "patch for document '{id}', path '{}': `$patch: {other}` is not supported; Talos knows only `$patch: delete`",
                    path.join(".")
                )));
            }
            if is_delete_marker(m) {
                let target = if parent_is_list {
                    let others: Vec<_> = m.iter().filter(|(k, _)| *k != "$patch").collect();
                    match others.as_slice() {
                        [(k, val)] => Target::Element {
                            key: (*k).clone(),
                            value: scalar_text(val),
                        },
                        [] => {
                            return Err(Error::Config(format!(
                                "patch for document '{id}': no key:val found in sequence node for path {}; \
                                 a list element to delete names a key and its value, e.g. `- interface: eth0` beside `$patch: delete`",
                                path.join(".")
                            )));
                        }
                        _ => {
                            return Err(Error::Config(format!(
                                "patch for document '{id}', path '{}': a list element with `$patch: delete` must keep one other key, \
                                 the one that selects the element (Patch::parse keeps the first one written)",
                                path.join(".")
                            )));
                        }
                    }
                } else if path.is_empty() {
                    if id.is_legacy() {
                        return Err(Error::Config(
                            "patch: can't delete the root of the legacy (v1alpha1) document; \
                             `$patch: delete` at the top of a document needs its `apiVersion`, `kind` (and `name`)"
                                .into(),
                        ));
                    }
                    Target::Document
                } else {
                    if path.iter().any(|s| s.starts_with('[')) {
                        return Err(Error::Config(format!(
                            "patch for document '{id}': cannot delete an inner key in '{}'; \
                             delete the whole list element (put `$patch: delete` beside its selecting key) and add it back changed",
                            path.join(".")
                        )));
                    }
                    Target::Key
                };
                out.push(Delete {
                    id: id.clone(),
                    path: path.clone(),
                    target,
                });
                return Ok(true);
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            let mut removed = false;
            for k in keys {
                path.push(k.clone());
                let gone =
                    extract_deletes(m.get_mut(&k).expect("key listed"), path, false, id, out)?;
                path.pop();
                if gone {
                    m.remove(&k);
                    removed = true;
                }
            }
            Ok(removed && m.is_empty())
        }
        Value::Array(a) => {
            let mut removed = false;
            let mut i = 0;
            while i < a.len() {
                path.push(format!("[{i}]"));
                let gone = extract_deletes(&mut a[i], path, true, id, out)?;
                path.pop();
                if gone {
                    a.remove(i);
                    removed = true;
                } else {
                    i += 1;
                }
            }
            Ok(removed && a.is_empty())
        }
        _ => Ok(false),
    }
}

/// The text Talos compares a list element's field with: the YAML scalar as written.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// A v1alpha1 patch document left with only `version`/`kind`/`name` is dropped
/// (delete.go `isEmptyDoc`).
fn is_empty_doc(doc: &Value) -> bool {
    doc.as_object().is_some_and(|m| {
        m.iter().all(|(k, v)| {
            matches!(k.as_str(), "version" | "kind" | "name") && !v.is_object() && !v.is_array()
        })
    })
}

fn strategic_merge(docs: &mut Vec<Value>, patch_docs: &[Value]) -> Result<()> {
    let mut legacy_ops = Vec::new();
    let mut other_ops = Vec::new();
    let mut seen: Vec<DocId> = Vec::new();
    for (i, pdoc) in patch_docs.iter().enumerate() {
        let n = i + 1;
        if !pdoc.is_object() {
            return Err(Error::Config(format!("patch document #{n} is not a map")));
        }
        let whole_delete = pdoc.as_object().is_some_and(is_delete_marker);
        let id = if whole_delete {
            match (str_field(pdoc, "apiVersion"), str_field(pdoc, "kind")) {
                (Some(api_version), Some(kind)) => DocId {
                    api_version,
                    kind,
                    name: str_field(pdoc, "name"),
                },
                (None, None) => DocId::legacy(),
                (a, _) => {
                    return Err(Error::Config(format!(
                        "patch document #{n}: missing {} in document for which $patch: delete is used",
                        if a.is_none() { "apiVersion" } else { "kind" }
                    )));
                }
            }
        } else {
            patch_doc_id(pdoc, n)?
        };
        let mut doc = pdoc.clone();
        let mut deletes = Vec::new();
        let gone = extract_deletes(&mut doc, &mut Vec::new(), false, &id, &mut deletes)?;
        let ops = if id.is_legacy() {
            &mut legacy_ops
        } else {
            &mut other_ops
        };
        ops.extend(deletes.into_iter().map(Op::Delete));
        if gone || (id.is_legacy() && is_empty_doc(&doc)) {
            continue;
        }
        if seen.contains(&id) {
            return Err(Error::Config(format!(
                "patch: duplicate document {id} is not allowed (document #{n}); merge the two into one"
            )));
        }
        seen.push(id.clone());
        if id.is_legacy()
            && let Some(m) = doc.as_object_mut()
        {
            // `apiVersion: v1alpha1` only names the v1alpha1 config; it has no such field.
            m.remove("apiVersion");
        }
        ops.push(Op::Merge(id, doc));
    }
    for op in legacy_ops.into_iter().chain(other_ops) {
        match op {
            Op::Delete(d) => apply_delete(docs, &d)?,
            Op::Merge(id, doc) => match docs.iter_mut().find(|d| config_doc_id(d) == id) {
                Some(target) => {
                    let kind = id.kind.clone();
                    merge(
                        target,
                        &doc,
                        &Ctx {
                            kind: &kind,
                            id: &id,
                        },
                        &mut Vec::new(),
                    )?;
                }
                None => docs.push(doc),
            },
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Merge (merge/merge.go).

struct Ctx<'a> {
    kind: &'a str,
    id: &'a DocId,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn merge(left: &mut Value, right: &Value, ctx: &Ctx<'_>, path: &mut Vec<String>) -> Result<()> {
    if right.is_null() {
        return Ok(());
    }
    if left.is_null() {
        *left = right.clone();
        return Ok(());
    }
    if std::mem::discriminant(left) != std::mem::discriminant(right) {
        return Err(Error::Config(format!(
            "patch: merge type mismatch at '{}' in document '{}': the config has a {} and the patch a {}; \
             write a {} there, or delete the key with `$patch: delete` in an earlier patch before setting it anew",
            path.join("."),
            ctx.id,
            type_name(left),
            type_name(right),
            type_name(left),
        )));
    }
    if in_table(REPLACE, ctx.kind, path) {
        *left = right.clone();
        return Ok(());
    }
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, rv) in r {
                path.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge(lv, rv, ctx, path)?,
                    None => {
                        // A zero scalar leaves an unset struct field unset; a map key
                        // (user-keyed or free-form) is set to it (merge.go).
                        let skip = rv.is_null()
                            || (is_zero_scalar(rv)
                                && !in_table(POINTER_SCALARS, ctx.kind, path)
                                && !user_keyed(ctx.kind, &path[..path.len() - 1]));
                        if !skip {
                            l.insert(k.clone(), rv.clone());
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(l), Value::Array(r)) => match keyed(ctx.kind, path) {
            None => l.extend(r.iter().cloned()),
            Some(key) => {
                path.push("[]".into());
                for rv in r {
                    match l.iter().position(|lv| same_element(&key, lv, rv)) {
                        Some(i) => merge(&mut l[i], rv, ctx, path)?,
                        None => l.push(rv.clone()),
                    }
                }
                path.pop();
            }
        },
        (Value::String(l), Value::String(r)) if in_table(URL_FIELDS, ctx.kind, path) => {
            *l = GoUrl::parse(l).merged(&GoUrl::parse(r)).to_string();
        }
        (l, r) => {
            if !is_zero_scalar(r) || in_table(POINTER_SCALARS, ctx.kind, path) {
                *l = r.clone();
            }
        }
    }
    Ok(())
}

/// A URL split as Go's `net/url.Parse` splits it, for merging field by field.
#[derive(Default)]
struct GoUrl<'a> {
    scheme: &'a str,
    opaque: &'a str,
    user: Option<&'a str>,
    host: &'a str,
    path: &'a str,
    force_query: bool,
    query: &'a str,
    fragment: Option<&'a str>,
}

impl<'a> GoUrl<'a> {
    fn parse(s: &'a str) -> Self {
        let mut u = GoUrl::default();
        let (rest, fragment) = match s.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (s, None),
        };
        u.fragment = fragment.filter(|f| !f.is_empty());
        let mut rest = rest;
        // getScheme: a letter, then letters, digits, `+`, `-` or `.`, up to the first `:`.
        if let Some((scheme, after)) = rest.split_once(':')
            && scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            u.scheme = scheme;
            rest = after;
        }
        if let Some((r, q)) = rest.split_once('?') {
            u.force_query = q.is_empty();
            u.query = q;
            rest = r;
        }
        if !u.scheme.is_empty() && !rest.starts_with('/') {
            u.opaque = rest;
            return u;
        }
        if let Some(authority) = rest
            .strip_prefix("//")
            .filter(|a| !u.scheme.is_empty() || !a.starts_with('/'))
        {
            let (auth, path) = match authority.find('/') {
                Some(i) => authority.split_at(i),
                None => (authority, ""),
            };
            match auth.rsplit_once('@') {
                Some((user, host)) => {
                    u.user = Some(user);
                    u.host = host;
                }
                None => u.host = auth,
            }
            rest = path;
        }
        u.path = rest;
        u
    }

    /// merge.go on `url.URL`: a non-empty string field of the patch replaces the
    /// config's, a non-nil `User` pointer too, and the boolean `ForceQuery` always.
    fn merged(&self, r: &GoUrl<'a>) -> GoUrl<'a> {
        let pick = |l: &'a str, r: &'a str| if r.is_empty() { l } else { r };
        GoUrl {
            scheme: pick(self.scheme, r.scheme),
            opaque: pick(self.opaque, r.opaque),
            user: r.user.or(self.user),
            host: pick(self.host, r.host),
            path: pick(self.path, r.path),
            force_query: r.force_query,
            query: pick(self.query, r.query),
            fragment: r.fragment.or(self.fragment),
        }
    }
}

/// `url.URL.String()`.
impl fmt::Display for GoUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.scheme.is_empty() {
            write!(f, "{}:", self.scheme)?;
        }
        if !self.opaque.is_empty() {
            f.write_str(self.opaque)?;
        } else {
            if (!self.scheme.is_empty() || !self.host.is_empty() || self.user.is_some())
                && (!self.host.is_empty() || !self.path.is_empty() || self.user.is_some())
            {
                f.write_str("//")?;
                if let Some(user) = self.user {
                    write!(f, "{user}@")?;
                }
                f.write_str(self.host)?;
            }
            if !self.path.is_empty() && !self.path.starts_with('/') && !self.host.is_empty() {
                f.write_str("/")?;
            }
            f.write_str(self.path)?;
        }
        if self.force_query || !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        if let Some(fragment) = self.fragment {
            write!(f, "#{fragment}")?;
        }
        Ok(())
    }
}

/// An empty string or a 0: the zero values `merge.go` does not merge (booleans always
/// merge).
fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Whether the object at `parent` is keyed by the user (a map) rather than a struct.
fn user_keyed(kind: &str, parent: &[String]) -> bool {
    in_table(USER_MAPS, kind, parent)
        || (0..=parent.len()).any(|n| in_table(FREE_FORM, kind, &parent[..n]))
}

/// Whether a patch list element merges into this config element.
fn same_element(key: &Key, left: &Value, right: &Value) -> bool {
    match key {
        Key::Interface => {
            if let Some(name) = right.get("interface").and_then(Value::as_str)
                && !name.is_empty()
            {
                return left.get("interface").and_then(Value::as_str) == Some(name);
            }
            match (
                selector_of(right.get("deviceSelector")),
                selector_of(left.get("deviceSelector")),
            ) {
                (Some(r), Some(l)) => r == l,
                _ => false,
            }
        }
        Key::Number(k) | Key::String(k) => {
            let zero = match key {
                Key::Number(_) => Value::from(0),
                _ => Value::from(""),
            };
            let get = |v: &Value| match v.get(*k) {
                None | Some(Value::Null) => zero.clone(),
                Some(x) => x.clone(),
            };
            get(left) == get(right)
        }
    }
}

/// A device selector compared as Go compares the struct: unset and empty fields equal.
fn selector_of(v: Option<&Value>) -> Option<Map<String, Value>> {
    let m = v?.as_object()?;
    Some(
        m.iter()
            .filter(|(_, v)| !(v.is_null() || v.as_str() == Some("")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Delete (configloader/internal/decoder/selector.go).

enum Miss {
    Lookup,
    Complex,
    NonInteger,
}

impl Miss {
    fn text(&self) -> &'static str {
        match self {
            Miss::Lookup => "lookup failed",
            Miss::Complex => "searching for complex paths in slices is not supported",
            Miss::NonInteger => "searching for non-integer keys in slices is not supported",
        }
    }
}

fn apply_delete(docs: &mut Vec<Value>, d: &Delete) -> Result<()> {
    let Some(idx) = docs.iter().position(|doc| config_doc_id(doc) == d.id) else {
        return Err(Error::Config(format!(
            "patch delete: path '{}' in document '{}': the machine config has no such document; \
             check its apiVersion, kind and name, or drop the `$patch: delete`",
            d.path_str(),
            d.id
        )));
    };
    let result = match &d.target {
        Target::Document => {
            docs.remove(idx);
            return Ok(());
        }
        Target::Key => delete_key(&mut docs[idx], &d.path, &d.id.kind),
        Target::Element { key, value } => {
            delete_element(&mut docs[idx], &d.path, key, value.as_deref())
        }
    };
    result.map_err(|miss| {
        Error::Config(format!(
            "patch delete: path '{p}' in document '{id}': failed to delete path '{p}': {why}; \
             the config has nothing there to delete: fix the path (or the selecting key's value) or drop this `$patch: delete`",
            p = d.path_str(),
            id = d.id,
            why = miss.text()
        ))
    })
}

/// Walks to the value at `path`, every key present and not null.
fn walk<'a>(
    mut cur: &'a mut Value,
    path: &[String],
    in_list: Miss,
) -> std::result::Result<&'a mut Value, Miss> {
    for seg in path {
        cur = match cur {
            Value::Object(m) => match m.get_mut(seg) {
                Some(v) if !v.is_null() => v,
                _ => return Err(Miss::Lookup),
            },
            Value::Array(_) => {
                return Err(match in_list {
                    Miss::Complex => Miss::Complex,
                    _ => Miss::NonInteger,
                });
            }
            _ => return Err(Miss::Lookup),
        };
    }
    Ok(cur)
}

fn delete_key(doc: &mut Value, path: &[String], kind: &str) -> std::result::Result<(), Miss> {
    let (last, parents) = path.split_last().ok_or(Miss::Lookup)?;
    match walk(doc, parents, Miss::NonInteger)? {
        Value::Object(m) => {
            if m.remove(last).is_some() {
                return Ok(());
            }
            if user_keyed(kind, parents) {
                Err(Miss::Lookup)
            } else {
                // An unset struct field: Talos zeroes it, which changes nothing.
                Ok(())
            }
        }
        Value::Array(_) => Err(Miss::NonInteger),
        _ => Err(Miss::Lookup),
    }
}

fn delete_element(
    doc: &mut Value,
    path: &[String],
    key: &str,
    value: Option<&str>,
) -> std::result::Result<(), Miss> {
    let (_, parents) = path.split_last().ok_or(Miss::Lookup)?;
    match walk(doc, parents, Miss::Complex)? {
        Value::Array(a) => {
            let pos = a
                .iter()
                .position(|e| value.is_some() && e.get(key).and_then(Value::as_str) == value)
                .ok_or(Miss::Lookup)?;
            a.remove(pos);
            Ok(())
        }
        _ => Err(Miss::Lookup),
    }
}

// ---------------------------------------------------------------------------------------
// RFC 6902 (configpatcher/json6902.go).

fn json6902(docs: &mut [Value], ops: &[Value]) -> Result<()> {
    if docs.len() != 1 {
        return Err(Error::Config(format!(
            "JSON6902 patches are not supported for multi-document machine configuration \
             (this config has {} documents); write the patch as a strategic merge instead",
            docs.len()
        )));
    }
    ops.iter()
        .try_for_each(|op| json_patch_op(&mut docs[0], op))
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn json_patch_op(doc: &mut Value, op: &Value) -> Result<()> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
    let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
    let bad = |why: &str| {
        Error::Config(format!(
            "failure applying rfc6902 patches to talos machine config: {kind} {path}: {why}"
        ))
    };
    match kind {
        "test" => {
            let cur = doc.pointer(path).ok_or_else(|| bad("no such path"))?;
            if Some(cur) != op.get("value") {
                return Err(bad("test failed"));
            }
            Ok(())
        }
        "move" | "copy" => {
            let from = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("needs `from`"))?;
            if kind == "move" && path.starts_with(&format!("{from}/")) {
                return Err(bad("cannot move a value into itself"));
            }
            let value = doc
                .pointer(from)
                .cloned()
                .ok_or_else(|| bad(&format!("`from` {from} does not exist")))?;
            if kind == "move" {
                edit(doc, from, "remove", None).map_err(|why| bad(&why))?;
            }
            edit(doc, path, "add", Some(value)).map_err(|why| bad(&why))
        }
        "add" | "replace" | "remove" => {
            edit(doc, path, kind, op.get("value").cloned()).map_err(|why| bad(&why))
        }
        other => Err(bad(&format!("unsupported op `{other}`"))),
    }
}

fn edit(
    doc: &mut Value,
    path: &str,
    kind: &str,
    value: Option<Value>,
) -> std::result::Result<(), String> {
    let (parent_path, last) = path
        .rsplit_once('/')
        .ok_or_else(|| "path must start with /".to_string())?;
    let last = unescape(last);
    let parent = if parent_path.is_empty() {
        Some(&mut *doc)
    } else {
        doc.pointer_mut(parent_path)
    };
    let parent = parent.ok_or_else(|| "parent does not exist".to_string())?;
    let need = |v: Option<Value>| v.ok_or_else(|| "needs a value".to_string());
    match parent {
        Value::Object(m) => match kind {
            "add" => {
                m.insert(last, need(value)?);
            }
            "replace" => {
                let slot = m.get_mut(&last).ok_or("no such path")?;
                *slot = need(value)?;
            }
            _ => {
                m.remove(&last).ok_or("no such path")?;
            }
        },
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| "bad index".to_string())?
            };
            match kind {
                "add" if index <= a.len() => a.insert(index, need(value)?),
                "replace" if index < a.len() => a[index] = need(value)?,
                "remove" if index < a.len() => {
                    a.remove(index);
                }
                _ => return Err("index out of range".into()),
            }
        }
        _ => return Err("parent is not a map or list".into()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// YAML with its key order (serde_json's maps here sort their keys).

enum Yaml {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    /// As JSON, keys in any order.
    fn plain(&self) -> Value {
        match self {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Num(n) => Value::Number(n.clone()),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(s) => Value::Array(s.iter().map(Yaml::plain).collect()),
            Yaml::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.plain())).collect()),
        }
    }

    /// As JSON, with each `$patch: delete` reduced to what Talos reads of it: on a map,
    /// the marker alone; on a list element, the marker and the element's first key.
    fn normalized(&self, in_list: bool) -> Result<Value> {
        self.normalized_at(in_list, false)
    }

    /// At a document's root, a whole-document delete keeps the document's identity.
    fn normalized_at(&self, in_list: bool, root: bool) -> Result<Value> {
        match self {
            Yaml::Seq(s) => Ok(Value::Array(
                s.iter()
                    .map(|y| y.normalized(true))
                    .collect::<Result<_>>()?,
            )),
            Yaml::Map(m) => {
                let marker = m.iter().find(|(k, _)| k == "$patch");
                match marker {
                    Some((_, Yaml::Str(s))) if s == "delete" => {
                        let mut out = Map::new();
                        out.insert("$patch".into(), Value::from("delete"));
                        if in_list && let Some((k, v)) = m.iter().find(|(k, _)| k != "$patch") {
                            out.insert(k.clone(), v.plain());
                        }
                        if root {
                            for (k, v) in m {
                                if matches!(k.as_str(), "apiVersion" | "kind" | "name" | "version")
                                {
                                    out.insert(k.clone(), v.plain());
                                }
                            }
                        }
                        Ok(Value::Object(out))
                    }
                    Some((_, other)) => Err(Error::Config(format!(
                        "`$patch: {}` is not supported; Talos knows only `$patch: delete`",
                        other.plain()
                    ))),
                    None => Ok(Value::Object(
                        m.iter()
                            .map(|(k, v)| Ok((k.clone(), v.normalized(false)?)))
                            .collect::<Result<_>>()?,
                    )),
                }
            }
            other => Ok(other.plain()),
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Num(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Num(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Yaml, E> {
        Number::from_f64(v)
            .map(Yaml::Num)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Yaml, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Yaml::Seq(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Yaml, A::Error> {
        let mut out: Vec<(String, Yaml)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<Yaml, Yaml>()? {
            let key = match k {
                Yaml::Str(s) => s,
                Yaml::Num(n) => n.to_string(),
                Yaml::Bool(b) => b.to_string(),
                Yaml::Null => "null".into(),
                Yaml::Seq(_) | Yaml::Map(_) => {
                    return Err(de::Error::custom("a map key must be a scalar"));
                }
            };
            if out.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            out.push((key, v));
        }
        Ok(Yaml::Map(out))
    }
}
