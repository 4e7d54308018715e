//! Follows the ELBv2 records with a store watch and wakes the data plane's controllers for the
//! objects each change touches: a target group's record → that group; a listener or one of its
//! rules → that listener; a load balancer (its attributes) → its listeners. A watch that ends
//! (history compacted, store restarted) is replaced by a fresh listing and a new watch, so no
//! change is lost; every object is put again after a listing.

use crate::plane::ControlPlane;
use crate::state::elbv2::{self, ListenerRecord, TargetGroupRecord};
use gantry_runtime::Handle;
use gantry_store::{KeyValue, WatchEvent};
use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

/// What the follower knows: store key → ARN for target groups and listeners, so that a delete
/// (which carries no value) still names its object.
#[derive(Default)]
struct Known {
    arns: BTreeMap<String, String>,
}

pub struct Queues {
    pub target_groups: Handle<String>,
    pub listeners: Handle<String>,
}

impl Known {
    fn note(&mut self, kv: &KeyValue, queues: &Queues) {
        let key = kv.key.as_str();
        if key.starts_with(elbv2::TARGET_GROUPS) {
            if let Ok(group) = serde_json::from_slice::<TargetGroupRecord>(&kv.value) {
                if let Some(old) = self.arns.insert(kv.key.clone(), group.arn.clone()) {
                    // Same name, new group: the old one is gone.
                    if old != group.arn {
                        queues.target_groups.enqueue(old);
                    }
                }
                queues.target_groups.enqueue(group.arn);
            }
        } else if key.starts_with(elbv2::LISTENERS) {
            if let Ok(listener) = serde_json::from_slice::<ListenerRecord>(&kv.value) {
                self.arns.insert(kv.key.clone(), listener.arn.clone());
                queues.listeners.enqueue(listener.arn);
            }
        } else {
            self.touch(key, queues);
        }
    }

    fn forget(&mut self, key: &str, queues: &Queues) {
        if let Some(arn) = self.arns.remove(key) {
            if key.starts_with(elbv2::TARGET_GROUPS) {
                queues.target_groups.enqueue(arn);
            } else {
                queues.listeners.enqueue(arn);
            }
        } else {
            self.touch(key, queues);
        }
    }

    /// A rule or a load balancer changed: wake the listeners it belongs to.
    fn touch(&self, key: &str, queues: &Queues) {
        let listener_prefix = if let Some(rest) = key.strip_prefix(elbv2::RULES) {
            // `<lb>/<listener id>/<rule id>` → `elbv2/listeners/<lb>/<listener id>`
            match rest.rsplit_once('/') {
                Some((lb_and_listener, _)) => format!("{}{lb_and_listener}", elbv2::LISTENERS),
                None => return,
            }
        } else if let Some(lb) = key.strip_prefix(elbv2::LOAD_BALANCERS) {
            elbv2::listeners_prefix(lb)
        } else {
            return;
        };
        for (_, arn) in self
            .arns
            .range(listener_prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&listener_prefix))
        {
            queues.listeners.enqueue(arn.clone());
        }
    }
}

/// Runs until the plane is dropped.
pub async fn follow(plane: Weak<ControlPlane>, queues: Queues) {
    let mut known = Known::default();
    loop {
        let Some(strong) = plane.upgrade() else {
            return;
        };
        let listing = strong.store.range(elbv2::ELBV2).await;
        let (kvs, revision) = match listing {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot list the load balancer records: {e}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Everything known before but not listed now was deleted meanwhile.
        let listed: std::collections::BTreeSet<&str> =
            kvs.iter().map(|kv| kv.key.as_str()).collect();
        let vanished: Vec<String> = known
            .arns
            .keys()
            .filter(|k| !listed.contains(k.as_str()))
            .cloned()
            .collect();
        for key in vanished {
            known.forget(&key, &queues);
        }
        // Listeners first, so that rules and load balancers find them.
        for kv in kvs.iter().filter(|kv| !kv.key.starts_with(elbv2::RULES)) {
            known.note(kv, &queues);
        }
        let watcher = strong.store.watch(elbv2::ELBV2, Some(revision)).await;
        drop(strong);
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the load balancer records: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(event) = watcher.recv().await {
            match event {
                WatchEvent::Put(kv) => known.note(&kv, &queues),
                WatchEvent::Delete { key, .. } => known.forget(&key, &queues),
            }
        }
        if plane.strong_count() == 0 {
            return;
        }
        tracing::debug!("the load balancer records' watch ended; listing again");
    }
}
