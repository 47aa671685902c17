//! A controller's in-memory copy of one kind, fed by a kube-runtime watcher: objects by uid, the
//! initial list swapped in whole once it is complete (so a relist never shows a half-filled
//! map), and what each event changed, for the controller to queue the keys it touches.

use std::collections::HashMap;
use std::sync::Arc;

use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// The objects of one kind, by uid.
pub struct Cache<K> {
    pub items: HashMap<String, Arc<K>>,
    init: HashMap<String, Arc<K>>,
    /// Whether the first complete list has arrived.
    pub synced: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            items: HashMap::new(),
            init: HashMap::new(),
            synced: false,
        }
    }
}

/// What one watch event changed.
pub enum Change<K> {
    /// Nothing visible yet (a relist in progress).
    None,
    /// A complete (re)list replaced everything.
    Resynced,
    /// An object was added or changed; `old` is what it replaced.
    Applied { new: Arc<K>, old: Option<Arc<K>> },
    /// An object went away.
    Deleted(Arc<K>),
}

impl<K: Resource> Cache<K> {
    /// Applies one watcher event.
    pub fn apply(&mut self, ev: watcher::Event<K>) -> Change<K> {
        self.apply_shared(match ev {
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(Arc::new(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
            watcher::Event::Apply(o) => watcher::Event::Apply(Arc::new(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(Arc::new(o)),
        })
    }

    /// Applies one event of a shared informer ([`super::informer`]).
    pub fn apply_shared(&mut self, ev: watcher::Event<Arc<K>>) -> Change<K> {
        match ev {
            watcher::Event::Init => {
                self.init.clear();
                Change::None
            }
            watcher::Event::InitApply(o) => {
                self.init.insert(o.uid().unwrap_or_default(), o);
                Change::None
            }
            watcher::Event::InitDone => {
                self.items = std::mem::take(&mut self.init);
                self.synced = true;
                Change::Resynced
            }
            watcher::Event::Apply(new) => {
                let old = self
                    .items
                    .insert(new.uid().unwrap_or_default(), new.clone());
                Change::Applied { new, old }
            }
            watcher::Event::Delete(o) => {
                let uid = o.uid().unwrap_or_default();
                Change::Deleted(self.items.remove(&uid).unwrap_or(o))
            }
        }
    }

    /// The objects in namespace `ns`.
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Arc<K>> + 'a {
        self.items
            .values()
            .filter(move |o| o.meta().namespace.as_deref() == Some(ns))
    }
}

/// The uid of the controller of `obj` when it is of `kind`.
pub fn controller_of<K: Resource>(obj: &K, kind: &str) -> Option<String> {
    obj.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .filter(|r| r.kind == kind)
        .map(|r| r.uid.clone())
}

/// Whether `obj` has no controller at all (so a matching owner may adopt it).
pub fn orphan<K: Resource>(obj: &K) -> bool {
    !obj.owner_references()
        .iter()
        .any(|r| r.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.namespace = Some("ns".into());
        p
    }

    #[test]
    fn relists_swap_in_whole() {
        let mut c: Cache<Pod> = Cache::default();
        assert!(matches!(
            c.apply(watcher::Event::Apply(pod("a"))),
            Change::Applied { old: None, .. }
        ));
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(pod("b")));
        assert!(
            c.items.contains_key("a"),
            "the old list stays until the new one is whole"
        );
        assert!(matches!(
            c.apply(watcher::Event::InitDone),
            Change::Resynced
        ));
        assert!(c.synced && !c.items.contains_key("a") && c.items.contains_key("b"));
        assert_eq!(c.in_namespace("ns").count(), 1);
        assert!(matches!(
            c.apply(watcher::Event::Delete(pod("b"))),
            Change::Deleted(_)
        ));
        assert!(c.items.is_empty());
    }
}
