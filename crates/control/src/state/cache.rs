//! One in-memory copy of the records readers ask about, fed by the store's watch and indexed
//! the ways they ask: tasks by cluster, by container instance and by service; instances
//! and services by cluster (clusters themselves are few and read from the store).
//!
//! Why: without it, every task report made each agent channel and the service scheduler re-list
//! and re-decode a whole cluster. With it, a store change is decoded once, here, and costs
//! O(log n) index updates; readers get `Arc`s of decoded records, and controllers are told
//! exactly which record changed ([`Change`]) instead of re-reading to find out.
//!
//! Consistency: the cache applies the store's changes one whole transaction (revision) at a
//! time, so it never shows half of a transaction, and [`Cache::applied`] says which revision
//! it shows. A writer that waits for its write's revision (the [`super::StateStore`] wrapper
//! does, on every successful transaction) then reads its own write here. If the watch ends
//! (the store dropped history we had not read), the cache re-lists everything and tells every
//! listener with [`Change::Resynced`].

use super::iam::IamIndex;
use super::keys;
use super::records::{snapshot_of, TaskRecord};
use super::service_record::ServiceRecord;
use gantry_model::arn::{cluster_of_arn, last_segment};
use gantry_model::status;
use gantry_model::types::ContainerInstance;
use gantry_scheduler::{Placement, PlacementIndex, PlacementRequest};
use gantry_store::{KeyValue, KvStore, WatchBatch, WatchEvent};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// A decoded record and the store revision of its last write (what compare-and-swap guards
/// on).
#[derive(Debug)]
pub struct Entry<T> {
    pub value: T,
    pub mod_revision: i64,
}

pub type TaskEntry = Arc<Entry<TaskRecord>>;
pub type InstanceEntry = Arc<Entry<ContainerInstance>>;
pub type ServiceEntry = Arc<Entry<ServiceRecord>>;

/// What one store change did to a cached record; `old` and `new` are `None` for a create and
/// a delete.
#[derive(Debug, Clone)]
pub enum Change {
    Task {
        cluster: String,
        old: Option<TaskEntry>,
        new: Option<TaskEntry>,
    },
    Instance {
        cluster: String,
        old: Option<InstanceEntry>,
        new: Option<InstanceEntry>,
    },
    Service {
        cluster: String,
        name: String,
        old: Option<ServiceEntry>,
        new: Option<ServiceEntry>,
    },
    /// The cache was rebuilt from a full listing: anything may have changed.
    Resynced,
}

/// A listener runs inside the cache's apply loop, after the change is visible to readers: it
/// must only note the change (enqueue a key) and return, never wait.
pub type Listener = Box<dyn Fn(&Change) + Send + Sync>;

#[derive(Default)]
struct Indexes {
    /// cluster → task id → task.
    tasks: HashMap<String, BTreeMap<String, TaskEntry>>,
    /// container instance ARN → task id → task (every task placed there, STOPPED included).
    tasks_by_instance: HashMap<String, BTreeMap<String, TaskEntry>>,
    /// (cluster, service name) → task id → task, from the task's `service:<name>` group.
    tasks_by_service: HashMap<(String, String), BTreeMap<String, TaskEntry>>,
    /// cluster → instance id → instance.
    instances: HashMap<String, BTreeMap<String, InstanceEntry>>,
    /// cluster → service name → service.
    services: HashMap<String, BTreeMap<String, ServiceEntry>>,
    /// Users, roles, policies and access keys, with documents parsed.
    iam: IamIndex,
    /// awsvpc subnet id → the IPv4 addresses of its tasks that are not STOPPED.
    addresses: HashMap<String, BTreeSet<u32>>,
}

/// The subnet and address an awsvpc task holds while it is not STOPPED.
fn held_address(t: &TaskRecord) -> Option<(&str, u32)> {
    let ni = t.internal.network_interface.as_ref()?;
    if !t.holds_resources() {
        return None;
    }
    let ip: std::net::Ipv4Addr = ni.private_ipv4_address.parse().ok()?;
    Some((ni.subnet_id.as_str(), u32::from(ip)))
}

