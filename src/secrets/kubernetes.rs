//! [`KubeSecrets`]: cluster secrets as Kubernetes secrets, through kube-rs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, GetParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use secrecy::ExposeSecret;

use super::{
    ApiFailure, CLUSTER_NAME_LABEL, CLUSTER_SECRET_TYPE, Created, Deleted, Error, Inventory,
    MANAGED_BY, MANAGED_BY_LABEL, RECORD_KEY, Replaced, Result, SecretData, SecretKind, SecretMeta,
    SecretName, SecretOwner, SecretStore, StoredSecret, Version, kind_of, owner_of, record_name,
    record_of, secret_name,
};

/// A client for the Kubernetes API as the environment describes it: the in-cluster service
/// account, or `KUBECONFIG` / `~/.kube/config`.
pub async fn connect() -> Result<kube::Client> {
    kube::Client::try_default()
        .await
        .map_err(|error| Error::Connect {
            source: ApiFailure::from_kube(&error),
        })
}

/// Secrets in one namespace of a Kubernetes cluster (the management cluster).
///
/// Secrets rackform creates carry `cluster.x-k8s.io/cluster-name=<cluster>` and
/// `app.kubernetes.io/managed-by=rackform`, and type `cluster.x-k8s.io/secret`.
///
/// Requests whose answers carry values (get, create, replace, delete) go through
/// [`KubeSecrets::send`] rather than kube-rs's typed calls: those log the whole response
/// body at `warn` when it fails to decode (`kube-client`'s `Client::request`), and a
/// secret's body holds its keys.
#[derive(Clone)]
pub struct KubeSecrets {
    api: Api<Secret>,
    client: kube::Client,
    namespace: String,
}

impl KubeSecrets {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        KubeSecrets {
            api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
        }
    }

    fn request(&self) -> kube::core::Request {
        kube::core::Request::new(self.api.resource_url())
    }

    /// Sends `request` and decodes its answer as `T`, logging nothing of the body.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<T, kube::Error> {
        let request = request.map_err(kube::Error::BuildRequest)?;
        let text = self.client.request_text(request).await?;
        serde_json::from_str(&text).map_err(kube::Error::SerdeError)
    }

    /// The body of a create or replace, as JSON.
    fn body(secret: &Secret) -> Vec<u8> {
        serde_json::to_vec(secret).expect("a Secret always serialises")
    }

    fn failed(&self, operation: &'static str, name: &SecretName, error: &kube::Error) -> Error {
        Error::Kube {
            operation,
            name: name.to_string(),
            namespace: self.namespace.clone(),
            source: ApiFailure::from_kube(error),
        }
    }

    async fn read_name(&self, name: &SecretName) -> Result<Option<StoredSecret>> {
        let request = self.request().get(name.as_str(), &GetParams::default());
        match self.send::<Secret>(request).await {
            Ok(secret) => Ok(Some(stored(name, secret))),
            Err(error) if is_reason(&error, kube::core::Status::is_not_found) => Ok(None),
            Err(error) => Err(self.failed("reading", name, &error)),
        }
    }

    async fn meta_of(&self, name: &SecretName) -> Result<Option<PartialObjectMeta<Secret>>> {
        self.api
            .get_metadata_opt(name.as_str())
            .await
            .map_err(|error| self.failed("reading metadata of", name, &error))
    }
}

/// An answer of which only the metadata is read; the rest, values included, is skipped.
#[derive(serde::Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

fn is_reason(error: &kube::Error, test: fn(&kube::core::Status) -> bool) -> bool {
    matches!(error, kube::Error::Api(status) if test(status))
}

fn meta_from(name: &SecretName, metadata: &ObjectMeta) -> SecretMeta {
    let labels = metadata.labels.clone().unwrap_or_default();
    SecretMeta {
        name: name.clone(),
        owner: owner_of(&labels),
        labels,
        version: Version(metadata.resource_version.clone().unwrap_or_default()),
    }
}

