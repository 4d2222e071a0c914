//! [`Store`]: whichever store the command line chose, as one [`SecretStore`].

use std::collections::BTreeMap;

use super::{
    Created, Deleted, DirSecrets, Inventory, KubeSecrets, Replaced, Result, SecretData, SecretKind,
    SecretStore, StoredSecret, Version,
};

/// The Kubernetes store or the directory store.
pub enum Store {
    Kube(Box<KubeSecrets>),
    Dir(DirSecrets),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Kube($store) => $call.await,
            Store::Dir($store) => $call.await,
        }
    };
}

impl SecretStore for Store {
    async fn inventory(&self, cluster: &str) -> Result<Inventory> {
        delegate!(self, store => store.inventory(cluster))
    }

    async fn inventory_all(&self) -> Result<BTreeMap<String, Inventory>> {
        delegate!(self, store => store.inventory_all())
    }

    async fn read(&self, cluster: &str, kind: SecretKind) -> Result<Option<StoredSecret>> {
        delegate!(self, store => store.read(cluster, kind))
    }

    async fn create_if_absent(
        &self,
        cluster: &str,
        kind: SecretKind,
        data: SecretData,
    ) -> Result<Created> {
        delegate!(self, store => store.create_if_absent(cluster, kind, data))
    }

    async fn replace(
        &self,
        cluster: &str,
        kind: SecretKind,
        expected: &Version,
        data: SecretData,
    ) -> Result<Replaced> {
        delegate!(self, store => store.replace(cluster, kind, expected, data))
    }

    async fn delete_cluster(&self, cluster: &str, kinds: &[SecretKind]) -> Result<Deleted> {
        delegate!(self, store => store.delete_cluster(cluster, kinds))
    }

    async fn read_record(&self, name: &'static str) -> Result<Option<(Vec<u8>, Version)>> {
        delegate!(self, store => store.read_record(name))
    }

    async fn write_record(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        expected: Option<&Version>,
    ) -> Result<bool> {
        delegate!(self, store => store.write_record(name, bytes, expected))
    }
}
