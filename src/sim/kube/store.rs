//! The in-memory object store behind one simulated cluster's API.
//!
//! Owns every object of the cluster as JSON, keyed by resource (group, version, plural, from
//! the fixed [`catalog`](super::catalog)), namespace and name, and the rules the real API
//! server applies when writing them (<https://kubernetes.io/docs/reference/using-api/api-concepts/>):
//! the server sets `uid`, `resourceVersion` (one counter for everything, as etcd's revision),
//! `creationTimestamp`, `namespace`, `apiVersion`, `kind` and `generation`; names are
//! validated; creates refuse an existing name (409 `AlreadyExists`) and a missing namespace;
//! updates carrying a stale `resourceVersion` get 409 `Conflict`; an update that changes
//! nothing keeps the `resourceVersion`; the main resource of a kind with a `status`
//! subresource keeps its stored status and the subresource changes nothing else; Secrets
//! merge `stringData` into `data` and default to `type: Opaque`; deletes honour `uid` and
//! `resourceVersion` preconditions, and deleting a namespace deletes what it holds. Every
//! change is told to subscribers (watches) and the last thousand are kept, so a watch may
//! start from an older `resourceVersion`.
//!
//! Objects are stored, never run: no controller, garbage collector, finalizer or graceful
//! deletion acts on them. Never does I/O; time is an argument.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::catalog::{self, ResourceType};
use super::patch;
use super::selector::{Selector, labels_of};
use super::status::ApiError;

/// Namespaces the real server refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// How a write is made.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// `dryRun=All`: check and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`, recorded in `managedFields`.
    pub field_manager: Option<&'a str>,
    pub now: SystemTime,
}

/// The filters and paging of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: Selector,
    pub fields: Selector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub resource_version: String,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// The body of a `PATCH`.
#[derive(Debug, Clone)]
pub enum Patch {
    Merge(Value),
    Strategic(Value),
    Json(Value),
    /// Server-side apply of a configuration (`application/apply-patch+yaml`).
    Apply(Value),
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: for kinds with a status subresource, the stored status is kept.
    Main,
    /// The `status` subresource: only the status changes.
    Status,
    /// Everything, as given (in-process writes by the simulator).
    Whole,
}

type Objects = BTreeMap<(String, String), Value>;