fn stored(name: &SecretName, secret: Secret) -> StoredSecret {
    let mut data = SecretData::new();
    for (key, ByteString(bytes)) in secret.data.unwrap_or_default() {
        data.insert(key, bytes);
    }
    StoredSecret {
        meta: meta_from(name, &secret.metadata),
        type_: secret.type_.unwrap_or_else(|| "Opaque".to_owned()),
        data,
    }
}

fn our_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_NAME_LABEL.to_owned(), cluster.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ])
}

fn to_wire(data: &SecretData) -> BTreeMap<String, ByteString> {
    data.iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.expose_secret().to_vec())))
        .collect()
}

impl SecretStore for KubeSecrets {
    async fn inventory(&self, cluster: &str) -> Result<Inventory> {
        // One metadata GET per name: a user-supplied CA made with `kubectl create secret tls`
        // carries no label, so a label selector alone would miss it.
        let mut secrets = BTreeMap::new();
        for kind in SecretKind::ALL {
            let name = secret_name(cluster, kind)?;
            if let Some(found) = self.meta_of(&name).await? {
                secrets.insert(kind, meta_from(&name, &found.metadata));
            }
        }
        Ok(Inventory { secrets })
    }

    async fn inventory_all(&self) -> Result<BTreeMap<String, Inventory>> {
        let params = ListParams::default().labels(CLUSTER_NAME_LABEL);
        let list = self
            .api
            .list_metadata(&params)
            .await
            .map_err(|error| Error::Kube {
                operation: "listing metadata of labelled",
                name: "secrets".to_owned(),
                namespace: self.namespace.clone(),
                source: ApiFailure::from_kube(&error),
            })?;
        let mut all: BTreeMap<String, Inventory> = BTreeMap::new();
        for found in list.items {
            let name = found.metadata.name.clone().unwrap_or_default();
            let labels = found.metadata.labels.clone().unwrap_or_default();
            if let Some((cluster, kind)) = kind_of(&name, &labels) {
                let meta = meta_from(&SecretName(name), &found.metadata);
                all.entry(cluster).or_default().secrets.insert(kind, meta);
            }
        }
        Ok(all)
    }

    async fn read(&self, cluster: &str, kind: SecretKind) -> Result<Option<StoredSecret>> {
        self.read_name(&secret_name(cluster, kind)?).await
    }

