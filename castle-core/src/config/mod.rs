//! castle.toml: the model of one cluster, and its validation.
//!
//! Every error is located: `castle.toml:14:8: nodes[1].vmid: 421 is already used by
//! nodes[0] (cp-1)`. Syntax and type errors come from the TOML parser's spans;
//! semantic errors are located by walking a span-keeping parse of the same text along
//! the key path to the value.

mod locate;
mod model;
pub(crate) mod reference;
pub mod schema;
pub mod template;
pub(crate) mod validate;

use std::path::{Path, PathBuf};

pub use model::*;

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file, as it was named to [`Config::load`] or [`Config::from_str`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The key path, e.g. `nodes[1].vmid`; `(top level)` for the document itself.
    pub key: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

/// castle.toml could not be used; every issue found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The issues, in file order.
    pub issues: Vec<Issue>,
}

/// The text a config was parsed from, kept so that [`Config::validate`] can locate
/// what it finds. Its `Debug` names the file only: the text is long and says nothing
/// the parsed fields do not.
#[derive(Clone, Default)]
struct Source {
    origin: String,
    text: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.origin)
    }
}

impl Config {
    /// Reads, parses and validates a castle.toml. Relative paths in it are relative
    /// to its directory.
    ///
    /// # Errors
    /// [`ConfigError`] with every located issue; an unreadable file is one issue at 1:1.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Like [`Config::load`], but checks the file and not the machine it is read
    /// on: a well-formed secret ref whose file or variable is absent here is
    /// returned beside the config instead of failing it. This is `castle
    /// validate`, which a fresh `castle init` starter passes before any credential
    /// is in place, and which a CI job can run without them. Everything else that
    /// [`Config::load`] refuses is refused here too (a malformed or escaping ref, an
    /// unreadable secret file); `create`, `plan` and `doctor` use [`Config::load`].
    ///
    /// # Errors
    /// [`ConfigError`] with every located issue but the absent secrets.
    pub fn load_allowing_absent_secrets(path: &Path) -> Result<(Self, Vec<Issue>), ConfigError> {
        let config = Self::read(path)?;
        let absent = config.validate_allowing_absent_secrets()?;
        Ok((config, absent))
    }

    /// Reads and parses, without the semantic checks.
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let issue = |line, column, key, message| ConfigError {
            issues: vec![Issue {
                file: origin.clone(),
                line,
                column,
                key,
                message,
            }],
        };
        let bytes = std::fs::read(path).map_err(|e| {
            issue(
                1,
                1,
                locate::render(&[]),
                format!(
                    "cannot read: {e}; pass --config PATH, or run `castle init DIR` for a new cluster"
                ),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let shown = String::from_utf8_lossy(e.as_bytes());
            let (line, column) = locate::line_col(&shown, offset);
            issue(
                line,
                column,
                locate::key_near(&shown, offset),
                format!(
                    "byte {offset} is not UTF-8 (0x{:02x}): castle.toml must be UTF-8 text; re-save it as UTF-8",
                    e.as_bytes().get(offset).copied().unwrap_or_default()
                ),
            )
        })?;
        Self::parse(&text, origin, dir_of(path))
    }

