//! Finalizers, the same way for every kind: which list an object should carry, and the
//! one write that sets it, preconditioned on the version the decision was made from.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

/// `object`'s finalizers with each `(wanted, finalizer)` present or absent as wanted; None
/// when they already are.
pub fn wanted<K: Resource>(object: &K, wants: &[(bool, &str)]) -> Option<Vec<String>> {
    let mut finalizers = object.finalizers().to_vec();
    for (wanted, finalizer) in wants {
        let has = finalizers.iter().any(|f| f == finalizer);
        if *wanted && !has {
            finalizers.push((*finalizer).to_owned());
        } else if !*wanted && has {
            finalizers.retain(|f| f != finalizer);
        }
    }
    (finalizers != object.finalizers()).then_some(finalizers)
}

/// `object`'s finalizers without `finalizer`.
pub fn without<K: Resource>(object: &K, finalizer: &str) -> Vec<String> {
    object.finalizers().iter().filter(|f| *f != finalizer).cloned().collect()
}

pub fn has<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// Sets `object`'s finalizers to `finalizers`, failing with 409 if it changed since it was
/// read; returns its new resourceVersion.
pub async fn set<K>(client: &kube::Client, object: &K, finalizers: Vec<String>) -> Result<Option<String>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch =
        serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}});
    Api::<K>::namespaced(client.clone(), &object.namespace().unwrap_or_default())
        .patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|o| o.resource_version())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Dataset;

    fn with(finalizers: &[&str]) -> Dataset {
        let mut d =
            Dataset::new("d", serde_json::from_value(serde_json::json!({"connectionRef": {"name": "c"}})).unwrap());
        d.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        d
    }

    #[test]
    fn only_a_change_is_a_new_list_and_others_finalizers_stay() {
        let d = with(&["other/x", "s3connect.io/a"]);
        assert_eq!(wanted(&d, &[(true, "s3connect.io/a")]), None);
        assert_eq!(wanted(&d, &[(false, "s3connect.io/b")]), None);
        assert_eq!(
            wanted(&d, &[(true, "s3connect.io/a"), (true, "s3connect.io/b")]),
            Some(vec!["other/x".to_owned(), "s3connect.io/a".to_owned(), "s3connect.io/b".to_owned()])
        );
        assert_eq!(wanted(&d, &[(false, "s3connect.io/a")]), Some(vec!["other/x".to_owned()]));
        assert_eq!(without(&d, "s3connect.io/a"), ["other/x"]);
        assert!(has(&d, "s3connect.io/a") && !has(&d, "s3connect.io/b"));
    }
}