    async fn create_if_absent(
        &self,
        cluster: &str,
        kind: SecretKind,
        data: SecretData,
    ) -> Result<Created> {
        let name = secret_name(cluster, kind)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(our_labels(cluster)),
                ..ObjectMeta::default()
            },
            type_: Some(CLUSTER_SECRET_TYPE.to_owned()),
            data: Some(to_wire(&data)),
            ..Secret::default()
        };
        // A create that loses a race gets 409 AlreadyExists: the winner's secret is read and
        // returned. It may vanish again before the read (a deletion in between), so retry.
        for _ in 0..3 {
            let request = self
                .request()
                .create(&PostParams::default(), Self::body(&secret));
            match self.send::<MetaOnly>(request).await {
                Ok(created) => return Ok(Created::Created(meta_from(&name, &created.metadata))),
                Err(error) if is_reason(&error, kube::core::Status::is_already_exists) => {
                    if let Some(existing) = self.read_name(&name).await? {
                        return Ok(Created::Existing(existing));
                    }
                }
                Err(error) => return Err(self.failed("creating", &name, &error)),
            }
        }
        Err(Error::Kube {
            operation: "creating",
            name: name.to_string(),
            namespace: self.namespace.clone(),
            source: ApiFailure("it was deleted and recreated concurrently three times".into()),
        })
    }

    async fn replace(
        &self,
        cluster: &str,
        kind: SecretKind,
        expected: &Version,
        data: SecretData,
    ) -> Result<Replaced> {
        let name = secret_name(cluster, kind)?;
        let Some(current) = self.meta_of(&name).await? else {
            return Ok(Replaced::Changed(None));
        };
        let current = meta_from(&name, &current.metadata);
        if current.owner != SecretOwner::Rackform {
            return Err(Error::NotOurs { name });
        }
        if &current.version != expected {
            return Ok(Replaced::Changed(Some(current)));
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(our_labels(cluster)),
                resource_version: Some(expected.0.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(CLUSTER_SECRET_TYPE.to_owned()),
            data: Some(to_wire(&data)),
            ..Secret::default()
        };
        let request =
            self.request()
                .replace(name.as_str(), &PostParams::default(), Self::body(&secret));
        match self.send::<MetaOnly>(request).await {
            Ok(replaced) => Ok(Replaced::Replaced(meta_from(&name, &replaced.metadata))),
            Err(error) if is_reason(&error, kube::core::Status::is_conflict) => {
                let now = self.meta_of(&name).await?;
                Ok(Replaced::Changed(
                    now.map(|now| meta_from(&name, &now.metadata)),
                ))
            }
            Err(error) if is_reason(&error, kube::core::Status::is_not_found) => {
                Ok(Replaced::Changed(None))
            }
            Err(error) => Err(self.failed("replacing", &name, &error)),
        }
    }

    async fn delete_cluster(&self, cluster: &str, kinds: &[SecretKind]) -> Result<Deleted> {
        let mut outcome = Deleted::default();
        for &kind in kinds {
            let name = secret_name(cluster, kind)?;
            // The delete is conditional on the uid and version read, so a secret that a user
            // put in place of ours in between is never deleted. A changed one is looked at
            // again.
            for _ in 0..3 {
                let Some(found) = self.meta_of(&name).await? else {
                    break;
                };
                if owner_of(found.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                    != SecretOwner::Rackform
                {
                    outcome.kept.push(name.clone());
                    break;
                }
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: found.metadata.uid.clone(),
                        resource_version: found.metadata.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                let request = self.request().delete(name.as_str(), &params);
                // The answer is a Status or the deleted secret; only success matters.
                match self.send::<serde::de::IgnoredAny>(request).await {
                    Ok(_) => {
                        outcome.deleted.push(name.clone());
                        break;
                    }
                    Err(error) if is_reason(&error, kube::core::Status::is_not_found) => break,
                    Err(error) if is_reason(&error, kube::core::Status::is_conflict) => continue,
                    Err(error) => return Err(self.failed("deleting", &name, &error)),
                }
            }
        }
        Ok(outcome)
    }

    async fn read_record(&self, name: &'static str) -> Result<Option<(Vec<u8>, Version)>> {
        let name = record_name(name);
        let Some(stored) = self.read_name(&name).await? else {
            return Ok(None);
        };
        Ok(Some(record_of(stored)))
    }

    async fn write_record(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        expected: Option<&Version>,
    ) -> Result<bool> {
        let name = record_name(name);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                resource_version: expected.map(|v| v.0.clone()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(RECORD_KEY.to_owned(), ByteString(bytes))])),
            ..Secret::default()
        };
        // A create fails with 409 when the record exists; a replace at a resourceVersion
        // fails with 409 when it moved: either way another writer was first.
        let request = match expected {
            None => self
                .request()
                .create(&PostParams::default(), Self::body(&secret)),
            Some(_) => {
                self.request()
                    .replace(name.as_str(), &PostParams::default(), Self::body(&secret))
            }
        };
        match self.send::<MetaOnly>(request).await {
            Ok(_) => Ok(true),
            Err(error)
                if is_reason(&error, kube::core::Status::is_conflict)
                    || is_reason(&error, kube::core::Status::is_already_exists)
                    || is_reason(&error, kube::core::Status::is_not_found) =>
            {
                Ok(false)
            }
            Err(error) => Err(self.failed("writing", &name, &error)),
        }
    }
}
