//! Kubernetes: server-side apply of manifest bundles, watch-based waits and kstatus behind the ClusterApi trait, with a stateful mock.
