//! Resource semantics over the store: create (metadata, generateName, defaulting), get, list with
//! selectors, update with optimistic concurrency, the status and scale subresources, the four
//! patch types, and deletion (finalizers, graceful pod termination, orphaning, namespace and CRD
//! cleanup). Everything here is synchronous and never awaits while the store lock is held.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::ApiServerConfig;
use crate::auth::Authenticator;
use crate::defaults::apply_defaults;
use crate::faults::Faults;
use crate::managed::{self, Scope, Writer};
use crate::patch::{self, PatchKind};
use crate::query::Query;
use crate::rbac::{self, RoleSource};
use crate::requests::RequestCounter;
use crate::resources::{self, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, success_status};
use crate::store::{ObjectKey, Outcome, Store};

/// Shared server state.
pub struct State {
    /// Object storage.
    pub store: Store,
    /// Servable resources: built-ins plus those of established CRDs.
    pub resources: RwLock<Vec<ResourceInfo>>,
    /// Active injected faults.
    pub faults: Faults,
    /// Authenticated requests counted by user, verb and resource (`/_sandbox/requests`).
    pub requests: RequestCounter,
    /// Bearer tokens: the administrator's and those issued through TokenRequest.
    pub authenticator: Authenticator,
    /// Configuration given at start.
    pub config: ApiServerConfig,
    /// Address actually bound.
    pub local_addr: SocketAddr,
    /// Fires once when the server shuts down (ends watches).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Bumped to end every open watch at once (`/_sandbox/watches`); each watch holds a receiver.
    pub watch_cuts: tokio::sync::watch::Sender<u64>,
    /// The list snapshots behind outstanding continue tokens.
    pub snapshots: crate::paging::Snapshots,
    next_cluster_ip: AtomicU32,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object itself; status is preserved where a status subresource exists.
    Main,
    /// Only `.status`.
    Status,
}

/// Options of a delete, from the query and the `DeleteOptions` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// Grace period; `Some(0)` deletes pods immediately.
    pub grace_period_seconds: Option<i64>,
    /// Precondition on the object's UID.
    pub uid: Option<String>,
    /// Precondition on the object's resourceVersion.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads the query parameters and a JSON `DeleteOptions` body (query wins where both say).
    pub fn from_request(query: &Query, body: Option<&Value>) -> Result<Self, ApiError> {
        let body = body.cloned().unwrap_or(Value::Null);
        let orphan = body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            || query.flag("orphanDependents");
        let propagation_policy = query
            .get("propagationPolicy")
            .map(str::to_owned)
            .or_else(|| {
                body.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| orphan.then(|| "Orphan".to_owned()));
        let grace_period_seconds = match query.integer("gracePeriodSeconds")? {
            Some(grace) => Some(grace),
            None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
        };
        let dry_run = query.dry_run()
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|values| values.iter().any(|value| value == "All"));
        Ok(Self {
            propagation_policy,
            grace_period_seconds,
            uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource_version: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            dry_run,
        })
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_suffix() -> String {
    // The real server's alphabet for generateName: no vowels, no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(field))
        .and_then(Value::as_str)
}

/// The object's name.
pub fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        group: info.group.clone(),
        resource: info.plural.clone(),
        namespace: if info.namespaced {
            namespace.unwrap_or_default().to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|list| !list.is_empty())
}

fn is_terminating(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|value| !value.is_null())
}

/// The `Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": { "replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": { "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector },
    })
}

/// The ConfigMap holding the cluster's root CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

