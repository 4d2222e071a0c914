//! Addons in a workload cluster: applying an addon's objects with server-side apply and
//! recording which version of each addon the cluster got.
//!
//! As Cluster API's ClusterResourceSet (in `ApplyOnce` and `Reconcile` strategies alike)
//! rackform only creates and updates: an object removed from an addon stays in the cluster.
//! Objects go in with field manager [`FIELD_MANAGER`], conflicts forced, as `kubectl apply
//! --server-side --force-conflicts` would send them
//! (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>): Namespaces and
//! CustomResourceDefinitions first, so that what lives in them can be applied after, then
//! the rest in the addon's order. Each object's resource comes from the cluster's API
//! discovery (one request per group and version), so any kind the cluster serves, custom
//! ones included, can be applied.
//!
//! The record is the ConfigMap `kube-system/rackform-addons`, one key per addon (its name)
//! holding its digest. Each addon's key is applied by a field manager of its own
//! (`rackform-addon-<name>`): server-side apply removes the fields a manager applied before
//! and no longer applies, so one manager for every key would leave only the last addon's.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::discovery::{self, ApiCapabilities, Scope};
use serde_json::json;

use super::{ADDONS_CONFIGMAP, WorkloadClient};
use crate::spec::{Addon, AddonObject};

/// The field manager of every object an addon applies.
pub const FIELD_MANAGER: &str = "rackform";

/// Where [`ADDONS_CONFIGMAP`], the record of the addons applied, is.
pub const RECORD_NAMESPACE: &str = "kube-system";

/// Where an object of a namespaced kind that names no namespace goes, as with kubectl.
const DEFAULT_NAMESPACE: &str = "default";

/// How many objects the summary of an apply names before it counts the rest.
const NAMED_IN_SUMMARY: usize = 8;

/// What went wrong applying an addon or reading the record. Each names the addon, the object
/// and where it is written, and says that the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error(
        "addon `{addon}`: the cluster API at {endpoint} does not serve {kind} of {api_version}, needed for {object} ({source_file}); the next pass tries again"
    )]
    UnknownKind {
        addon: String,
        endpoint: String,
        api_version: String,
        kind: String,
        object: String,
        source_file: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "addon `{addon}`: {object} ({source_file}) names namespace `{namespace}`, but {kind} is cluster-scoped in the cluster API at {endpoint}; remove `metadata.namespace` from it"
    )]
    NamespaceOnClusterScoped {
        addon: String,
        endpoint: String,
        kind: String,
        namespace: String,
        object: String,
        source_file: String,
    },
    #[error(
        "addon `{addon}`: applying {object} ({source_file}) to the cluster API at {endpoint}; the next pass applies the addon again"
    )]
    Apply {
        addon: String,
        endpoint: String,
        object: String,
        source_file: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "addon `{addon}`: its objects are applied, but recording digest {digest} in ConfigMap {RECORD_NAMESPACE}/{ADDONS_CONFIGMAP} at {endpoint} failed; the next pass applies the addon again"
    )]
    Record {
        addon: String,
        endpoint: String,
        digest: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "reading the addons applied (ConfigMap {RECORD_NAMESPACE}/{ADDONS_CONFIGMAP}) at {endpoint}"
    )]
    ReadRecord {
        endpoint: String,
        #[source]
        source: kube::Error,
    },
}

/// Namespaces first, CustomResourceDefinitions second, then everything else; stable.
fn rank(object: &AddonObject) -> u8 {
    match (object.group(), object.kind.as_str()) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        _ => 2,
    }
}

/// The order objects are applied in.
fn apply_order(objects: &[AddonObject]) -> Vec<&AddonObject> {
    let mut ordered: Vec<&AddonObject> = objects.iter().collect();
    ordered.sort_by_key(|object| rank(object));
    ordered
}

