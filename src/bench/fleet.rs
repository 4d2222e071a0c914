//! Generated fleets for the benchmarks: an in-memory repository of `n` clusters of 20
//! devices each (3 control-plane nodes, pools of 8 and 9), and the observed world in which
//! every one of them already runs and is current.

use std::collections::BTreeMap;

use crate::observe::{
    DeviceState, Endpoint, ObservedCluster, ObservedDevice, SecretKind, SecretOwner, World,
};
use crate::plan;
use crate::spec::{CONTROL_PLANE_POOL, ControlPlane, FileError, Fleet, RepoFiles};

/// The project every generated cluster lives in (also the simulator's project name).
pub const PROJECT: &str = "3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10";
/// An age recipient for sealing kubeconfigs (nobody needs to open them in a benchmark).
pub const RECIPIENT: &str = "age1eat4yr00rcgyapm9vv3gjjt0dmdsv8p4t306ld9vz4tyqzdpl3tsetvrgf";
/// Devices per generated cluster.
pub const DEVICES_PER_CLUSTER: usize = 20;

/// `rackform.yaml` of a generated fleet.
pub fn settings() -> String {
    format!(
        "apiVersion: rackform.dev/v1alpha1
kind: Fleet
packet: {{project: {PROJECT}}}
age: {{recipients: [{RECIPIENT}]}}
prune: false
defaults: {{kubernetesVersion: v1.31.4, metro: da, controlPlane: {{plan: c3.small.x86, os: ubuntu_24_04}}, workers: {{plan: m3.small.x86, os: ubuntu_24_04}}}}
"
    )
}

/// Clusters per project when a fleet is spread over projects: the simulator, like the
/// API, grants 64 IP reservations a project before asking for approval.
pub const CLUSTERS_PER_PROJECT: usize = 50;

/// The id of the `k`th extra project of a spread fleet.
pub fn spread_project(k: usize) -> String {
    format!("{:08x}-0000-4000-8000-000000000000", k + 1)
}

/// The file of cluster `c<i>`: 3 control-plane nodes, pools of 8 and `9 + extra`, in the
/// fleet's project or in `project`.
pub fn cluster_yaml(i: usize, extra: u32, project: Option<&str>) -> String {
    let project = project.map_or(String::new(), |p| format!("\n  project: {p}"));
    format!(
        "apiVersion: rackform.dev/v1alpha1
kind: Cluster
metadata: {{name: c{i}}}
spec:{project}
  controlPlane: {{count: 3}}
  pools:
    - {{name: pool0, count: 8}}
    - {{name: pool1, count: {}}}
",
        9 + extra
    )
}

/// A fleet repository held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemFiles(pub BTreeMap<String, String>);

impl MemFiles {
    /// `n` clusters; with `changed`, one pool in 20 (pool1 of every tenth cluster) has one
    /// more device than the converged world.
    pub fn generate(n: usize, changed: bool) -> MemFiles {
        let mut files = BTreeMap::new();
        files.insert("rackform.yaml".to_owned(), settings());
        for i in 0..n {
            let extra = u32::from(changed && i % 10 == 0);
            files.insert(format!("clusters/c{i}.yaml"), cluster_yaml(i, extra, None));
        }
        MemFiles(files)
    }

    /// `n` clusters, [`CLUSTERS_PER_PROJECT`] to a project (see [`spread_project`]).
    pub fn generate_spread(n: usize) -> MemFiles {
        let mut files = BTreeMap::new();
        files.insert("rackform.yaml".to_owned(), settings());
        for i in 0..n {
            let project = spread_project(i / CLUSTERS_PER_PROJECT);
            files.insert(
                format!("clusters/c{i}.yaml"),
                cluster_yaml(i, 0, Some(&project)),
            );
        }
        MemFiles(files)
    }
}

impl RepoFiles for MemFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        Ok(self.0.get(path).map(|text| text.as_bytes().to_vec()))
    }
    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        Ok(self
            .0
            .keys()
            .filter(|p| {
                p.strip_prefix(dir)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".yaml"))
            })
            .cloned()
            .collect())
    }
}

/// Each cluster's name, project and devices as rackform would have made them:
/// (pool, ordinal, spec hash).
pub type FleetDevices = Vec<(String, String, Vec<(String, u32, String)>)>;

/// The devices of every cluster of `fleet`.
pub fn devices(fleet: &Fleet) -> FleetDevices {
    fleet
        .clusters
        .iter()
        .map(|cluster| {
            let mut devices = Vec::new();
            if let (ControlPlane::Managed(nodes), Some(hash)) =
                (&cluster.control_plane, plan::control_plane_hash(cluster))
            {
                for ordinal in 0..nodes.count {
                    devices.push((CONTROL_PLANE_POOL.to_owned(), ordinal, hash.clone()));
                }
            }
            for pool in &cluster.pools {
                let hash = plan::pool_hash(cluster, pool);
                for ordinal in 0..pool.count {
                    devices.push((pool.name.as_str().to_owned(), ordinal, hash.clone()));
                }
            }
            (
                cluster.name.as_str().to_owned(),
                cluster.project.clone(),
                devices,
            )
        })
        .collect()
}

/// The world in which every declared device runs, is current, and every cluster has its
/// secrets and an endpoint assigned to its first control-plane node.
pub fn converged_world(fleet: &Fleet) -> World {
    let mut world = World::default();
    let mut next_id = 0u64;
    for (cluster, _, devices) in devices(fleet) {
        let mut observed = ObservedCluster::default();
        for (pool, ordinal, spec) in devices {
            next_id += 1;
            observed.devices.push(ObservedDevice {
                id: format!("d-{next_id}"),
                hostname: format!("{cluster}-{pool}-{ordinal}"),
                pool,
                ordinal: Some(ordinal),
                spec: Some(spec),
                state: DeviceState::Active,
                reservation: None,
                created_at: Some(1_790_000_000),
                active_since: Some(1_790_000_600),
                protected: false,
            });
        }
        observed.secrets = SecretKind::ALL
            .into_iter()
            .map(|kind| (kind, SecretOwner::Rackform))
            .collect();
        observed.endpoint = Some(Endpoint {
            id: format!("ip-{cluster}"),
            address: "147.75.0.1".to_owned(),
            assigned_to: observed
                .devices
                .iter()
                .find(|d| d.pool == CONTROL_PLANE_POOL && d.ordinal == Some(0))
                .map(|d| d.id.clone()),
        });
        observed
            .devices
            .sort_by(|a, b| (&a.pool, a.ordinal, &a.id).cmp(&(&b.pool, b.ordinal, &b.id)));
        world.clusters.insert(cluster, observed);
    }
    world
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converged_world_plans_nothing_and_a_changed_fleet_plans_one_device_per_tenth_cluster() {
        let fleet = crate::spec::load(&MemFiles::generate(20, false));
        assert_eq!(fleet.clusters.len(), 20, "{:?}", fleet.broken);
        let world = converged_world(&fleet);
        let inputs = |fleet| plan::Inputs {
            fleet,
            world: &world,
            commit: None,
            now: 1_790_000_000,
            approve_deletes: false,
        };
        let plan = plan::build(&inputs(&fleet));
        assert!(plan.is_empty(), "{plan:?}");
        let changed = crate::spec::load(&MemFiles::generate(20, true));
        assert_eq!(plan::build(&inputs(&changed)).actions().count(), 2);
    }
}
