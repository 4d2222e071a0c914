//! The versions a workload cluster runs, and the one step of `kubeadm upgrade` an upgrade by
//! replacement needs.
//!
//! Reads the `ClusterConfiguration` kubeadm keeps in `kube-system/kubeadm-config` (its
//! `kubernetesVersion` is what a control plane joining now is made for: `kubeadm join
//! --control-plane` fetches that configuration from the cluster and writes its static pods
//! for that version, whatever its own kubelet's) and each API server's version from its `kube-apiserver` mirror pod, the
//! way Cluster API's control-plane controller judges its machines (a hosted control plane
//! has no such pods: `/version` answers for it).
//!
//! Writes `kubernetesVersion` there before the first control plane of a new version joins,
//! as `kubeadm upgrade apply` does in its `upload-config` phase and as Cluster API's
//! `KubeadmControlPlane` does (`UpdateKubernetesVersionInKubeadmConfigMap`,
//! controlplane/kubeadm/internal/workload_cluster.go) before it creates upgraded machines;
//! and kube-proxy's image once every API server runs the new version, as kubeadm's
//! `addon/kube-proxy` phase and KCP's `UpdateKubeProxyImageInfo` do.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use super::{Error, Result, WorkloadClient};
use crate::observe::ObservedApiServer;

/// The DaemonSet kubeadm's `addon/kube-proxy` phase installs, and its container.
const KUBE_PROXY: &str = "kube-proxy";

/// The ConfigMap and key of kubeadm's cluster configuration.
pub const KUBEADM_CONFIG: &str = "kubeadm-config";
const CLUSTER_CONFIGURATION: &str = "ClusterConfiguration";

/// The label kubeadm's static pod manifests give the API server (and its mirror pod).
const API_SERVER_SELECTOR: &str = "component=kube-apiserver,tier=control-plane";

