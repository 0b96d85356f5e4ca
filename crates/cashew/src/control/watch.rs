//! `--watch-config`: the configuration file is read once a second; when its content
//! differs from the generation in force and has stayed the same for a second (an
//! editor's or a ConfigMap's update is complete), it is reloaded as by SIGHUP. The
//! content is compared, not times, so a Kubernetes ConfigMap's symlink swap
//! (`..data`) is seen like any edit. A content that failed to load is not tried
//! again until it changes.

use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Supervisor;
use crate::log::NOTICE;
use crate::log_at;

pub(crate) async fn watch_config(supervisor: Rc<Supervisor>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen: Option<String> = None;
    let mut failed: Option<String> = None;
    loop {
        tick.tick().await;
        let Ok(text) = std::fs::read(&supervisor.options().conf_file) else {
            continue;
        };
        let digest = Sha256::digest(&text);
        let checksum: String = std::iter::once("sha256:".to_string())
            .chain(digest.iter().map(|b| format!("{b:02x}")))
            .collect();
        let stable = seen.as_deref() == Some(checksum.as_str());
        seen = Some(checksum.clone());
        let in_force = supervisor.generation().source.checksum == checksum;
        if !stable || in_force || failed.as_deref() == Some(checksum.as_str()) {
            continue;
        }
        log_at!(
            NOTICE,
            "the configuration file changed ({checksum}): reloading"
        );
        match supervisor.reload().await {
            Ok(_) => failed = None,
            Err(_) => failed = Some(checksum),
        }
    }
}