/// A change, as a watch streams it. `Debug` leaves the object out (it may be a Secret).
pub struct Event {
    /// The resource's store key (group, plural).
    pub key: (&'static str, &'static str),
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (for `DELETED`, as it was, with the deletion's
    /// `resourceVersion`).
    pub object: Value,
    pub revision: u64,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("key", &self.key)
            .field("namespace", &self.namespace)
            .field("kind", &self.kind)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// How many changes are kept for watches that start from an older `resourceVersion`.
const HISTORY: usize = 1000;

/// All objects of one cluster. `Debug` shows counts only: objects include Secrets.
pub struct Store {
    objects: BTreeMap<(&'static str, &'static str), Objects>,
    revision: u64,
    uids: u64,
    generated_names: u64,
    cluster_ips: u32,
    /// The last [`HISTORY`] changes, oldest first.
    history: VecDeque<Arc<Event>>,
    /// The revision of the newest change no longer in `history`.
    forgotten: u64,
    events: broadcast::Sender<Arc<Event>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field(
                "objects",
                &self.objects.values().map(BTreeMap::len).sum::<usize>(),
            )
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// RFC 3339 in whole seconds, UTC: `2026-01-02T03:04:05Z`.
pub use crate::rfc3339::format_system as rfc3339;

/// Reads an RFC 3339 time (any fraction, any offset).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let time =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = time.unix_timestamp_nanos();
    let since = std::time::Duration::from_nanos(u64::try_from(nanos).ok()?);
    SystemTime::UNIX_EPOCH.checked_add(since)
}

/// The store's key of a resource: its group and plural (one version is served per group).
pub fn key(resource: &ResourceType) -> (&'static str, &'static str) {
    (resource.group, resource.plural)
}

const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What is wrong with `name` for `resource`, as the real validation says it.
fn name_problem(resource: &ResourceType, name: &str) -> Option<String> {
    match (resource.group, resource.plural) {
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else if name.contains('/') {
                Some("may not contain '/'".to_owned())
            } else if name.contains('%') {
                Some("may not contain '%'".to_owned())
            } else {
                None
            }
        }
        ("", "namespaces") => {
            if name.len() > 63 {
                Some("must be no more than 63 characters".to_owned())
            } else {
                (!is_label(name)).then(|| LABEL_MESSAGE.to_owned())
            }
        }
        ("", "services") => {
            let starts_alpha = name.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
            if name.len() > 63 {
                Some("must be no more than 63 characters".to_owned())
            } else {
                (!(is_label(name) && starts_alpha)).then(|| DNS1035_MESSAGE.to_owned())
            }
        }
        _ => {
            if name.len() > 253 {
                Some("must be no more than 253 characters".to_owned())
            } else {
                (!name.split('.').all(is_label)).then(|| SUBDOMAIN_MESSAGE.to_owned())
            }
        }
    }
}

/// Kinds whose objects carry `metadata.generation`.
fn tracks_generation(resource: &ResourceType) -> bool {
    matches!(resource.group, "apps" | "policy" | "apiextensions.k8s.io")
}

impl Store {
    /// An empty cluster as the API server leaves it: the namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`, and the `kubernetes` Service.
    pub fn new(now: SystemTime) -> Self {
        let mut store = Self {
            objects: BTreeMap::new(),
            revision: 0,
            uids: 0,
            generated_names: 0,
            history: VecDeque::new(),
            forgotten: 0,
            events: broadcast::channel(1024).0,
            cluster_ips: 0,
        };
        let options = WriteOptions {
            dry_run: false,
            field_manager: None,
            now,
        };
        let namespaces = catalog::find("", "v1", "namespaces").expect("in the catalogue");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(namespaces, "", json!({"metadata": {"name": name}}), options)
                .expect("a valid namespace");
        }
        let services = catalog::find("", "v1", "services").expect("in the catalogue");
        store
            .create(
                services,
                "default",
                json!({"metadata": {"name": "kubernetes",
                                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                       "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443,
                                "protocol": "TCP", "targetPort": 6443}]}}),
                options,
            )
            .expect("a valid service");
        store
    }

    /// The last resourceVersion handed out.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn objects(&self, resource: &ResourceType) -> Option<&Objects> {
        self.objects.get(&key(resource))
    }

    fn objects_mut(&mut self, resource: &ResourceType) -> &mut Objects {
        self.objects.entry(key(resource)).or_default()
    }

    /// The stored object, if any.
    pub fn find(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<&Value> {
        self.objects(resource)?
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The stored object, or 404.
    pub fn get(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.find(resource, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Every object of `resource` in `namespace` (all namespaces for `None`), by namespace
    /// and name.
    pub fn iter<'a>(
        &'a self,
        resource: &ResourceType,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects(resource)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .map(|(_, object)| object)
    }

    /// A filtered, paged list.
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let start = match &options.continue_token {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let matching: Vec<(&(String, String), &Value)> = self
            .objects(resource)
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .filter(|(position, _)| start.as_ref().is_none_or(|start| *position > start))
            .filter(|(_, object)| options.labels.matches_labels(&labels_of(object)))
            .filter(|(_, object)| options.fields.matches_fields(object))
            .collect();
        let take = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let (page, rest) = matching.split_at(take.min(matching.len()));
        let continue_token = (!rest.is_empty())
            .then(|| page.last().map(|(position, _)| encode_continue(position)))
            .flatten();
        Ok(ListPage {
            items: page.iter().map(|(_, object)| (*object).clone()).collect(),
            resource_version: self.revision.to_string(),
            remaining: (!rest.is_empty()).then_some(rest.len()),
            continue_token,
        })
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        if self.history.len() > HISTORY
            && let Some(dropped) = self.history.pop_front()
        {
            self.forgotten = dropped.revision;
        }
        // Nobody watching is fine.
        let _ = self.events.send(event);
    }

    /// Stores `object` under a new revision and tells watchers.
    fn insert_object(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        kind: &'static str,
    ) -> Value {
        let revision = self.next_revision();
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        self.objects_mut(resource)
            .insert((namespace.to_owned(), name.to_owned()), object.clone());
        self.record(Event {
            key: key(resource),
            namespace: namespace.to_owned(),
            kind,
            object: object.clone(),
            revision,
        });
        object
    }

    /// Removes an object under a new revision and tells watchers.
    fn remove_object(
        &mut self,
        store_key: (&'static str, &'static str),
        namespace: &str,
        name: &str,
    ) {
        let Some(mut object) = self
            .objects
            .get_mut(&store_key)
            .and_then(|objects| objects.remove(&(namespace.to_owned(), name.to_owned())))
        else {
            return;
        };
        let revision = self.next_revision();
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        self.record(Event {
            key: store_key,
            namespace: namespace.to_owned(),
            kind: "DELETED",
            object,
            revision,
        });
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The changes after `revision`, or `None` when some of them are forgotten.
    pub fn changes_since(&self, revision: u64) -> Option<Vec<Arc<Event>>> {
        if revision < self.forgotten {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|event| event.revision > revision)
                .cloned()
                .collect(),
        )
    }

    /// The oldest revision a watch may start from.
    pub fn oldest_revision(&self) -> u64 {
        self.forgotten
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        let namespaces = catalog::find("", "v1", "namespaces").expect("in the catalogue");
        self.find(namespaces, "", namespace).is_some()
    }

    /// Sets what the server sets on a write; `previous` is the stored object on update.
    fn admit(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        mut object: Value,
        previous: Option<&Value>,
        options: WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(problem) = name_problem(resource, &name) {
            return Err(ApiError::invalid(
                resource,
                &name,
                "metadata.name",
                "FieldValueInvalid",
                &format!("Invalid value: \"{name}\": {problem}"),
            ));
        }
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind);
        let now = rfc3339(options.now);
        let (uid, created, generation) = match previous {
            Some(previous) => (
                previous["metadata"]["uid"].clone(),
                previous["metadata"]["creationTimestamp"].clone(),
                previous["metadata"]["generation"].as_i64(),
            ),
            None => {
                self.uids += 1;
                (
                    json!(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
                    json!(now),
                    None,
                )
            }
        };
        let generation = if tracks_generation(resource) {
            match (previous, generation) {
                (Some(previous), Some(generation))
                    if previous.get("spec") != object.get("spec") =>
                {
                    Some(generation + 1)
                }
                (Some(_), Some(generation)) => Some(generation),
                _ => Some(1),
            }
        } else {
            None
        };
        {
            let metadata = object["metadata"]
                .as_object_mut()
                .expect("checked metadata");
            if resource.namespaced {
                metadata.insert("namespace".into(), json!(namespace));
            } else {
                metadata.remove("namespace");
            }
            metadata.insert("uid".into(), uid);
            metadata.insert("creationTimestamp".into(), created);
            match generation {
                Some(generation) => metadata.insert("generation".into(), json!(generation)),
                None => metadata.remove("generation"),
            };
            for field in ["labels", "annotations", "selfLink"] {
                if metadata.get(field).is_some_and(Value::is_null) || field == "selfLink" {
                    metadata.remove(field);
                }
            }
        }
        self.defaults(resource, &mut object, previous);
        Ok(object)
    }

    /// Per-kind defaults the real server fills in.
    fn defaults(&mut self, resource: &ResourceType, object: &mut Value, previous: Option<&Value>) {
        match (resource.group, resource.plural) {
            ("", "secrets") => {
                let map = object.as_object_mut().expect("an object");
                if let Some(Value::Object(strings)) = map.remove("stringData") {
                    let data = map.entry("data").or_insert_with(|| json!({}));
                    if !data.is_object() {
                        *data = json!({});
                    }
                    for (key, value) in strings {
                        data[key] = json!(STANDARD.encode(value.as_str().unwrap_or_default()));
                    }
                }
                if map
                    .get("type")
                    .is_none_or(|type_| type_.is_null() || type_ == "")
                {
                    map.insert("type".into(), json!("Opaque"));
                }
            }
            ("", "namespaces") => {
                let name = object["metadata"]["name"].clone();
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                if object["spec"]["finalizers"].is_null() {
                    object["spec"]["finalizers"] = json!(["kubernetes"]);
                }
                if object["status"]["phase"].is_null() {
                    object["status"]["phase"] = json!("Active");
                }
            }
            ("", "services") => {
                if object["spec"]["type"].is_null() {
                    object["spec"]["type"] = json!("ClusterIP");
                }
                let kept = previous.map(|p| p["spec"]["clusterIP"].clone());
                if object["spec"]["clusterIP"].is_null() && object["spec"]["type"] != "ExternalName"
                {
                    object["spec"]["clusterIP"] = kept.unwrap_or_else(|| {
                        self.cluster_ips += 1;
                        json!(format!(
                            "10.96.{}.{}",
                            self.cluster_ips / 254,
                            self.cluster_ips % 254
                        ))
                    });
                    object["spec"]["clusterIPs"] = json!([object["spec"]["clusterIP"]]);
                }
            }
            ("", "pods") if object["status"]["phase"].is_null() => {
                object["status"]["phase"] = json!("Pending");
            }
            _ => {}
        }
    }

    fn generate_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.generated_names += 1;
        let mut n = self.generated_names.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let suffix: String = (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect();
        format!("{prefix}{suffix}")
    }

    fn check_body(
        resource: &ResourceType,
        namespace: &str,
        object: &Value,
    ) -> Result<(), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not an object",
            ));
        }
        if let Some(kind) = object.get("kind").and_then(Value::as_str)
            && !kind.is_empty()
            && kind != resource.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind {kind:?} of the provided object does not match {:?}",
                resource.kind
            )));
        }
        if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
            && !api_version.is_empty()
            && api_version != resource.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                resource.api_version()
            )));
        }
        if resource.namespaced
            && let Some(given) = object["metadata"]["namespace"].as_str()
            && !given.is_empty()
            && given != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    /// `POST`: stores a new object; 409 when the name is taken.
    pub fn create(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        mut object: Value,
        options: WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        Self::check_body(resource, namespace, &object)?;
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        let name = match object["metadata"]["name"].as_str() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    let name = self.generate_name(prefix);
                    object["metadata"]["name"] = json!(name);
                    name
                }
                _ => {
                    return Err(ApiError::invalid(
                        resource,
                        "",
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        if resource.namespaced && !self.namespace_exists(namespace) {
            let namespaces = catalog::find("", "v1", "namespaces").expect("in the catalogue");
            return Err(ApiError::not_found(namespaces, namespace));
        }
        if self.find(resource, namespace, &name).is_some() {
            return Err(ApiError::already_exists(resource, &name));
        }
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("managedFields");
            metadata.remove("resourceVersion");
        }
        let body = object.clone();
        let mut object = self.admit(resource, namespace, object, None, options)?;
        if let Some(manager) = options.field_manager {
            patch::record_update(
                &mut object,
                &body,
                manager,
                &rfc3339(options.now),
                resource.status,
            );
        }
        if options.dry_run {
            object["metadata"]["resourceVersion"] = json!("");
            return Ok(object);
        }
        Ok(self.insert_object(resource, namespace, &name, object, "ADDED"))
    }

    /// `PUT`: replaces a stored object; a `resourceVersion` in the body must be current.
    pub fn replace(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
        part: Part,
        options: WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        Self::check_body(resource, namespace, &object)?;
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let stored = self.get(resource, namespace, name)?;
        if let Some(version) = object["metadata"]["resourceVersion"].as_str()
            && !version.is_empty()
            && Some(version) != stored["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::modified(resource, name));
        }
        let body = object.clone();
        self.write(
            resource, namespace, name, &stored, object, &body, part, options,
        )
    }

    /// `PATCH`. Returns the object and whether it was created (only apply creates).
    pub fn patch(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        patch: &Patch,
        part: Part,
        options: WriteOptions<'_>,
    ) -> Result<(Value, bool), ApiError> {
        let stored = self.find(resource, namespace, name).cloned();
        if let Patch::Apply(config) = patch {
            Self::check_body(resource, namespace, config)?;
            if config["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n != name)
            {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            let manager = options.field_manager.ok_or_else(|| {
                ApiError::bad_request("PATCH /: fieldManager is required for apply requests")
            })?;
            let time = rfc3339(options.now);
            let mut merged = patch::apply(
                stored.as_ref(),
                config,
                manager,
                &time,
                resource.status && part != Part::Status,
            );
            merged["metadata"]["name"] = json!(name);
            let options = WriteOptions {
                field_manager: None,
                ..options
            };
            return match stored {
                None => {
                    if let Some(metadata) = merged["metadata"].as_object_mut() {
                        metadata.remove("resourceVersion");
                    }
                    let fields = merged["metadata"]["managedFields"].clone();
                    let mut created = self.create(resource, namespace, merged, options)?;
                    created["metadata"]["managedFields"] = fields.clone();
                    if !options.dry_run {
                        let slot = self
                            .objects_mut(resource)
                            .get_mut(&(namespace.to_owned(), name.to_owned()))
                            .expect("just created");
                        slot["metadata"]["managedFields"] = fields;
                    }
                    Ok((created, true))
                }
                Some(stored) => {
                    let object = self.write(
                        resource,
                        namespace,
                        name,
                        &stored,
                        merged,
                        &Value::Null,
                        part,
                        options,
                    )?;
                    Ok((object, false))
                }
            };
        }
        let stored = stored.ok_or_else(|| ApiError::not_found(resource, name))?;
        let mut object = stored.clone();
        let body = match patch {
            Patch::Merge(body) => {
                patch::merge_patch(&mut object, body);
                body.clone()
            }
            Patch::Strategic(body) => {
                patch::strategic_merge(&mut object, body);
                body.clone()
            }
            Patch::Json(operations) => {
                patch::json_patch(&mut object, operations)
                    .map_err(|problem| ApiError::new(422, "Invalid", problem, json!({})))?;
                Value::Null
            }
            Patch::Apply(_) => unreachable!("handled above"),
        };
        if let Some(version) = body["metadata"]["resourceVersion"].as_str()
            && Some(version) != stored["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::modified(resource, name));
        }
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request("a patch may not change the name"));
        }
        Self::check_body(resource, namespace, &object)?;
        let object = self.write(
            resource, namespace, name, &stored, object, &body, part, options,
        )?;
        Ok((object, false))
    }

    /// The common end of updates: keeps what the part may not change, admits, stores unless
    /// nothing changed.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        stored: &Value,
        mut object: Value,
        body: &Value,
        part: Part,
        options: WriteOptions<'_>,
    ) -> Result<Value, ApiError> {
        match part {
            Part::Main if resource.status => match stored.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            },
            Part::Status => {
                let status = object.get("status").cloned();
                object = stored.clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        object
                            .as_object_mut()
                            .expect("stored objects are objects")
                            .remove("status");
                    }
                }
            }
            _ => {}
        }
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        let fields = object["metadata"]
            .get("managedFields")
            .cloned()
            .or_else(|| stored["metadata"].get("managedFields").cloned());
        let mut object = self.admit(resource, namespace, object, Some(stored), options)?;
        match fields {
            Some(fields) => object["metadata"]["managedFields"] = fields,
            None => {
                object["metadata"]
                    .as_object_mut()
                    .expect("admitted metadata")
                    .remove("managedFields");
            }
        }
        if let Some(manager) = options.field_manager
            && !body.is_null()
        {
            patch::record_update(
                &mut object,
                body,
                manager,
                &rfc3339(options.now),
                resource.status,
            );
        }
        object["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
        if same_ignoring_times(&object, stored) {
            return Ok(stored.clone());
        }
        if options.dry_run {
            return Ok(object);
        }
        Ok(self.insert_object(resource, namespace, name, object, "MODIFIED"))
    }

    /// `DELETE` of one object, with `preconditions` (`uid`, `resourceVersion`) from the
    /// `DeleteOptions`. Returns the deleted object.
    pub fn delete(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        preconditions: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let stored = self.get(resource, namespace, name)?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = preconditions[field].as_str()
                && Some(want) != stored["metadata"][field].as_str()
            {
                let have = stored["metadata"][field].as_str().unwrap_or_default();
                return Err(ApiError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                    ),
                ));
            }
        }
        let is_namespace = resource.group.is_empty() && resource.plural == "namespaces";
        if is_namespace && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                "",
                "namespaces",
                name,
                "this namespace may not be deleted",
            ));
        }
        if !dry_run {
            if is_namespace {
                let contents: Vec<((&'static str, &'static str), String)> = self
                    .objects
                    .iter()
                    .flat_map(|(store_key, objects)| {
                        objects
                            .keys()
                            .filter(|(ns, _)| ns == name)
                            .map(|(_, object)| (*store_key, object.clone()))
                    })
                    .collect();
                for (store_key, object) in contents {
                    self.remove_object(store_key, name, &object);
                }
            }
            self.remove_object(key(resource), namespace, name);
        }
        Ok(stored)
    }

    /// `DELETE` of a collection: every object the options select. Returns them.
    pub fn delete_collection(
        &mut self,
        resource: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
        dry_run: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let page = self.list(
            resource,
            namespace,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..options.clone()
            },
        )?;
        if !dry_run {
            for object in &page.items {
                let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                self.remove_object(key(resource), ns, name);
            }
        }
        Ok(page.items)
    }

    /// Creates or replaces `object` whatever its `resourceVersion` (in-process writes by the
    /// simulator: status included, server fields set as on any write).
    pub fn put(&mut self, object: Value, now: SystemTime) -> Result<Value, ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = catalog::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind {kind:?} is registered for version {api_version:?}"
            ))
        })?;
        let namespace = if resource.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let options = WriteOptions {
            dry_run: false,
            field_manager: None,
            now,
        };
        let mut object = object;
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        match self.find(resource, &namespace, &name).cloned() {
            Some(stored) => self.write(
                resource,
                &namespace,
                &name,
                &stored,
                object,
                &Value::Null,
                Part::Whole,
                options,
            ),
            None => self.create(resource, &namespace, object, options),
        }
    }
}