    /// Parses and validates castle.toml text. `origin` names it in errors;
    /// `base_dir` anchors its relative paths (the cluster directory).
    ///
    /// # Errors
    /// [`ConfigError`] with every located issue.
    pub fn from_str(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse(text, origin.to_string(), base_dir.to_path_buf())?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str, origin: String, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = locate::line_col(text, offset);
            let key = match toml_edit::Document::parse(text) {
                Ok(doc) => {
                    let mut path = locate::path_at(&doc, offset).unwrap_or_default();
                    // A missing field is reported at its table; the key to add is the field.
                    if let Some(field) = e
                        .message()
                        .strip_prefix("missing field `")
                        .and_then(|rest| rest.split('`').next())
                    {
                        path.push(locate::Seg::Key(field.to_string()));
                    }
                    locate::render(&path)
                }
                Err(_) => locate::key_near(text, offset),
            };
            ConfigError {
                issues: vec![Issue {
                    file: origin.clone(),
                    line,
                    column,
                    key,
                    message: e.message().trim().to_string(),
                }],
            }
        })?;
        config.base_dir = base_dir;
        config.source = Source {
            origin,
            text: text.to_string(),
        };
        Ok(config)
    }

    /// Checks everything the types cannot: uniqueness, ranges, addresses, URLs, secret
    /// ref shapes, cross references. Collects every issue rather than stopping at the
    /// first. [`Config::load`] and [`Config::from_str`] already call it; call it again
    /// after changing a config in code.
    ///
    /// # Errors
    /// [`ConfigError`] with every issue, in file order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checked = validate::check(self);
        let mut found = checked.found;
        found.extend(checked.absent);
        match self.locate(found) {
            issues if issues.is_empty() => Ok(()),
            issues => Err(ConfigError { issues }),
        }
    }

    /// [`Config::validate`] less the machine: a secret ref whose file or variable
    /// is absent here is returned, located, rather than failing.
    ///
    /// # Errors
    /// [`ConfigError`] with every other issue, in file order.
    pub fn validate_allowing_absent_secrets(&self) -> Result<Vec<Issue>, ConfigError> {
        let checked = validate::check(self);
        match self.locate(checked.found) {
            issues if issues.is_empty() => Ok(self.locate(checked.absent)),
            issues => Err(ConfigError { issues }),
        }
    }

    /// Each finding at its line and column, in file order.
    fn locate(&self, found: Vec<(Vec<locate::Seg>, String)>) -> Vec<Issue> {
        if found.is_empty() {
            return Vec::new();
        }
        let doc = toml_edit::Document::parse(self.source.text.as_str()).ok();
        let mut issues: Vec<Issue> = found
            .into_iter()
            .map(|(path, message)| {
                let offset = doc.as_ref().map_or(0, |d| locate::value_offset(d, &path));
                let (line, column) = locate::line_col(&self.source.text, offset);
                Issue {
                    file: self.source.origin.clone(),
                    line,
                    column,
                    key: locate::render(&path),
                    message,
                }
            })
            .collect();
        issues.sort_by_key(|i| (i.line, i.column));
        issues
    }

    /// The cluster directory: where castle.toml lives.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A path from the config, made absolute against the cluster directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.base_dir.join(relative)
    }

    /// The secrets resolver this config describes.
    pub fn secrets(&self) -> crate::secrets::Secrets {
        crate::secrets::Secrets::new(self.path(&self.secrets.dir), self.secrets.env_fallback)
    }

    /// The tailnet hostname of a node.
    pub fn hostname(&self, node: &str) -> String {
        let pattern = self
            .tailscale
            .as_ref()
            .map_or(model::DEFAULT_HOSTNAME_PATTERN, |t| {
                t.hostname_pattern.as_str()
            });
        pattern
            .replace("{cluster}", &self.cluster.name)
            .replace("{node}", node)
    }

    /// The nodes the cluster's own components wait for before they install: every
    /// control plane, and one worker to run their pods when there are workers
    /// (control planes are tainted against ordinary pods). Every node Ready is the
    /// gate of `verify`, not of them.
    pub fn nodes_for_components(&self) -> usize {
        let control_planes = self.control_planes().count();
        control_planes + usize::from(self.nodes.len() > control_planes)
    }

    /// Control-plane nodes, in config order.
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Controlplane)
    }

    /// The issuer the API server signs service-account tokens with: the first of
    /// `cluster.service_account_issuers`, else the endpoint (as Talos sets it).
    pub fn token_issuer(&self) -> &str {
        self.cluster
            .service_account_issuers
            .first()
            .map_or(self.cluster.endpoint.as_str(), String::as_str)
    }

    /// The components, by name (`eso`, `metallb`, `longhorn`, `flux`), enabled or not.
    pub fn all_components(&self) -> [(&'static str, Option<&Component>); 4] {
        let c = &self.components;
        [
            ("eso", c.eso.as_ref()),
            ("metallb", c.metallb.as_ref()),
            ("longhorn", c.longhorn.as_ref()),
            ("flux", c.flux.as_ref()),
        ]
    }

    /// An enabled component, by name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.all_components()
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, c)| c)
            .filter(|c| c.enabled)
    }

    /// The Helm release an enabled chart component becomes: its chart, its
    /// HelmRelease's name and namespace.
    pub fn release(&self, name: &str) -> Option<Release> {
        let comp = self.component(name)?;
        let chart = comp.chart.clone()?;
        let (release, namespace) = match name {
            "eso" => ("external-secrets", "external-secrets"),
            "metallb" => ("metallb", "metallb-system"),
            "longhorn" => ("longhorn", "longhorn-system"),
            other => (other, "flux-system"),
        };
        Some(Release {
            name: chart.release.clone().unwrap_or_else(|| release.into()),
            namespace: chart.namespace.clone().unwrap_or_else(|| namespace.into()),
            values: comp.values.clone().unwrap_or_default(),
            chart,
        })
    }

    /// The pinned manifests to download before anything is created: (component,
    /// url, sha256) of every enabled component with a `url`.
    pub fn downloads(&self) -> Vec<(&'static str, &str, &str)> {
        self.all_components()
            .into_iter()
            .filter_map(|(name, c)| {
                let c = c.filter(|c| c.enabled)?;
                Some((name, c.url.as_deref()?, c.sha256.as_deref()?))
            })
            .collect()
    }

    /// Where pinned downloads are kept: `<cluster dir>/.castle/downloads`.
    pub fn downloads_dir(&self) -> PathBuf {
        crate::journal::Journal::state_dir(self.base_dir()).join("downloads")
    }

    /// The lab's chart catalogue (`[lab] charts`), read: each entry's manifests
    /// (paths relative to the catalogue) and schema. A chart does not render the
    /// namespace it is installed into, so Namespaces in the manifests are left out.
    ///
    /// # Errors
    /// Which file cannot be read or parsed, and why.
    pub fn lab_charts(&self) -> Result<Vec<LabChart>, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            repo: String,
            name: String,
            version: String,
            manifests: Vec<String>,
            #[serde(default)]
            values_schema: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Catalogue {
            #[serde(default)]
            chart: Vec<Entry>,
        }
        let Some(file) = self.lab.as_ref().and_then(|l| l.charts.as_ref()) else {
            return Ok(Vec::new());
        };
        let path = self.path(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let catalogue: Catalogue =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut charts = Vec::new();
        for c in catalogue.chart {
            let mut objects = Vec::new();
            for m in &c.manifests {
                let bundle =
                    castle_kube::Bundle::load(&dir.join(m), None).map_err(|e| e.to_string())?;
                objects.extend(bundle.objects.into_iter().filter(|o| {
                    o.get("kind").and_then(serde_json::Value::as_str) != Some("Namespace")
                }));
            }
            let values_schema = c
                .values_schema
                .map(|s| {
                    let p = dir.join(&s);
                    std::fs::read_to_string(&p)
                        .map_err(|e| format!("reading {}: {e}", p.display()))
                        .and_then(|t| {
                            serde_json::from_str(&t).map_err(|e| format!("{}: {e}", p.display()))
                        })
                })
                .transpose()?;
            charts.push(LabChart {
                repo: c.repo,
                name: c.name,
                version: c.version,
                objects,
                values_schema,
            });
        }
        Ok(charts)
    }

    /// The enabled ESO's ClusterSecretStore, when one is configured.
    pub fn secret_store(&self) -> Option<&SecretStore> {
        self.components
            .eso
            .as_ref()
            .filter(|e| e.enabled)
            .and_then(|e| e.store.as_ref())
    }

    /// The Vault JWT role a store logs in with, when both the mount and the role
    /// are declared in `[vault.spec]`.
    pub fn store_role(&self, store: &SecretStore) -> Option<&castle_vault::JwtRole> {
        self.vault
            .as_ref()?
            .spec
            .jwt
            .iter()
            .find(|j| j.path == store.jwt_path)?
            .roles
            .get(&store.role)
    }

    /// The audiences of the token ESO requests for a store: the configured ones,
    /// else the role's `bound_audiences`.
    pub fn store_audiences(&self, store: &SecretStore) -> Vec<String> {
        if !store.audiences.is_empty() {
            return store.audiences.clone();
        }
        self.store_role(store)
            .map(|r| r.bound_audiences.clone())
            .unwrap_or_default()
    }
}

/// The directory relative paths in a config at `path` are anchored to.
fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