impl WorkloadClient {
    /// Server-side-applies every object of `addon` (Namespaces and CustomResourceDefinitions
    /// first), then records `<name>: <digest>` in the ConfigMap
    /// `kube-system/rackform-addons`; returns what was applied, for people.
    ///
    /// Stops at the first object that fails, leaving the record as it was, so the next pass
    /// applies the whole addon again (server-side apply makes that harmless).
    ///
    /// # Errors
    /// When the API does not serve an object's kind, a cluster-scoped object names a
    /// namespace, or the API refuses or does not answer.
    pub async fn apply_addon(&self, addon: &Addon) -> Result<String, AddonError> {
        let mut resources: HashMap<String, Vec<(ApiResource, ApiCapabilities)>> = HashMap::new();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let ordered = apply_order(&addon.objects);
        for object in &ordered {
            let (resource, capabilities) = self.resource(addon, object, &mut resources).await?;
            let api: Api<DynamicObject> = match (capabilities.scope, &object.namespace) {
                (Scope::Namespaced, namespace) => Api::namespaced_with(
                    self.client.clone(),
                    namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
                    &resource,
                ),
                (Scope::Cluster, None) => Api::all_with(self.client.clone(), &resource),
                (Scope::Cluster, Some(namespace)) => {
                    return Err(AddonError::NamespaceOnClusterScoped {
                        addon: addon.name.clone(),
                        endpoint: self.endpoint.clone(),
                        kind: object.kind.clone(),
                        namespace: namespace.clone(),
                        object: object.to_string(),
                        source_file: object.source.clone(),
                    });
                }
            };
            api.patch(&object.name, &params, &Patch::Apply(&object.manifest))
                .await
                .map_err(|source| AddonError::Apply {
                    addon: addon.name.clone(),
                    endpoint: self.endpoint.clone(),
                    object: object.to_string(),
                    source_file: object.source.clone(),
                    source,
                })?;
        }
        self.record(addon).await?;
        let mut named: Vec<String> = ordered
            .iter()
            .take(NAMED_IN_SUMMARY)
            .map(ToString::to_string)
            .collect();
        if ordered.len() > NAMED_IN_SUMMARY {
            named.push(format!("{} more", ordered.len() - NAMED_IN_SUMMARY));
        }
        Ok(format!(
            "applied addon `{}` ({}, digest {}): {} object{}: {}",
            addon.name,
            addon.path,
            addon.digest,
            ordered.len(),
            if ordered.len() == 1 { "" } else { "s" },
            named.join(", ")
        ))
    }

    /// The addons applied so far, name → digest, from the ConfigMap
    /// `kube-system/rackform-addons`; empty when there is none.
    ///
    /// # Errors
    /// When the API refuses or does not answer.
    pub async fn applied_addons(&self) -> Result<BTreeMap<String, String>, AddonError> {
        let configmaps: Api<ConfigMap> = Api::namespaced(self.client.clone(), RECORD_NAMESPACE);
        let record = configmaps
            .get_opt(ADDONS_CONFIGMAP)
            .await
            .map_err(|source| AddonError::ReadRecord {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        Ok(record.and_then(|c| c.data).unwrap_or_default())
    }

    /// The resource serving `object`'s kind, from discovery of its group and version (asked
    /// once per apply and group version).
    async fn resource(
        &self,
        addon: &Addon,
        object: &AddonObject,
        known: &mut HashMap<String, Vec<(ApiResource, ApiCapabilities)>>,
    ) -> Result<(ApiResource, ApiCapabilities), AddonError> {
        let unknown = |source| AddonError::UnknownKind {
            addon: addon.name.clone(),
            endpoint: self.endpoint.clone(),
            api_version: object.api_version.clone(),
            kind: object.kind.clone(),
            object: object.to_string(),
            source_file: object.source.clone(),
            source,
        };
        if !known.contains_key(&object.api_version) {
            let group_version = kube::core::GroupVersion::gv(object.group(), object.version());
            let group = discovery::pinned_group(&self.client, &group_version)
                .await
                .map_err(unknown)?;
            known.insert(
                object.api_version.clone(),
                group.versioned_resources(object.version()),
            );
        }
        known[&object.api_version]
            .iter()
            .find(|(resource, _)| resource.kind == object.kind)
            .cloned()
            .ok_or_else(|| {
                unknown(kube::Error::Discovery(
                    kube::error::DiscoveryError::MissingKind(object.kind.clone()),
                ))
            })
    }

    /// Applies `<name>: <digest>` alone to the record, as the addon's own field manager.
    async fn record(&self, addon: &Addon) -> Result<(), AddonError> {
        let configmaps: Api<ConfigMap> = Api::namespaced(self.client.clone(), RECORD_NAMESPACE);
        let record = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ADDONS_CONFIGMAP, "namespace": RECORD_NAMESPACE},
            "data": {addon.name.as_str(): addon.digest.as_str()},
        });
        let manager = format!("{FIELD_MANAGER}-addon-{}", addon.name);
        configmaps
            .patch(
                ADDONS_CONFIGMAP,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&record),
            )
            .await
            .map_err(|source| AddonError::Record {
                addon: addon.name.clone(),
                endpoint: self.endpoint.clone(),
                digest: addon.digest.clone(),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, kind: &str, name: &str) -> AddonObject {
        AddonObject {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: None,
            name: name.into(),
            source: "addons/x.yaml:1".into(),
            manifest: serde_json::Value::Null,
        }
    }

    #[test]
    fn namespaces_and_definitions_go_first_and_the_rest_keep_their_order() {
        let objects = [
            object("example.com/v1", "Widget", "w"),
            object(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "widgets.example.com",
            ),
            object("v1", "ConfigMap", "c"),
            object("v1", "Namespace", "n"),
            object("example.com/v1", "Namespace", "not-core"),
            object("apps/v1", "DaemonSet", "d"),
        ];
        let order: Vec<&str> = apply_order(&objects)
            .into_iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(
            order,
            ["n", "widgets.example.com", "w", "c", "not-core", "d"]
        );
    }
}