impl State {
    /// Fresh state with the default namespaces and the pre-installed CRDs.
    pub fn new(
        config: ApiServerConfig,
        local_addr: SocketAddr,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ApiError> {
        let state = Arc::new(Self {
            store: Store::new(config.watch_history),
            resources: RwLock::new(resources::builtin()),
            faults: Faults::default(),
            requests: RequestCounter::default(),
            authenticator: Authenticator::new(config.admin_token.clone()),
            config,
            local_addr,
            shutdown,
            watch_cuts: tokio::sync::watch::Sender::new(0),
            snapshots: crate::paging::Snapshots::default(),
            next_cluster_ip: AtomicU32::new(10),
        });
        let namespaces = state
            .find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            state.create(
                &namespaces,
                None,
                json!({ "metadata": { "name": namespace } }),
                false,
            )?;
        }
        let crds = state
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(|| ApiError::internal("CRDs are not registered"))?;
        for crd in resources::preinstalled_crds() {
            state.create(&crds, None, crd, false)?;
        }
        for (plural, objects) in [
            ("clusterroles", rbac::bootstrap_cluster_roles()),
            (
                "clusterrolebindings",
                rbac::bootstrap_cluster_role_bindings(),
            ),
        ] {
            let info = state
                .find(rbac::GROUP, "v1", plural)
                .ok_or_else(|| ApiError::internal("RBAC is not registered"))?;
            for object in objects {
                state.create(&info, None, object, false)?;
            }
        }
        let services = state
            .find("", "v1", "services")
            .ok_or_else(|| ApiError::internal("services are not registered"))?;
        // What kube-apiserver's endpoint reconciler keeps: the `kubernetes` Service and its
        // Endpoints at the advertised address and secure port.
        let advertised = state.config.advertise.unwrap_or(local_addr);
        let port = advertised.port();
        state.create(
            &services,
            Some("default"),
            json!({ "metadata": { "name": "kubernetes", "labels": { "component": "apiserver", "provider": "kubernetes" } },
                    "spec": { "clusterIP": crate::tls::KUBERNETES_SERVICE_IP, "ports": [{ "name": "https", "port": 443, "targetPort": port }] } }),
            false,
        )?;
        let endpoints = state
            .find("", "v1", "endpoints")
            .ok_or_else(|| ApiError::internal("endpoints are not registered"))?;
        state.create(
            &endpoints,
            Some("default"),
            json!({ "metadata": { "name": "kubernetes", "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" } },
                    "subsets": [{ "addresses": [{ "ip": advertised.ip().to_string() }],
                                  "ports": [{ "name": "https", "port": port, "protocol": "TCP" }] }] }),
            false,
        )?;
        Ok(state)
    }

    fn read_resources(&self) -> std::sync::RwLockReadGuard<'_, Vec<ResourceInfo>> {
        // Writers replace whole entries; a poisoned lock still holds a consistent table.
        self.resources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot of the resource table.
    pub fn resource_table(&self) -> Vec<ResourceInfo> {
        self.read_resources().clone()
    }

    /// The resource served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.read_resources()
            .iter()
            .find(|info| info.group == group && info.version == version && info.plural == plural)
            .cloned()
    }

    /// Whether `plural` in `group/version` is a namespaced resource.
    pub fn is_namespaced(&self, group: &str, version: &str, plural: &str) -> bool {
        self.find(group, version, plural)
            .is_some_and(|info| info.namespaced)
    }

    fn allocate_cluster_ip(&self) -> String {
        let next = self.next_cluster_ip.fetch_add(1, Ordering::Relaxed);
        format!("10.96.{}.{}", (next / 250) % 256, next % 250 + 1)
    }

    fn require_namespace(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        if !info.namespaced {
            return Ok(());
        }
        let namespace = namespace.ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} is namespaced: the request must name a namespace",
                info.plural
            ))
        })?;
        let namespace_key = ObjectKey {
            group: String::new(),
            resource: "namespaces".to_owned(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        match self.store.get(&namespace_key) {
            None => Err(ApiError::not_found("", "namespaces", namespace)),
            Some(object) if is_terminating(&object) => Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
                details: None,
                list_continue: None,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Fills defaults for `info`'s kind, and the immutable parts a replacement may not change.
    fn default_object(
        &self,
        info: &ResourceInfo,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        object["kind"] = json!(info.kind);
        object["apiVersion"] = json!(info.api_version());
        if let (Some(old), "Service") = (old, info.kind.as_str())
            && object.pointer("/spec/clusterIP").is_none_or(Value::is_null)
            && let Some(address) = old.pointer("/spec/clusterIP").cloned()
        {
            object["spec"]["clusterIP"] = address.clone();
            object["spec"]["clusterIPs"] = json!([address]);
        }
        if info.custom {
            return Ok(());
        }
        if info.group == rbac::GROUP {
            rbac::validate(&info.kind, object)?;
            if let Some(old) = old
                && matches!(info.kind.as_str(), "RoleBinding" | "ClusterRoleBinding")
                && rbac::role_ref_changed(old, object)
            {
                return Err(ApiError::invalid(
                    &info.kind,
                    rbac::GROUP,
                    name_of(object),
                    "roleRef",
                    "Invalid value: cannot change roleRef",
                ));
            }
        }
        apply_defaults(&info.kind, &info.group, object, &mut || {
            self.allocate_cluster_ip()
        })?;
        match old {
            Some(old) => crate::immutable::check(&info.kind, &info.group, old, object),
            None => Ok(()),
        }
    }

    fn after_create_status(info: &ResourceInfo, object: &mut Value) {
        match (info.group.as_str(), info.kind.as_str()) {
            ("", "Pod") => {
                let mut status = object
                    .get("status")
                    .cloned()
                    .filter(Value::is_object)
                    .unwrap_or(json!({}));
                if status.get("phase").is_none() {
                    status["phase"] = json!("Pending");
                }
                status["qosClass"] = json!(qos_class(object));
                object["status"] = status;
            }
            ("", "Service") => object["status"] = json!({ "loadBalancer": {} }),
            ("", "Namespace") => {}
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
                let time = now();
                object["status"] = json!({
                    "acceptedNames": names,
                    "storedVersions": object.pointer("/spec/versions").and_then(Value::as_array).map(|versions| versions.iter().filter(|version| version["storage"] == true).map(|version| version["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "conditions": [
                        { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time },
                        { "type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time },
                    ],
                });
            }
            _ if info.has_subresource("status") => {
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
            _ => {}
        }
    }

    /// Prepares a new object: name (or generateName), namespace, uid, timestamps, generation,
    /// defaults and initial status.
    fn prepare_create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<(ObjectKey, Value), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request must be a {} object",
                info.kind
            )));
        }
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        if let Some(body_namespace) =
            meta_str(&object, "namespace").filter(|found| !found.is_empty())
            && info.namespaced
            && Some(body_namespace) != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match meta_str(&object, "name").filter(|name| !name.is_empty()) {
            Some(name) => name.to_owned(),
            None => match meta_str(&object, "generateName").filter(|prefix| !prefix.is_empty()) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &info.kind,
                        &info.group,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        if name.len() > 253 || name.contains('/') {
            return Err(ApiError::invalid(
                &info.kind,
                &info.group,
                &name,
                "metadata.name",
                "Invalid value: a valid name must be at most 253 characters and contain no '/'",
            ));
        }
        let metadata = object["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("metadata vanished"))?;
        metadata.insert("name".to_owned(), json!(name));
        if info.namespaced {
            metadata.insert("namespace".to_owned(), json!(namespace.unwrap_or_default()));
        } else {
            metadata.remove("namespace");
        }
        metadata.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".to_owned(), json!(now()));
        for transient in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            metadata.remove(transient);
        }
        if object.get("spec").is_some() || info.custom {
            object["metadata"]["generation"] = json!(1);
        }
        self.default_object(info, &mut object, None)?;
        // Mutating admission runs on the defaulted object; what it adds is defaulted in turn.
        // The built-in ServiceAccount plugin first, the webhooks (the sidecar) after it.
        if (info.group.as_str(), info.kind.as_str()) == ("", "Pod") {
            let namespace = namespace.unwrap_or_default();
            let account_name = crate::service_accounts::service_account_name(&mut object);
            let account = self
                .store
                .get(&ObjectKey {
                    group: String::new(),
                    resource: "serviceaccounts".to_owned(),
                    namespace: namespace.to_owned(),
                    name: account_name.clone(),
                })
                .ok_or_else(|| {
                    ApiError::forbidden(
                        "",
                        "pods",
                        &name,
                        &format!(
                            "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
                        ),
                    )
                })?;
            if crate::service_accounts::mount_token(
                &mut object,
                &account,
                &crate::service_accounts::random_suffix(),
            ) {
                self.default_object(info, &mut object, None)?;
            }
        }
        if (info.group.as_str(), info.kind.as_str()) == ("", "Pod")
            && let Some(injection) = &self.config.sidecar_injection
            && let Some(namespace_object) = self.store.get(&ObjectKey {
                group: String::new(),
                resource: "namespaces".to_owned(),
                namespace: String::new(),
                name: namespace.unwrap_or_default().to_owned(),
            })
            && injection.mutate(&namespace_object, &mut object)
        {
            self.default_object(info, &mut object, None)?;
        }
        Self::after_create_status(info, &mut object);
        drop_empty_metadata(&mut object);
        Ok((key(info, namespace, &name), object))
    }

    /// Creates an object as the server itself (bootstrap objects, the default ServiceAccount).
    pub fn create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        self.create_as(
            info,
            namespace,
            object,
            dry_run,
            Ownership::Update(&Writer::internal("kube-apiserver")),
        )
    }

    /// Which fields a write's manager owns: those it wrote (an Update), or entries already
    /// computed by a server-side apply.
    fn scope(info: &ResourceInfo, part: Part) -> Scope {
        match part {
            Part::Main => Scope::Main {
                status_subresource: info.has_subresource("status"),
            },
            Part::Status => Scope::Status,
        }
    }

    /// Creates an object (201 on success, 409 AlreadyExists if the name is taken), recording
    /// its field ownership.
    pub fn create_as(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        object: Value,
        dry_run: bool,
        ownership: Ownership<'_>,
    ) -> Result<Value, ApiError> {
        self.require_namespace(info, namespace)?;
        let applied_entries = match ownership {
            Ownership::Applied => object.pointer("/metadata/managedFields").cloned(),
            Ownership::Update(_) => None,
        };
        let (key, mut object) = self.prepare_create(info, namespace, object)?;
        match ownership {
            Ownership::Update(writer) => managed::record_update(
                None,
                &mut object,
                writer,
                Self::scope(info, Part::Main),
                &info.api_version(),
            ),
            Ownership::Applied => {
                if let Some(entries) = applied_entries {
                    object["metadata"]["managedFields"] = entries;
                }
            }
        }
        if dry_run {
            return match self.store.get(&key) {
                Some(_) => Err(ApiError::already_exists(
                    &info.group,
                    &info.plural,
                    &key.name,
                )),
                None => Ok(object),
            };
        }
        let stored = self
            .store
            .mutate(&key, |current| match current {
                Some(_) => Err(ApiError::already_exists(
                    &info.group,
                    &info.plural,
                    &key.name,
                )),
                None => Ok(Outcome::Put(object)),
            })?
            .ok_or_else(|| ApiError::internal("create stored nothing"))?;
        self.after_write(info, &stored);
        Ok((*stored).clone())
    }

    fn after_write(&self, info: &ResourceInfo, object: &Value) {
        if info.group == "apiextensions.k8s.io"
            && info.kind == "CustomResourceDefinition"
            && let Some(defined) = resources::from_crd(object)
        {
            let mut table = self
                .resources
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            table.retain(|existing| {
                !(existing.group == defined.group && existing.plural == defined.plural)
            });
            table.push(defined);
        }
        if info.group.is_empty() && info.kind == "Namespace" && !is_terminating(object) {
            let name = name_of(object).to_owned();
            if let Some(accounts) = self.find("", "v1", "serviceaccounts") {
                // Best effort, as the real service-account controller: it may already exist.
                let _ = self.create(
                    &accounts,
                    Some(&name),
                    json!({ "metadata": { "name": "default" } }),
                    false,
                );
            }
            if let (Some(config_maps), Some(tls)) =
                (self.find("", "v1", "configmaps"), &self.config.tls)
            {
                // The root CA publisher of kube-controller-manager: what a pod's projected
                // `ca.crt` comes from.
                let _ = self.create(
                    &config_maps,
                    Some(&name),
                    json!({
                        "metadata": {
                            "name": ROOT_CA_CONFIG_MAP,
                            "annotations": { "kubernetes.io/description": ROOT_CA_DESCRIPTION },
                        },
                        "data": { "ca.crt": tls.ca_pem },
                    }),
                    false,
                );
            }
        }
    }

    /// One object.
    pub fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(&key(info, namespace, name))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
    }

    /// Objects matching the query's selectors, with the version the list is consistent at.
    pub fn select(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        query: &Query,
    ) -> Result<(Vec<Arc<Value>>, u64), ApiError> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?;
        let namespace = if info.namespaced { namespace } else { None };
        let (items, version) = self.store.list(&info.group, &info.plural, namespace);
        Ok((
            items
                .into_iter()
                .filter(|item| labels.matches(item) && fields.matches(item))
                .collect(),
            version,
        ))
    }

    /// One chunk of the objects matching the query's selectors, honouring `limit` and
    /// `continue` as kube-apiserver does (see [`crate::paging`]).
    pub fn select_page(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        query: &Query,
    ) -> Result<crate::paging::Page, ApiError> {
        let label_query = query.get("labelSelector").unwrap_or_default();
        let field_query = query.get("fieldSelector").unwrap_or_default();
        let labels = LabelSelector::parse(label_query)?;
        let fields = FieldSelector::parse(field_query)?;
        let namespace = if info.namespaced { namespace } else { None };
        let request = crate::paging::Request {
            limit: query.integer("limit")?,
            continue_token: query.get("continue"),
            resource_version: query.get("resourceVersion"),
            filtered: !label_query.trim().is_empty() || !field_query.trim().is_empty(),
        };
        self.snapshots.page(
            &info.group,
            &info.plural,
            namespace,
            &request,
            || self.store.list(&info.group, &info.plural, namespace),
            |item| labels.matches(item) && fields.matches(item),
        )
    }

    /// A `<Kind>List` (one chunk of it when the query sets `limit`).
    pub fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let page = self.select_page(info, namespace, query)?;
        let mut metadata = json!({ "resourceVersion": page.version.to_string() });
        if let Some(token) = &page.continue_token {
            metadata["continue"] = json!(token);
        }
        if let Some(remaining) = page.remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": metadata,
            "items": page.items.iter().map(|item| (**item).clone()).collect::<Vec<_>>(),
        }))
    }

    /// The object after replacing `part` of `old` with `incoming`.
    fn merge_write(
        &self,
        info: &ResourceInfo,
        old: &Value,
        incoming: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let name = name_of(old).to_owned();
        if !incoming.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request must be a {} object",
                info.kind
            )));
        }
        if let Some(sent) = meta_str(&incoming, "name").filter(|sent| !sent.is_empty())
            && sent != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({sent}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(sent) = meta_str(&incoming, "resourceVersion").filter(|sent| !sent.is_empty())
            && Some(sent) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(&info.group, &info.plural, &name));
        }
        let mut new = match part {
            Part::Status => {
                let mut new = old.clone();
                match incoming.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                new
            }
            Part::Main => {
                let mut new = incoming;
                if !new.get("metadata").is_some_and(Value::is_object) {
                    new["metadata"] = json!({});
                }
                for preserved in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match old["metadata"].get(preserved) {
                        Some(value) => new["metadata"][preserved] = value.clone(),
                        None => {
                            if let Some(map) = new["metadata"].as_object_mut() {
                                map.remove(preserved);
                            }
                        }
                    }
                }
                if info.has_subresource("status") || info.group == "apiextensions.k8s.io" {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            if let Some(map) = new.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                self.default_object(info, &mut new, Some(old))?;
                let changed = if new.get("spec").is_some() || old.get("spec").is_some() {
                    new.get("spec") != old.get("spec")
                } else {
                    info.custom && {
                        let body = |value: &Value| {
                            value.as_object().map(|map| {
                                map.iter()
                                    .filter(|(key, _)| {
                                        !matches!(key.as_str(), "metadata" | "status")
                                    })
                                    .map(|(key, value)| (key.clone(), value.clone()))
                                    .collect::<serde_json::Map<_, _>>()
                            })
                        };
                        body(&new) != body(old)
                    }
                };
                if changed
                    && let Some(generation) =
                        old.pointer("/metadata/generation").and_then(Value::as_i64)
                {
                    new["metadata"]["generation"] = json!(generation + 1);
                }
                new
            }
        };
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        Ok(new)
    }

    fn outcome_for(mut new: Value) -> Outcome {
        drop_empty_metadata(&mut new);
        if is_terminating(&new)
            && !has_finalizers(&new)
            && !matches!(
                new.get("kind").and_then(Value::as_str),
                Some("Pod" | "Namespace")
            )
        {
            Outcome::Delete
        } else {
            Outcome::Put(new)
        }
    }

    /// PUT: replaces `part` of an existing object; a stale resourceVersion is a 409 Conflict.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        incoming: Value,
        part: Part,
        dry_run: bool,
        writer: &Writer,
    ) -> Result<(u16, Value), ApiError> {
        let key = key(info, namespace, name);
        let create_on_update = !info.custom
            && matches!(info.kind.as_str(), "Endpoints" | "Event" | "Node")
            && part == Part::Main;
        if self.store.get(&key).is_none() && create_on_update {
            let mut incoming = incoming;
            if incoming.get("metadata").is_some_and(Value::is_object) {
                incoming["metadata"]["name"] = json!(name);
                if let Some(map) = incoming["metadata"].as_object_mut() {
                    map.remove("resourceVersion");
                }
            }
            return self
                .create_as(
                    info,
                    namespace,
                    incoming,
                    dry_run,
                    Ownership::Update(writer),
                )
                .map(|created| (201, created));
        }
        let stored = self.write(info, &key, dry_run, |old| {
            let mut new = self.merge_write(info, old, incoming, part)?;
            managed::record_update(
                Some(old),
                &mut new,
                writer,
                Self::scope(info, part),
                &info.api_version(),
            );
            Ok(new)
        })?;
        Ok((200, stored))
    }

    /// Applies `compute` to the current object atomically and stores the result.
    fn write(
        &self,
        info: &ResourceInfo,
        key: &ObjectKey,
        dry_run: bool,
        compute: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        if dry_run {
            let current = self
                .store
                .get(key)
                .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &key.name))?;
            return compute(&current);
        }
        let stored = self.store.mutate(key, |current| {
            let current =
                current.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &key.name))?;
            Ok(Self::outcome_for(compute(current)?))
        })?;
        let stored =
            stored.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &key.name))?;
        self.after_write(info, &stored);
        Ok((*stored).clone())
    }

    /// PATCH of `part`; a server-side apply of an absent object creates it (201). Apply
    /// requests need a field manager and may `force`; other patches may not.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        (kind, body): (PatchKind, &[u8]),
        part: Part,
        dry_run: bool,
        (writer, force): (&Writer, bool),
    ) -> Result<(u16, Value), ApiError> {
        check_patch_options(kind, writer, force)?;
        let patch_body = patch::parse_body(kind, body)?;
        let key = key(info, namespace, name);
        let scope = Self::scope(info, part);
        let custom = info.custom;
        let merge = move |live: &Value, config: &Value| {
            if custom {
                let mut out = live.clone();
                json_patch::merge(&mut out, config);
                out
            } else {
                patch::strategic_merge(live, config, "")
            }
        };
        if kind == PatchKind::Apply && part == Part::Main && self.store.get(&key).is_none() {
            let mut config = patch_body.clone();
            if !config.get("metadata").is_some_and(Value::is_object) {
                config["metadata"] = json!({});
            }
            config["metadata"]["name"] = json!(name);
            let object = managed::apply(None, &config, writer, force, scope, merge)?;
            return match self.create_as(info, namespace, object, dry_run, Ownership::Applied) {
                // Lost a race with another creator: apply onto what they made.
                Err(error) if error.reason == "AlreadyExists" => self.patch(
                    info,
                    namespace,
                    name,
                    (kind, body),
                    part,
                    dry_run,
                    (writer, force),
                ),
                other => other.map(|created| (201, created)),
            };
        }
        let stored = self.write(info, &key, dry_run, |old| {
            if kind == PatchKind::Apply {
                let mut merged =
                    managed::apply(Some(old), &patch_body, writer, force, scope, merge)?;
                // Applied configurations carry no resourceVersion precondition unless they set one.
                if patch_body.pointer("/metadata/resourceVersion").is_none() {
                    merged["metadata"]["resourceVersion"] =
                        old["metadata"]["resourceVersion"].clone();
                }
                let mut new = self.merge_write(info, old, merged.clone(), part)?;
                copy_managed_fields(&merged, &mut new);
                return Ok(new);
            }
            let patched = patch::apply(kind, old, &patch_body, info.custom)?;
            let mut new = self.merge_write(info, old, patched, part)?;
            managed::record_update(Some(old), &mut new, writer, scope, &info.api_version());
            Ok(new)
        })?;
        Ok((200, stored))
    }

    /// GET of the scale subresource.
    pub fn get_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(scale_of(&*self.get(info, namespace, name)?))
    }

    /// PUT or PATCH of the scale subresource: only `spec.replicas` changes, and the writer's
    /// entry (subresource `scale`) owns it; a server-side apply of the Scale is checked against
    /// the owners of `.spec.replicas` like any apply.
    #[allow(clippy::too_many_arguments)]
    pub fn write_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange<'_>,
        dry_run: bool,
        (writer, force): (&Writer, bool),
    ) -> Result<Value, ApiError> {
        if let ScaleChange::Patch(kind, _) = change {
            check_patch_options(kind, writer, force)?;
        }
        let writer = writer.clone().through("scale");
        let key = key(info, namespace, name);
        let stored = self.write(info, &key, dry_run, |old| {
            let current_scale = scale_of(old);
            let (wanted, applied) = match change {
                ScaleChange::Replace(scale) => (scale.clone(), false),
                ScaleChange::Patch(kind, body) => {
                    let patch_body = patch::parse_body(kind, body)?;
                    let applied = kind == PatchKind::Apply;
                    let wanted = if applied {
                        patch::apply(PatchKind::Merge, &current_scale, &patch_body, false)?
                    } else {
                        patch::apply(kind, &current_scale, &patch_body, false)?
                    };
                    (wanted, applied)
                }
            };
            if let Some(sent) = wanted
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|sent| !sent.is_empty())
                && Some(sent) != meta_str(old, "resourceVersion")
            {
                return Err(ApiError::conflict(&info.group, &info.plural, name));
            }
            let replicas = wanted
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
                        "spec.replicas",
                        "Required value",
                    )
                })?;
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    name,
                    "spec.replicas",
                    &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                ));
            }
            let scope = Self::scope(info, Part::Main);
            let mut new = if applied {
                // The Scale's fields map onto the parent's: `.spec.replicas`.
                let config =
                    json!({ "apiVersion": info.api_version(), "spec": { "replicas": replicas } });
                managed::apply(Some(old), &config, &writer, force, scope, |live, config| {
                    patch::strategic_merge(live, config, "")
                })?
            } else {
                old.clone()
            };
            new["spec"]["replicas"] = json!(replicas);
            if old.pointer("/spec/replicas") != Some(&json!(replicas))
                && let Some(generation) =
                    old.pointer("/metadata/generation").and_then(Value::as_i64)
            {
                new["metadata"]["generation"] = json!(generation + 1);
            }
            if !applied {
                managed::record_update(Some(old), &mut new, &writer, scope, &info.api_version());
            }
            Ok(new)
        })?;
        Ok(scale_of(&stored))
    }

    /// DELETE of one object. Returns the object while it is still terminating (finalizers, a
    /// scheduled pod's grace period), else a success `Status`.
    pub fn delete(
        self: &Arc<Self>,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let key = key(info, namespace, name);
        if options.dry_run {
            let current = self.get(info, namespace, name)?;
            return Ok((*current).clone());
        }
        let mut removed = false;
        let stored = self.store.mutate(&key, |current| {
            let current =
                current.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
            if let Some(uid) = &options.uid
                && Some(uid.as_str()) != meta_str(current, "uid")
            {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(current, "uid").unwrap_or_default()
                    ),
                    details: None,
                    list_continue: None,
                });
            }
            if let Some(version) = &options.resource_version
                && Some(version.as_str()) != meta_str(current, "resourceVersion")
            {
                return Err(ApiError::conflict(&info.group, &info.plural, name));
            }
            let scheduled_pod = info.group.is_empty()
                && info.kind == "Pod"
                && current
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|node| !node.is_empty());
            let grace = options
                .grace_period_seconds
                .or_else(|| {
                    current
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30);
            let is_namespace = info.group.is_empty() && info.kind == "Namespace";
            if has_finalizers(current) || (scheduled_pod && grace > 0) || is_namespace {
                if is_terminating(current) {
                    return Ok(Outcome::Unchanged);
                }
                let mut marked = current.clone();
                marked["metadata"]["deletionTimestamp"] = json!(now());
                marked["metadata"]["deletionGracePeriodSeconds"] =
                    json!(if scheduled_pod { grace } else { 0 });
                if is_namespace {
                    marked["status"] = json!({ "phase": "Terminating" });
                }
                return Ok(Outcome::Put(marked));
            }
            removed = true;
            Ok(Outcome::Delete)
        })?;
        let stored = stored.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        let uid = meta_str(&stored, "uid").unwrap_or_default().to_owned();
        if options.propagation_policy.as_deref() == Some("Orphan") {
            self.orphan_dependents(&key.namespace, &uid);
        }
        if info.group.is_empty() && info.kind == "Namespace" {
            self.terminate_namespace(name);
        }
        if removed {
            if info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition" {
                self.remove_crd(&stored);
            }
            Ok(success_status(&info.group, &info.plural, name, &uid))
        } else {
            Ok((*stored).clone())
        }
    }

    /// deletecollection: deletes every object matching the selectors.
    pub fn delete_collection(
        self: &Arc<Self>,
        info: &ResourceInfo,
        namespace: Option<&str>,
        query: &Query,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let (items, _) = self.select(info, namespace, query)?;
        let mut deleted = Vec::new();
        for item in items {
            let item_namespace = meta_str(&item, "namespace").map(str::to_owned);
            match self.delete(info, item_namespace.as_deref(), name_of(&item), options) {
                Ok(_) => deleted.push((*item).clone()),
                Err(error) if error.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(
            json!({ "kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": {}, "items": deleted }),
        )
    }

    /// Removes the ownerReferences pointing at `owner_uid` (propagationPolicy=Orphan).
    fn orphan_dependents(&self, namespace: &str, owner_uid: &str) {
        for key in self.store.keys_in_namespace(namespace) {
            let _ = self.store.mutate(&key, |current| {
                let Some(current) = current else {
                    return Ok(Outcome::Unchanged);
                };
                let Some(owners) = current
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                else {
                    return Ok(Outcome::Unchanged);
                };
                if !owners.iter().any(|owner| owner["uid"] == owner_uid) {
                    return Ok(Outcome::Unchanged);
                }
                let mut updated = current.clone();
                let kept: Vec<Value> = owners
                    .iter()
                    .filter(|owner| owner["uid"] != owner_uid)
                    .cloned()
                    .collect();
                updated["metadata"]["ownerReferences"] = json!(kept);
                Ok(Outcome::Put(updated))
            });
        }
    }

    fn remove_crd(&self, crd: &Value) {
        let Some(defined) = resources::from_crd(crd) else {
            return;
        };
        self.resources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|existing| {
                !(existing.group == defined.group && existing.plural == defined.plural)
            });
        let (items, _) = self.store.list(&defined.group, &defined.plural, None);
        for item in items {
            let key = key(&defined, meta_str(&item, "namespace"), name_of(&item));
            let _ = self.store.mutate(&key, |_| Ok(Outcome::Delete));
        }
    }

    /// Deletes a namespace's contents (pods gracefully, through the kubelet), then the namespace
    /// once it is empty; contents left after two minutes are removed outright.
    fn terminate_namespace(self: &Arc<Self>, namespace: &str) {
        let state = self.clone();
        let namespace = namespace.to_owned();
        let background = DeleteOptions {
            propagation_policy: Some("Background".to_owned()),
            ..DeleteOptions::default()
        };
        for key in self.store.keys_in_namespace(&namespace) {
            let info = self
                .read_resources()
                .iter()
                .find(|info| info.group == key.group && info.plural == key.resource)
                .cloned();
            if let Some(info) = info {
                let _ = self.delete(&info, Some(&namespace), &key.name, &background);
            }
        }
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                let remaining = state.store.keys_in_namespace(&namespace);
                if remaining.is_empty() || started.elapsed() > Duration::from_secs(120) {
                    for key in remaining {
                        let _ = state.store.mutate(&key, |_| Ok(Outcome::Delete));
                    }
                    let namespace_key = ObjectKey {
                        group: String::new(),
                        resource: "namespaces".to_owned(),
                        namespace: String::new(),
                        name: namespace.clone(),
                    };
                    let _ = state.store.mutate(&namespace_key, |current| {
                        Ok(if current.is_some_and(is_terminating) {
                            Outcome::Delete
                        } else {
                            Outcome::Unchanged
                        })
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

/// Removes empty `labels`, `annotations`, `finalizers` and `ownerReferences`: the real server
/// never returns them empty (Go's `omitempty`), and clients diffing objects rely on that.
impl RoleSource for State {
    fn cluster_roles(&self) -> Vec<Value> {
        let (items, _) = self.store.list(rbac::GROUP, "clusterroles", None);
        items.iter().map(|item| (**item).clone()).collect()
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Value> {
        self.store
            .get(&ObjectKey {
                group: rbac::GROUP.to_owned(),
                resource: "roles".to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .map(|role| (*role).clone())
    }

    fn cluster_role_bindings(&self) -> Vec<Value> {
        let (items, _) = self.store.list(rbac::GROUP, "clusterrolebindings", None);
        items.iter().map(|item| (**item).clone()).collect()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        let (items, _) = self
            .store
            .list(rbac::GROUP, "rolebindings", Some(namespace));
        items.iter().map(|item| (**item).clone()).collect()
    }
}

fn drop_empty_metadata(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.retain(|key, value| {
            let collection = matches!(
                key.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            );
            let empty = value.is_null()
                || value.as_object().is_some_and(|map| map.is_empty())
                || value.as_array().is_some_and(|list| list.is_empty());
            !(collection && empty)
        });
    }
}

/// How a create records field ownership.
#[derive(Debug, Clone, Copy)]
pub enum Ownership<'a> {
    /// An Update by this writer: it owns every field of the new object.
    Update(&'a Writer),
    /// The object carries the entries a server-side apply computed.
    Applied,
}

/// Copies `metadata.managedFields` of `from` onto `to` (or removes them).
fn copy_managed_fields(from: &Value, to: &mut Value) {
    match from.pointer("/metadata/managedFields") {
        Some(entries) => to["metadata"]["managedFields"] = entries.clone(),
        None => {
            if let Some(map) = to["metadata"].as_object_mut() {
                map.remove("managedFields");
            }
        }
    }
}

/// The real server's validation of patch options: apply needs a field manager, and `force`
/// belongs to apply only (422 `PatchOptions.meta.k8s.io "" is invalid`).
fn check_patch_options(kind: PatchKind, writer: &Writer, force: bool) -> Result<(), ApiError> {
    if kind == PatchKind::Apply && !writer.explicit {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    }
    if kind != PatchKind::Apply && force {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    Ok(())
}

/// A write to the scale subresource.
#[derive(Debug, Clone, Copy)]
pub enum ScaleChange<'a> {
    /// PUT of a whole Scale.
    Replace(&'a Value),
    /// PATCH of the Scale.
    Patch(PatchKind, &'a [u8]),
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for container in &containers {
        let requests = container
            .pointer("/resources/requests")
            .and_then(Value::as_object);
        let limits = container
            .pointer("/resources/limits")
            .and_then(Value::as_object);
        any |= requests.is_some_and(|map| !map.is_empty())
            || limits.is_some_and(|map| !map.is_empty());
        let full = limits.is_some_and(|limits| {
            ["cpu", "memory"]
                .iter()
                .all(|resource| limits.contains_key(*resource))
                && requests.is_none_or(|requests| {
                    requests
                        .iter()
                        .all(|(resource, value)| limits.get(resource) == Some(value))
                })
        });
        guaranteed &= full;
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}
