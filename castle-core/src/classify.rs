//! Every service crate's error answers the executor's one question.

use std::time::Duration;

use crate::error::Classify;

macro_rules! classify {
    ($($t:ty),*) => {$(
        impl Classify for $t {
            fn is_transient(&self) -> bool {
                <$t>::is_transient(self)
            }
            fn retry_after(&self) -> Option<Duration> {
                <$t>::retry_after(self)
            }
        }
    )*};
}

classify!(
    castle_proxmox::Error,
    castle_talos::Error,
    castle_vault::Error,
    castle_kube::Error
);

impl Classify for castle_tailscale::Error {
    fn is_transient(&self) -> bool {
        castle_tailscale::Error::is_transient(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        castle_tailscale::Error::retry_after(self)
    }
    fn is_safe_to_retry(&self) -> bool {
        castle_tailscale::Error::is_safe_to_retry(self)
    }
}

impl Classify for crate::secrets::SecretError {
    fn is_transient(&self) -> bool {
        false
    }
}