pub struct Cache {
    indexes: RwLock<Indexes>,
    /// Per cluster, the scheduler's placement index over its instances (built on the first
    /// placement, then kept current by every batch that touches an instance or its tasks).
    /// Locked after `indexes`, never before.
    placement: Mutex<HashMap<String, PlacementIndex>>,
    applied: watch::Sender<i64>,
    listeners: RwLock<Vec<Listener>>,
}

/// The service a task belongs to, from its `service:<name>` group.
pub fn service_of(task: &TaskRecord) -> Option<&str> {
    task.task.group.as_deref()?.strip_prefix("service:")
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<Arc<Entry<T>>> {
    match serde_json::from_slice(&kv.value) {
        Ok(value) => Some(Arc::new(Entry {
            value,
            mod_revision: kv.mod_revision,
        })),
        Err(e) => {
            tracing::error!(key = %kv.key, "corrupt record left out of the state cache: {e}");
            None
        }
    }
}

fn index_insert<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, BTreeMap<String, Arc<T>>>,
    outer: K,
    id: &str,
    value: Arc<T>,
) {
    map.entry(outer).or_default().insert(id.to_string(), value);
}

fn index_remove<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, BTreeMap<String, Arc<T>>>,
    outer: &K,
    id: &str,
) {
    if let Some(inner) = map.get_mut(outer) {
        inner.remove(id);
        if inner.is_empty() {
            map.remove(outer);
        }
    }
}

/// Puts (or, with `None`, removes) the record `id` of `cluster`; returns what was there.
fn index_set<T>(
    map: &mut HashMap<String, BTreeMap<String, Arc<T>>>,
    cluster: &str,
    id: &str,
    new: Option<Arc<T>>,
) -> Option<Arc<T>> {
    match new {
        Some(n) => map
            .entry(cluster.to_string())
            .or_default()
            .insert(id.to_string(), n),
        None => {
            let old = map.get(cluster).and_then(|m| m.get(id)).cloned();
            index_remove(map, &cluster.to_string(), id);
            old
        }
    }
}

impl Indexes {
    /// Applies one store change and says what it did to a cached record (nothing for keys
    /// the cache does not hold).
    fn apply(&mut self, event: &WatchEvent) -> Option<Change> {
        if self.iam.apply(event) {
            return None;
        }
        let key = event.key();
        let put = match event {
            WatchEvent::Put(kv) => Some(kv),
            WatchEvent::Delete { .. } => None,
        };
        if let Some((cluster, id)) = keys::split(key, keys::TASKS) {
            let new: Option<TaskEntry> = put.and_then(decode);
            let old = self.set_task(cluster, id, new.clone());
            return Some(Change::Task {
                cluster: cluster.to_string(),
                old,
                new,
            });
        }
        if let Some((cluster, id)) = keys::split(key, keys::INSTANCES) {
            let new: Option<InstanceEntry> = put.and_then(decode);
            let old = index_set(&mut self.instances, cluster, id, new.clone());
            return Some(Change::Instance {
                cluster: cluster.to_string(),
                old,
                new,
            });
        }
        if let Some((cluster, name)) = keys::split(key, keys::SERVICES) {
            let new: Option<ServiceEntry> = put.and_then(decode);
            let old = index_set(&mut self.services, cluster, name, new.clone());
            return Some(Change::Service {
                cluster: cluster.to_string(),
                name: name.to_string(),
                old,
                new,
            });
        }
        None
    }

    /// Replaces (or removes) one task in every index; returns what was there.
    fn set_task(&mut self, cluster: &str, id: &str, new: Option<TaskEntry>) -> Option<TaskEntry> {
        let cluster_key = cluster.to_string();
        let old = index_set(&mut self.tasks, cluster, id, new.clone());
        if let Some(o) = &old {
            if let Some((subnet, ip)) = held_address(&o.value) {
                if let Some(set) = self.addresses.get_mut(subnet) {
                    set.remove(&ip);
                }
            }
            if let Some(arn) = o.value.host_arn() {
                index_remove(&mut self.tasks_by_instance, &arn.to_string(), id);
            }
            if let Some(svc) = service_of(&o.value) {
                index_remove(
                    &mut self.tasks_by_service,
                    &(cluster_key.clone(), svc.to_string()),
                    id,
                );
            }
        }
        if let Some(n) = &new {
            if let Some((subnet, ip)) = held_address(&n.value) {
                self.addresses
                    .entry(subnet.to_string())
                    .or_default()
                    .insert(ip);
            }
            if let Some(arn) = n.value.host_arn() {
                index_insert(&mut self.tasks_by_instance, arn.to_string(), id, n.clone());
            }
            if let Some(svc) = service_of(&n.value) {
                index_insert(
                    &mut self.tasks_by_service,
                    (cluster_key, svc.to_string()),
                    id,
                    n.clone(),
                );
            }
        }
        old
    }

