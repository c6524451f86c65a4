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
    castle_tailscale::Error,
    castle_kube::Error
);

impl Classify for crate::secrets::SecretError {
    fn is_transient(&self) -> bool {
        false
    }
}
