//! Tailscale API v2: OAuth, auth keys and devices behind the TailscaleApi trait, with a stateful mock.