impl WorkloadClient {
    /// `kubernetesVersion` of kubeadm's `ClusterConfiguration`; `None` when the cluster has
    /// none (not made by kubeadm) or it names no version.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn configured_version(&self) -> Result<Option<String>> {
        let config = self
            .kube_system::<ConfigMap>()
            .get_opt(KUBEADM_CONFIG)
            .await
            .map_err(self.request_failed("reading kube-system/kubeadm-config"))?;
        Ok(config
            .as_ref()
            .and_then(cluster_configuration)
            .and_then(|c| c.get("kubernetesVersion")?.as_str().map(str::to_owned)))
    }

    /// Every API server's version: from the `kube-apiserver` mirror pods when the control
    /// plane runs on the cluster's own nodes, else from `/version`.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn api_servers(&self) -> Result<Vec<ObservedApiServer>> {
        let pods = self
            .kube_system::<Pod>()
            .list(&ListParams::default().labels(API_SERVER_SELECTOR))
            .await
            .map_err(self.request_failed("listing the kube-apiserver pods"))?;
        let mut servers: Vec<ObservedApiServer> = pods
            .items
            .iter()
            .filter_map(|pod| {
                let node = pod.spec.as_ref()?.node_name.clone()?;
                let image = pod.spec.as_ref()?.containers.first()?.image.clone()?;
                let (_, tag) = image.rsplit_once(':')?;
                Some(ObservedApiServer {
                    node: Some(node),
                    version: tag.to_owned(),
                })
            })
            .collect();
        if servers.is_empty() {
            let info = self
                .client
                .apiserver_version()
                .await
                .map_err(self.request_failed("asking /version"))?;
            servers.push(ObservedApiServer {
                node: None,
                version: info.git_version,
            });
        }
        servers.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(servers)
    }

    /// The tag of the `kube-proxy` container's image in kubeadm's `kube-system/kube-proxy`
    /// DaemonSet; `None` when there is no such DaemonSet (a network plugin that replaces
    /// kube-proxy, or a cluster kubeadm did not make).
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn kube_proxy_version(&self) -> Result<Option<String>> {
        let daemon_set = self
            .kube_system::<DaemonSet>()
            .get_opt(KUBE_PROXY)
            .await
            .map_err(self.request_failed("reading the kube-system/kube-proxy DaemonSet"))?;
        Ok(daemon_set
            .as_ref()
            .and_then(kube_proxy_image)
            .and_then(|image| Some(image.rsplit_once(':')?.1.to_owned())))
    }

    /// Points kube-proxy's image at `version`, keeping its repository, as `kubeadm upgrade
    /// apply`'s `addon/kube-proxy` phase does; the DaemonSet's rolling update does the rest.
    /// Returns the image set.
    ///
    /// # Errors
    /// When the API does not answer or refuses, or there is no kube-proxy DaemonSet.
    pub async fn set_kube_proxy_version(&self, version: &str) -> Result<String> {
        let api = self.kube_system::<DaemonSet>();
        let what = "updating the kube-system/kube-proxy DaemonSet";
        let current = api
            .get_opt(KUBE_PROXY)
            .await
            .map_err(self.request_failed(what))?
            .as_ref()
            .and_then(kube_proxy_image)
            .ok_or_else(|| Error::Refused {
                what: what.to_owned(),
                endpoint: self.endpoint.clone(),
                why: "there is no kube-proxy DaemonSet with a kube-proxy container".to_owned(),
            })?;
        let repository = current
            .rsplit_once(':')
            .map_or(current.as_str(), |(r, _)| r);
        let image = format!("{repository}:{version}");
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
            {"name": KUBE_PROXY, "image": image}
        ]}}}});
        api.patch(
            KUBE_PROXY,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .map_err(self.request_failed(what))?;
        Ok(image)
    }

    /// Sets `kubernetesVersion` in kubeadm's `ClusterConfiguration` to `version`, keeping
    /// every other field; an update that lost a race with another writer fails (the
    /// ConfigMap's `resourceVersion` guards it) and the next pass tries again.
    ///
    /// # Errors
    /// When the API does not answer or refuses, or the cluster has no kubeadm configuration.
    pub async fn set_configured_version(&self, version: &str) -> Result<()> {
        let api = self.kube_system::<ConfigMap>();
        let what = "updating kubernetesVersion in kube-system/kubeadm-config";
        let mut config = api
            .get_opt(KUBEADM_CONFIG)
            .await
            .map_err(self.request_failed(what))?
            .ok_or_else(|| Error::Refused {
                what: what.to_owned(),
                endpoint: self.endpoint.clone(),
                why: "the cluster has no kube-system/kubeadm-config: kubeadm did not make it"
                    .to_owned(),
            })?;
        let mut configuration = cluster_configuration(&config).ok_or_else(|| Error::Refused {
            what: what.to_owned(),
            endpoint: self.endpoint.clone(),
            why: format!("its {CLUSTER_CONFIGURATION} is not a YAML mapping"),
        })?;
        configuration.insert("kubernetesVersion".into(), version.into());
        let text = serde_yaml::to_string(&configuration).expect("a mapping serialises");
        config
            .data
            .get_or_insert_default()
            .insert(CLUSTER_CONFIGURATION.to_owned(), text);
        api.replace(KUBEADM_CONFIG, &PostParams::default(), &config)
            .await
            .map_err(self.request_failed(what))?;
        Ok(())
    }
}

/// The image of the `kube-proxy` container of kubeadm's DaemonSet.
fn kube_proxy_image(daemon_set: &DaemonSet) -> Option<String> {
    daemon_set
        .spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == KUBE_PROXY)?
        .image
        .clone()
}

/// The `ClusterConfiguration` document of kubeadm's ConfigMap, as a mapping.
fn cluster_configuration(config: &ConfigMap) -> Option<serde_yaml::Mapping> {
    let text = config.data.as_ref()?.get(CLUSTER_CONFIGURATION)?;
    match serde_yaml::from_str(text).ok()? {
        serde_yaml::Value::Mapping(mapping) => Some(mapping),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_configuration_is_read_as_kubeadm_wrote_it() {
        let config: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.4\ncontrolPlaneEndpoint: 10.0.0.1:6443\n"},
        }))
        .unwrap();
        let mapping = cluster_configuration(&config).unwrap();
        assert_eq!(mapping.get("kubernetesVersion").unwrap(), "v1.31.4");
        assert_eq!(
            mapping.get("controlPlaneEndpoint").unwrap(),
            "10.0.0.1:6443"
        );
        let broken: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubeadm-config"},
            "data": {"ClusterConfiguration": "- a list"},
        }))
        .unwrap();
        assert!(cluster_configuration(&broken).is_none());
    }
}