    /// What the scheduler sees of one instance, unless it is gone or INACTIVE.
    fn placeable_snapshot(
        &self,
        cluster: &str,
        arn: &str,
    ) -> Option<gantry_scheduler::InstanceSnapshot> {
        let ci = self.instances.get(cluster)?.get(last_segment(arn))?;
        if ci.value.status.as_deref() == Some(status::INACTIVE) {
            return None;
        }
        let on_it = self.tasks_by_instance.get(arn);
        Some(snapshot_of(
            &ci.value,
            on_it.into_iter().flat_map(|m| m.values()).map(|t| &t.value),
        ))
    }

    /// Every placeable instance of the cluster, in ARN order.
    fn placeable_snapshots(&self, cluster: &str) -> Vec<gantry_scheduler::InstanceSnapshot> {
        let mut arns: Vec<&str> = self
            .instances
            .get(cluster)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|e| e.value.container_instance_arn.as_deref())
            .collect();
        arns.sort_unstable();
        arns.into_iter()
            .filter_map(|arn| self.placeable_snapshot(cluster, arn))
            .collect()
    }

    fn from_listing(kvs: &[KeyValue]) -> Indexes {
        let mut ix = Indexes::default();
        for kv in kvs {
            ix.apply(&WatchEvent::Put(kv.clone()));
        }
        ix
    }
}

impl Cache {
    /// Lists the store, then follows its watch from the listing's revision. Returns once the
    /// listing is loaded, so the first reader already sees the whole state.
    pub async fn start(store: Arc<dyn KvStore>) -> Result<Arc<Cache>, gantry_store::StoreError> {
        let (kvs, revision) = store.range("").await?;
        let watcher = store.watch_batches("", Some(revision)).await?;
        let (applied, _) = watch::channel(revision);
        let cache = Arc::new(Cache {
            indexes: RwLock::new(Indexes::from_listing(&kvs)),
            placement: Mutex::new(HashMap::new()),
            applied,
            listeners: RwLock::new(Vec::new()),
        });
        tokio::spawn(follow(Arc::downgrade(&cache), store, watcher));
        Ok(cache)
    }

    /// Registers a listener for every later change (see [`Listener`]).
    pub fn listen(&self, listener: Listener) {
        if let Ok(mut l) = self.listeners.write() {
            l.push(listener);
        }
    }

