//! Workloads whose pods start and then crash on a real node, so that
//! [`crate::MockCluster`] never calls them ready either.
//!
//! One case is modelled: CoreDNS forwarding to `/etc/resolv.conf` with the `loop`
//! plugin while its pods use the cluster's own resolver. kubelet writes a pod's
//! resolv.conf from its `dnsPolicy` (kubernetes `pkg/kubelet/network/dns/dns.go`,
//! `getPodDNSType`): `ClusterFirst`, the default, names the cluster DNS Service, which
//! is CoreDNS itself (a `hostNetwork` pod falls back to the node's resolver); `Default`
//! takes the node's. CoreDNS's `loop` plugin sends itself a probe at start and halts
//! with `plugin/loop: Loop (...) detected for zone "."` when the probe comes back
//! (coredns `plugin/loop/README.md`, `loop.go`); the container exits and kubelet
//! restarts it with back-off: CrashLoopBackOff, never Ready.

use serde_json::Value;

/// The message CoreDNS halts with, as `plugin/loop` logs it.
const LOOP: &str = "[FATAL] plugin/loop: Loop (127.0.0.1:53 -> :53) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO 4547991504243258144.3688648895315093531.\"";

/// Why the pods of a workload whose pod spec is `pod` crash-loop, if they do.
/// `config_map(name)` reads a ConfigMap of the workload's namespace.
pub(crate) fn crash_loop(
    pod: &Value,
    config_map: impl Fn(&str) -> Option<Value>,
) -> Option<String> {
    let own_resolver = match pod.get("dnsPolicy").and_then(Value::as_str) {
        None | Some("ClusterFirst") => {
            pod.get("hostNetwork").and_then(Value::as_bool) != Some(true)
        }
        Some("ClusterFirstWithHostNet") => true,
        Some(_) => false,
    };
    if !own_resolver {
        return None;
    }
    for container in pod
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(corefile) = corefile(pod, container, &config_map) else {
            continue;
        };
        if loops_through_resolv_conf(&corefile) {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Some(format!("container {name}: {LOOP}"));
        }
    }
    None
}

/// The Corefile a CoreDNS container reads: its `-conf` file, from the ConfigMap
/// volume mounted at that file's directory (default `Corefile` in the working
/// directory is not modelled).
fn corefile(
    pod: &Value,
    container: &Value,
    config_map: &impl Fn(&str) -> Option<Value>,
) -> Option<String> {
    let args: Vec<&str> = container
        .get("args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let conf = args
        .iter()
        .position(|a| *a == "-conf")
        .and_then(|i| args.get(i + 1))?;
    let (dir, file) = conf.rsplit_once('/')?;
    let mount = container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| {
            m.get("mountPath")
                .and_then(Value::as_str)
                .map(|p| p.trim_end_matches('/'))
                == Some(dir)
        })?;
    let volume_name = mount.get("name").and_then(Value::as_str)?;
    let volume = pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(volume_name))?;
    let source = volume.get("configMap")?;
    // `items` maps keys to paths; without it every key is a file of its own name.
    let key = match source.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .find(|i| i.get("path").and_then(Value::as_str) == Some(file))?
            .get("key")
            .and_then(Value::as_str)?,
        None => file,
    };
    let map = config_map(source.get("name").and_then(Value::as_str)?)?;
    map.pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether a server block of the Corefile loads `loop` and forwards to the
/// resolvers of `/etc/resolv.conf`.
fn loops_through_resolv_conf(corefile: &str) -> bool {
    server_blocks(corefile).iter().any(|block| {
        let directives: Vec<Vec<&str>> = block
            .iter()
            .map(|line| line.split_whitespace().collect())
            .collect();
        let has_loop = directives.iter().any(|d| d.first() == Some(&"loop"));
        let to_resolv_conf = directives.iter().any(|d| {
            d.first() == Some(&"forward") && d.iter().skip(2).any(|to| *to == "/etc/resolv.conf")
        });
        has_loop && to_resolv_conf
    })
}

/// The top-level directive lines of each server block (nested blocks' contents are
/// left out; their opening line stays), comments removed.
fn server_blocks(corefile: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0usize;
    for raw in corefile.lines() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if depth == 1 {
            let directive = line.trim_end_matches('{').trim();
            if !directive.is_empty() && directive != "}" {
                current.push(directive);
            }
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if depth == 0 && !current.is_empty() {
            blocks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(dns_policy: Option<&str>) -> Value {
        let mut p = json!({
            "containers": [{"name": "coredns", "args": ["-conf", "/etc/coredns/Corefile"],
                "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns"}]}],
            "volumes": [{"name": "config-volume", "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
        });
        if let Some(d) = dns_policy {
            p["dnsPolicy"] = json!(d);
        }
        p
    }

    fn maps(corefile: &str) -> impl Fn(&str) -> Option<Value> + '_ {
        move |name| (name == "coredns").then(|| json!({"data": {"Corefile": corefile}}))
    }

    const LOOPING: &str = ".:53 {\n    errors\n    forward . /etc/resolv.conf {\n        max_concurrent 1000\n    }\n    cache 30\n    loop\n}\n";

    #[test]
    fn the_cluster_resolver_with_loop_and_resolv_conf_crash_loops() {
        for policy in [None, Some("ClusterFirst"), Some("ClusterFirstWithHostNet")] {
            let why = crash_loop(&pod(policy), maps(LOOPING)).expect("crash-loops");
            assert!(why.contains("plugin/loop: Loop"), "{why}");
        }
    }

    #[test]
    fn the_nodes_resolver_or_no_loop_plugin_or_explicit_upstreams_run() {
        assert_eq!(crash_loop(&pod(Some("Default")), maps(LOOPING)), None);
        let mut host = pod(None);
        host["hostNetwork"] = json!(true);
        assert_eq!(crash_loop(&host, maps(LOOPING)), None);
        let no_loop = LOOPING.replace("    loop\n", "");
        assert_eq!(crash_loop(&pod(None), maps(&no_loop)), None);
        let upstream = LOOPING.replace("/etc/resolv.conf", "1.1.1.1");
        assert_eq!(crash_loop(&pod(None), maps(&upstream)), None);
        // `loop` inside another block's nested directive does not count.
        let nested = ".:53 {\n    forward . /etc/resolv.conf\n}\nts.net:53 {\n    loop\n    forward . 10.96.0.101\n}\n";
        assert_eq!(crash_loop(&pod(None), maps(nested)), None);
    }
}