/// Whether two versions of an object differ only in `managedFields` times.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |value: &Value| {
        let mut value = value.clone();
        if let Some(entries) = value["metadata"]["managedFields"].as_array_mut() {
            for entry in entries {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("time");
                }
            }
        }
        value
    };
    strip(a) == strip(b)
}

fn encode_continue(position: &(String, String)) -> String {
    STANDARD.encode(serde_json::to_vec(&json!([position.0, position.1])).expect("json"))
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = STANDARD.decode(token).map_err(|_| invalid())?;
    let (namespace, name): (String, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    Ok((namespace, name))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045 + seconds)
    }

    fn options(seconds: u64) -> WriteOptions<'static> {
        WriteOptions {
            dry_run: false,
            field_manager: None,
            now: at(seconds),
        }
    }

    fn resource(plural: &str) -> &'static ResourceType {
        catalog::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    #[test]
    fn creates_set_the_server_fields_and_refuse_taken_names() {
        let mut store = Store::new(at(0));
        let secrets = resource("secrets");
        let created = store
            .create(
                secrets,
                "kube-system",
                json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}),
                options(1),
            )
            .unwrap();
        assert_eq!(created["apiVersion"], "v1");
        assert_eq!(created["kind"], "Secret");
        assert_eq!(created["type"], "Opaque");
        assert_eq!(created["data"]["a"], "Yg==");
        assert!(created.get("stringData").is_none());
        assert_eq!(created["metadata"]["namespace"], "kube-system");
        assert_eq!(
            created["metadata"]["creationTimestamp"],
            "2026-01-02T03:04:06Z"
        );
        assert!(created["metadata"]["uid"].as_str().is_some());
        let error = store
            .create(
                secrets,
                "kube-system",
                json!({"metadata": {"name": "s"}}),
                options(2),
            )
            .unwrap_err();
        assert_eq!(error.code, 409);
        assert_eq!(error.reason, "AlreadyExists");
        assert_eq!(error.message, "secrets \"s\" already exists");
    }

    #[test]
    fn creates_need_a_valid_name_and_an_existing_namespace() {
        let mut store = Store::new(at(0));
        let error = store
            .create(
                resource("configmaps"),
                "nowhere",
                json!({"metadata": {"name": "c"}}),
                options(0),
            )
            .unwrap_err();
        assert_eq!(error.message, "namespaces \"nowhere\" not found");
        let error = store
            .create(
                resource("configmaps"),
                "default",
                json!({"metadata": {"name": "Bad"}}),
                options(0),
            )
            .unwrap_err();
        assert_eq!(error.code, 422);
        assert!(
            error.message.starts_with("ConfigMap \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"),
            "{}",
            error.message
        );
        let error = store
            .create(
                resource("configmaps"),
                "default",
                json!({"metadata": {}}),
                options(0),
            )
            .unwrap_err();
        assert_eq!(
            error.message,
            "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        let made = store
            .create(
                resource("configmaps"),
                "default",
                json!({"metadata": {"generateName": "c-"}}),
                options(0),
            )
            .unwrap();
        assert!(made["metadata"]["name"].as_str().unwrap().starts_with("c-"));
        store
            .create(
                resource("clusterroles"),
                "",
                json!({"metadata": {"name": "system:x"}}),
                options(0),
            )
            .unwrap();
    }

    #[test]
    fn replace_checks_the_resource_version_and_noop_updates_keep_it() {
        let mut store = Store::new(at(0));
        let leases = resource("leases");
        let created = store
            .create(
                leases,
                "default",
                json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}),
                options(0),
            )
            .unwrap();
        let version = created["metadata"]["resourceVersion"].clone();
        let same = store
            .replace(
                leases,
                "default",
                "l",
                created.clone(),
                Part::Main,
                options(1),
            )
            .unwrap();
        assert_eq!(same["metadata"]["resourceVersion"], version);
        let mut changed = created.clone();
        changed["spec"]["holderIdentity"] = json!("b");
        let updated = store
            .replace(
                leases,
                "default",
                "l",
                changed.clone(),
                Part::Main,
                options(2),
            )
            .unwrap();
        assert_ne!(updated["metadata"]["resourceVersion"], version);
        assert_eq!(
            updated["metadata"]["creationTimestamp"],
            created["metadata"]["creationTimestamp"]
        );
        let error = store
            .replace(leases, "default", "l", changed, Part::Main, options(3))
            .unwrap_err();
        assert_eq!(error.reason, "Conflict");
        assert_eq!(
            error.message,
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"l\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn status_is_a_subresource_where_the_kind_says_so() {
        let mut store = Store::new(at(0));
        let deployments = resource("deployments");
        let created = store
            .create(
                deployments,
                "default",
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 1}}),
                options(0),
            )
            .unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        let (main, _) = store
            .patch(
                deployments,
                "default",
                "d",
                &Patch::Merge(json!({"spec": {"replicas": 2}, "status": {"replicas": 7}})),
                Part::Main,
                options(1),
            )
            .unwrap();
        assert_eq!(main["status"]["replicas"], 1);
        assert_eq!(main["spec"]["replicas"], 2);
        assert_eq!(main["metadata"]["generation"], 2);
        let (status, _) = store
            .patch(
                deployments,
                "default",
                "d",
                &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 2}})),
                Part::Status,
                options(2),
            )
            .unwrap();
        assert_eq!(status["status"]["replicas"], 2);
        assert_eq!(status["spec"]["replicas"], 2);
        assert_eq!(status["metadata"]["generation"], 2);
    }

    #[test]
    fn apply_creates_then_updates_and_needs_a_field_manager() {
        let mut store = Store::new(at(0));
        let configmaps = resource("configmaps");
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                            "data": {"a": "1"}});
        let error = store
            .patch(
                configmaps,
                "default",
                "c",
                &Patch::Apply(config.clone()),
                Part::Main,
                options(0),
            )
            .unwrap_err();
        assert_eq!(error.code, 400);
        let with_manager = WriteOptions {
            field_manager: Some("kubectl"),
            ..options(0)
        };
        let (created, was_created) = store
            .patch(
                configmaps,
                "default",
                "c",
                &Patch::Apply(config),
                Part::Main,
                with_manager,
            )
            .unwrap();
        assert!(was_created);
        assert_eq!(
            created["metadata"]["managedFields"][0]["manager"],
            "kubectl"
        );
        let stored = store.find(configmaps, "default", "c").unwrap();
        assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Apply");
        let (updated, was_created) = store
            .patch(
                configmaps,
                "default",
                "c",
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "c"}, "data": {"b": "2"}})),
                Part::Main,
                with_manager,
            )
            .unwrap();
        assert!(!was_created);
        assert_eq!(updated["data"], json!({"b": "2"}));
    }

    #[test]
    fn lists_filter_and_page() {
        let mut store = Store::new(at(0));
        let configmaps = resource("configmaps");
        for (name, tier) in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")] {
            store
                .create(
                    configmaps,
                    "default",
                    json!({"metadata": {"name": name, "labels": {"tier": tier}}}),
                    options(0),
                )
                .unwrap();
        }
        let mut options = ListOptions {
            labels: Selector::parse("tier=x").unwrap(),
            limit: Some(2),
            ..ListOptions::default()
        };
        let first = store.list(configmaps, Some("default"), &options).unwrap();
        let names: Vec<_> = first
            .items
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("a"), json!("c")]);
        assert_eq!(first.remaining, Some(1));
        options.continue_token = first.continue_token;
        let second = store.list(configmaps, Some("default"), &options).unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0]["metadata"]["name"], "d");
        assert!(second.continue_token.is_none());
        let by_name = ListOptions {
            fields: Selector::parse("metadata.name=b").unwrap(),
            ..ListOptions::default()
        };
        assert_eq!(
            store.list(configmaps, None, &by_name).unwrap().items.len(),
            1
        );
    }

    #[test]
    fn deletes_check_preconditions_and_namespaces_take_their_objects() {
        let mut store = Store::new(at(0));
        let namespaces = resource("namespaces");
        let secrets = resource("secrets");
        store
            .create(
                namespaces,
                "",
                json!({"metadata": {"name": "team"}}),
                options(0),
            )
            .unwrap();
        let secret = store
            .create(
                secrets,
                "team",
                json!({"metadata": {"name": "s"}}),
                options(0),
            )
            .unwrap();
        let error = store
            .delete(secrets, "team", "s", &json!({"uid": "other"}), false)
            .unwrap_err();
        assert_eq!(error.code, 409);
        assert!(
            error
                .message
                .contains("Precondition failed: UID in precondition: other")
        );
        store
            .delete(namespaces, "", "team", &json!({"uid": null}), false)
            .unwrap();
        assert!(store.find(secrets, "team", "s").is_none());
        assert!(secret["metadata"]["uid"].is_string());
        let error = store
            .delete(namespaces, "", "kube-system", &Value::Null, false)
            .unwrap_err();
        assert_eq!(error.code, 403);
        assert_eq!(
            error.message,
            "namespaces \"kube-system\" is forbidden: this namespace may not be deleted"
        );
    }

    #[test]
    fn changes_are_kept_for_watches_and_told_to_subscribers() {
        let mut store = Store::new(at(0));
        let configmaps = resource("configmaps");
        let start = store.revision();
        let mut receiver = store.subscribe();
        store
            .create(
                configmaps,
                "default",
                json!({"metadata": {"name": "c"}}),
                options(0),
            )
            .unwrap();
        store
            .patch(
                configmaps,
                "default",
                "c",
                &Patch::Merge(json!({"data": {"a": "b"}})),
                Part::Main,
                options(1),
            )
            .unwrap();
        store
            .delete(configmaps, "default", "c", &Value::Null, false)
            .unwrap();
        let kinds: Vec<&str> = store
            .changes_since(start)
            .unwrap()
            .iter()
            .map(|event| event.kind)
            .collect();
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
        let deleted = store.changes_since(start + 2).unwrap();
        assert_eq!(deleted.len(), 1);
        assert_eq!(
            deleted[0].object["metadata"]["resourceVersion"],
            json!((start + 3).to_string())
        );
        assert_eq!(receiver.try_recv().unwrap().kind, "ADDED");
        assert!(!format!("{:?}", deleted[0]).contains("\"a\""));
        for i in 0..HISTORY as u64 + 5 {
            store
                .put(
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "x", "namespace": "default"}, "data": {"i": i.to_string()}}),
                    at(2),
                )
                .unwrap();
        }
        assert!(store.changes_since(start).is_none());
        assert!(store.changes_since(store.revision() - 1).is_some());
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(at(0)), "2026-01-02T03:04:05Z");
        assert_eq!(parse_time("2026-01-02T03:04:05Z"), Some(at(0)));
        assert_eq!(parse_time("2026-01-02T04:04:05+01:00"), Some(at(0)));
    }
}