    /// The store revision the cache shows.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until the cache shows `revision` (or later), at most `limit`; returns whether it
    /// does.
    pub async fn wait_for(&self, revision: i64, limit: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|applied| *applied >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Reads the IAM index (users, roles, policies, access keys) under the cache's read lock;
    /// `f` must only look and copy out (`Arc`s are cheap), never wait.
    pub fn iam<R>(&self, f: impl FnOnce(&IamIndex) -> R) -> R {
        f(&self.read().iam)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        // A listener that panicked cannot poison these locks (listeners run unlocked), and
        // index updates do not panic; recover the guard rather than fail every reader.
        self.indexes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_batch(&self, batch: &WatchBatch) -> Vec<Change> {
        let mut ix = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        let changes: Vec<Change> = batch.events.iter().filter_map(|e| ix.apply(e)).collect();
        self.refresh_placement(&ix, &changes);
        changes
    }

    fn replace(&self, kvs: &[KeyValue]) {
        let fresh = Indexes::from_listing(kvs);
        let mut ix = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        *ix = fresh;
        self.placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Re-snapshots, in the placement index of their cluster, the instances a batch touched:
    /// an instance that changed, or one a task was placed on, left or stopped on. O(tasks on
    /// those instances), whatever the cluster's size.
    fn refresh_placement(&self, ix: &Indexes, changes: &[Change]) {
        let mut placement = self.placement.lock().unwrap_or_else(|e| e.into_inner());
        if placement.is_empty() {
            return;
        }
        let mut touched: Vec<(&str, &str)> = Vec::new();
        for change in changes {
            match change {
                Change::Task { cluster, old, new } => {
                    for t in [old, new].into_iter().flatten() {
                        // A Fargate task's host is in the pool, not in the task's cluster.
                        if let Some(arn) = t.value.host_arn() {
                            touched.push((cluster_of_arn(arn).unwrap_or(cluster), arn));
                        }
                    }
                }
                Change::Instance { cluster, old, new } => {
                    for i in [old, new].into_iter().flatten() {
                        if let Some(arn) = i.value.container_instance_arn.as_deref() {
                            touched.push((cluster, arn));
                        }
                    }
                }
                _ => {}
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (cluster, arn) in touched {
            let Some(index) = placement.get_mut(cluster) else {
                continue;
            };
            match ix.placeable_snapshot(cluster, arn) {
                Some(snapshot) => index.upsert(snapshot),
                None => {
                    index.remove(arn);
                }
            }
        }
    }

    /// Places `request` in `cluster` with the cluster's placement index, and returns with the
    /// decision the chosen instances as the decision saw them (their mod revisions guard the
    /// commit: the decision and the revisions come from the same cache state). `None` when
    /// the cluster has no instance that is not INACTIVE.
    pub fn place(
        &self,
        cluster: &str,
        request: &PlacementRequest,
    ) -> Option<(Placement, Vec<InstanceEntry>)> {
        let ix = self.read();
        let mut placement = self.placement.lock().unwrap_or_else(|e| e.into_inner());
        let index = placement
            .entry(cluster.to_string())
            .or_insert_with(|| PlacementIndex::new(ix.placeable_snapshots(cluster)));
        if index.is_empty() {
            return None;
        }
        let decision = index.place(request);
        let mut chosen: Vec<InstanceEntry> = Vec::new();
        for arn in &decision.placements {
            if chosen
                .iter()
                .any(|e| e.value.container_instance_arn.as_deref() == Some(arn.as_str()))
            {
                continue;
            }
            if let Some(e) = ix
                .instances
                .get(cluster)
                .and_then(|m| m.get(last_segment(arn)))
            {
                chosen.push(e.clone());
            }
        }
        Some((decision, chosen))
    }

    fn publish(&self, revision: i64, changes: &[Change]) {
        self.applied.send_if_modified(|applied| {
            let newer = revision > *applied;
            *applied = (*applied).max(revision);
            newer
        });
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            for listener in listeners.iter() {
                // A listener that panics must not stop the apply loop: every writer waits for
                // it (read-your-writes) and every reader would see stale state. The change is
                // lost to that listener only; the controllers' resyncs repair it.
                let caught =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(change)));
                if caught.is_err() {
                    tracing::error!(
                        revision,
                        "a state-cache listener panicked; it missed a change"
                    );
                }
            }
        }
    }

    // ---- readers ----

    /// Every task of a cluster (STOPPED ones included), by id.
    pub fn tasks_of_cluster(&self, cluster: &str) -> Vec<TaskEntry> {
        self.read()
            .tasks
            .get(cluster)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn task(&self, cluster: &str, id: &str) -> Option<TaskEntry> {
        self.read().tasks.get(cluster)?.get(id).cloned()
    }

    /// The IPv4 addresses held in an awsvpc subnet by tasks that are not STOPPED.
    pub fn addresses_in_use(&self, subnet_id: &str) -> BTreeSet<u32> {
        self.read()
            .addresses
            .get(subnet_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every task placed on a container instance (STOPPED ones included).
    pub fn tasks_on_instance(&self, instance_arn: &str) -> Vec<TaskEntry> {
        self.read()
            .tasks_by_instance
            .get(instance_arn)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every task of a service (its `service:<name>` group), STOPPED ones included.
    pub fn tasks_of_service(&self, cluster: &str, service: &str) -> Vec<TaskEntry> {
        self.read()
            .tasks_by_service
            .get(&(cluster.to_string(), service.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn instances_of_cluster(&self, cluster: &str) -> Vec<InstanceEntry> {
        self.read()
            .instances
            .get(cluster)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn instance(&self, cluster: &str, id: &str) -> Option<InstanceEntry> {
        self.read().instances.get(cluster)?.get(id).cloned()
    }

    /// Every instance of every cluster, with its cluster.
    pub fn all_instances(&self) -> Vec<(String, InstanceEntry)> {
        self.read()
            .instances
            .iter()
            .flat_map(|(c, m)| m.values().map(move |i| (c.clone(), i.clone())))
            .collect()
    }

    pub fn services_of_cluster(&self, cluster: &str) -> Vec<ServiceEntry> {
        self.read()
            .services
            .get(cluster)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many services of the cluster have `status` (ACTIVE, DRAINING, INACTIVE).
    pub fn services_in_status(&self, cluster: &str, status: &str) -> usize {
        self.read()
            .services
            .get(cluster)
            .map(|m| {
                m.values()
                    .filter(|s| s.value.service.status == status)
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn service(&self, cluster: &str, name: &str) -> Option<ServiceEntry> {
        self.read().services.get(cluster)?.get(name).cloned()
    }

    /// Every service of every cluster, as (cluster, name).
    pub fn service_keys(&self) -> Vec<(String, String)> {
        self.read()
            .services
            .iter()
            .flat_map(|(c, m)| m.keys().map(move |n| (c.clone(), n.clone())))
            .collect()
    }

    /// How many tasks the cache holds in all (for metrics and benchmarks).
    pub fn task_count(&self) -> usize {
        self.read().tasks.values().map(|m| m.len()).sum()
    }
}

/// The apply loop: one batch (revision) at a time; when the watch ends, re-list and resume.
async fn follow(
    cache: std::sync::Weak<Cache>,
    store: Arc<dyn KvStore>,
    mut watcher: gantry_store::BatchWatcher,
) {
    loop {
        match watcher.recv().await {
            Some(batch) => {
                let Some(cache) = cache.upgrade() else { return };
                let changes = cache.apply_batch(&batch);
                cache.publish(batch.revision, &changes);
            }
            None => {
                // The store could not replay what we missed: start over from a listing.
                let mut delay = Duration::from_millis(50);
                loop {
                    if cache.strong_count() == 0 {
                        return;
                    }
                    match relist(&store).await {
                        Ok((kvs, revision, next)) => {
                            let Some(cache) = cache.upgrade() else { return };
                            cache.replace(&kvs);
                            cache.publish(revision, &[Change::Resynced]);
                            tracing::info!(revision, "state cache re-listed after its watch ended");
                            watcher = next;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("state cache cannot re-list the store: {e}");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}

async fn relist(
    store: &Arc<dyn KvStore>,
) -> Result<(Vec<KeyValue>, i64, gantry_store::BatchWatcher), gantry_store::StoreError> {
    let (kvs, revision) = store.range("").await?;
    let watcher = store.watch_batches("", Some(revision)).await?;
    Ok((kvs, revision, watcher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::types::Task;
    use gantry_store::{SqliteStore, Txn, TxnOp};

    fn task_json(instance: &str, group: &str, status: &str) -> Vec<u8> {
        let rec = TaskRecord {
            task: Task {
                task_arn: Some("arn:aws:ecs:r:1:task/c/t".into()),
                container_instance_arn: Some(instance.into()),
                group: Some(group.into()),
                last_status: Some(status.into()),
                ..Default::default()
            },
            internal: Default::default(),
        };
        serde_json::to_vec(&rec).expect("encode")
    }

    async fn put(store: &SqliteStore, key: &str, value: Vec<u8>) -> i64 {
        store
            .txn(Txn {
                success: vec![TxnOp::Put {
                    key: key.into(),
                    value,
                }],
                ..Txn::default()
            })
            .await
            .expect("txn")
            .revision
    }

    #[tokio::test]
    async fn indexes_follow_moves_and_deletes() {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        put(
            &store,
            "tasks/c/t1",
            task_json("i-1", "service:web", "RUNNING"),
        )
        .await;
        let cache = Cache::start(store.clone()).await.expect("cache");
        assert_eq!(
            cache.tasks_on_instance("i-1").len(),
            1,
            "loaded from the listing"
        );

        let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = changes.clone();
        cache.listen(Box::new(move |c| {
            if let Change::Task { old, new, .. } = c {
                seen.lock()
                    .expect("lock")
                    .push((old.is_some(), new.is_some()));
            }
        }));

        // The task moves to another instance and another group.
        let rev = put(
            &store,
            "tasks/c/t1",
            task_json("i-2", "family:x", "RUNNING"),
        )
        .await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        assert!(cache.tasks_on_instance("i-1").is_empty());
        assert_eq!(cache.tasks_on_instance("i-2").len(), 1);
        assert!(cache.tasks_of_service("c", "web").is_empty());
        assert_eq!(cache.tasks_of_cluster("c").len(), 1);

        let rev = store
            .txn(Txn {
                success: vec![TxnOp::Delete {
                    key: "tasks/c/t1".into(),
                }],
                ..Txn::default()
            })
            .await
            .expect("delete")
            .revision;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        assert!(cache.tasks_on_instance("i-2").is_empty());
        assert!(cache.tasks_of_cluster("c").is_empty());
        assert_eq!(
            *changes.lock().expect("lock"),
            vec![(true, true), (true, false)]
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_is_left_out_not_fatal() {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let cache = Cache::start(store.clone()).await.expect("cache");
        let rev = put(&store, "tasks/c/bad", b"{not json".to_vec()).await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        assert!(cache.tasks_of_cluster("c").is_empty());
        let rev = put(&store, "tasks/c/ok", task_json("i-1", "g", "PENDING")).await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        assert_eq!(cache.tasks_of_cluster("c").len(), 1);
    }

    fn instance_json(arn: &str, memory: i64) -> Vec<u8> {
        let ci = ContainerInstance {
            container_instance_arn: Some(arn.into()),
            status: Some("ACTIVE".into()),
            agent_connected: true,
            registered_resources: Some(vec![
                gantry_model::types::Resource::integer("CPU", 1024),
                gantry_model::types::Resource::integer("MEMORY", memory as i32),
            ]),
            ..Default::default()
        };
        serde_json::to_vec(&ci).expect("encode")
    }

    fn memory_request(memory: i64) -> PlacementRequest {
        PlacementRequest {
            requirements: gantry_model::requirements::TaskRequirements {
                memory,
                ..Default::default()
            },
            count: 1,
            strategies: vec![gantry_model::types::PlacementStrategy {
                kind: Some("binpack".into()),
                field: Some("memory".into()),
            }],
            family: "f".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_placement_index_follows_tasks_and_instances() {
        let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let a = "arn:aws:ecs:r:1:container-instance/c/a";
        let b = "arn:aws:ecs:r:1:container-instance/c/b";
        put(&store, "instances/c/a", instance_json(a, 1024)).await;
        let cache = Cache::start(store.clone()).await.expect("cache");
        let (first, chosen) = cache.place("c", &memory_request(600)).expect("instances");
        assert_eq!(first.placements, vec![a.to_string()]);
        assert_eq!(chosen.len(), 1);

        // A task of 600 MiB lands on a: the next 600 MiB task no longer fits there.
        let mut task = TaskRecord {
            task: Task {
                task_arn: Some("arn:aws:ecs:r:1:task/c/t1".into()),
                container_instance_arn: Some(a.into()),
                last_status: Some("RUNNING".into()),
                ..Default::default()
            },
            internal: Default::default(),
        };
        task.internal.memory = 600;
        let rev = put(
            &store,
            "tasks/c/t1",
            serde_json::to_vec(&task).expect("encode"),
        )
        .await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        let (second, _) = cache.place("c", &memory_request(600)).expect("instances");
        assert!(second.placements.is_empty());
        assert_eq!(second.failures[0].reason, "RESOURCE:MEMORY");

        // A new instance joins: it takes the task.
        let rev = put(&store, "instances/c/b", instance_json(b, 2048)).await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        let (third, _) = cache.place("c", &memory_request(600)).expect("instances");
        assert_eq!(third.placements, vec![b.to_string()]);

        // The task stops: a has room again, and binpack prefers the fuller instance.
        task.task.last_status = Some("STOPPED".into());
        let rev = put(
            &store,
            "tasks/c/t1",
            serde_json::to_vec(&task).expect("encode"),
        )
        .await;
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        let (fourth, _) = cache.place("c", &memory_request(600)).expect("instances");
        assert_eq!(fourth.placements, vec![a.to_string()]);
        assert!(cache.place("empty", &memory_request(1)).is_none());
    }
}
