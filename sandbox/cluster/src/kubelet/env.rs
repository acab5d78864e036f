//! Container environment resolution: literal values, `$(VAR)` expansion, `fieldRef`,
//! `secretKeyRef`, `configMapKeyRef` and `envFrom`, from Secrets and ConfigMaps the caller
//! fetched. Pure: the kubelet fetches, this decides. Errors are the kubelet's
//! CreateContainerConfigError messages.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// The Secrets and ConfigMaps a container's environment refers to.
pub fn referenced_objects(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(source) = &var.value_from {
            if let Some(key) = &source.secret_key_ref {
                secrets.push(key.name.clone());
            }
            if let Some(key) = &source.config_map_key_ref {
                config_maps.push(key.name.clone());
            }
        }
    }
    for source in container.env_from.iter().flatten() {
        if let Some(secret) = &source.secret_ref {
            secrets.push(secret.name.clone());
        }
        if let Some(config_map) = &source.config_map_ref {
            config_maps.push(config_map.name.clone());
        }
    }
    secrets.sort();
    secrets.dedup();
    config_maps.sort();
    config_maps.dedup();
    (secrets, config_maps)
}

fn secret_value(secret: &Secret, key: &str) -> Option<Result<String, String>> {
    if let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) {
        return Some(
            String::from_utf8(bytes.0.clone())
                .map_err(|_| format!("key {key:?} of the secret is not UTF-8 text")),
        );
    }
    secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .cloned()
        .map(Ok)
}

fn config_map_value(config_map: &ConfigMap, key: &str) -> Option<String> {
    config_map
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .cloned()
}

/// Expands `$(NAME)` references against `vars`; `$$` escapes, unknown references stay as they
/// are (the real kubelet's rules).
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A pod field a projected `downwardAPI` item may name (no status fields: a volume is made
/// before the pod has an IP).
pub fn pod_field(path: &str, pod: &Pod) -> Result<String, String> {
    if path.starts_with("status.") {
        return Err(format!("unsupported fieldRef path {path:?} in a volume"));
    }
    field_value(path, pod, None, "")
}

/// The variables every container gets for the `kubernetes` Service in `default` (what client
/// libraries read in a pod), from the address and port its Endpoints name, Docker-links style
/// as the kubelet writes them for its port `https`.
pub fn master_service_env(host: &str, port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{host}:{port}");
    let prefix = format!("KUBERNETES_PORT_{port}_TCP");
    vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), host.to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
        ("KUBERNETES_PORT".to_owned(), url.clone()),
        (prefix.clone(), url),
        (format!("{prefix}_PROTO"), "tcp".to_owned()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_ADDR"), host.to_owned()),
    ]
}

fn field_value(
    path: &str,
    pod: &Pod,
    pod_ip: Option<&str>,
    host_ip: &str,
) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip.unwrap_or_default().to_owned(),
        "status.hostIP" => host_ip.to_owned(),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|rest| rest.strip_suffix("']"))
                .map(|key| {
                    meta.labels
                        .as_ref()
                        .and_then(|labels| labels.get(key))
                        .cloned()
                });
            let annotation = other
                .strip_prefix("metadata.annotations['")
                .and_then(|rest| rest.strip_suffix("']"))
                .map(|key| {
                    meta.annotations
                        .as_ref()
                        .and_then(|annotations| annotations.get(key))
                        .cloned()
                });
            match label.or(annotation) {
                Some(value) => value.unwrap_or_default(),
                None => return Err(format!("unsupported fieldRef path {other:?}")),
            }
        }
    })
}

/// The resolved environment, in order, or the CreateContainerConfigError message.
pub fn resolve_env(
    container: &Container,
    pod: &Pod,
    pod_ip: Option<&str>,
    host_ip: &str,
    secrets: &HashMap<String, Secret>,
    config_maps: &HashMap<String, ConfigMap>,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let set = |vars: &mut BTreeMap<String, String>,
               order: &mut Vec<String>,
               name: String,
               value: String| {
        if !order.contains(&name) {
            order.push(name.clone());
        }
        vars.insert(name, value);
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.secret_ref {
            match secrets.get(&reference.name) {
                Some(secret) => {
                    let keys: Vec<String> = secret
                        .data
                        .iter()
                        .flatten()
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in keys {
                        if let Some(value) = secret_value(secret, &key) {
                            set(&mut vars, &mut order, format!("{prefix}{key}"), value?);
                        }
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", reference.name)),
            }
        }
        if let Some(reference) = &source.config_map_ref {
            match config_maps.get(&reference.name) {
                Some(config_map) => {
                    for (key, value) in config_map.data.iter().flatten() {
                        set(
                            &mut vars,
                            &mut order,
                            format!("{prefix}{key}"),
                            value.clone(),
                        );
                    }
                }
                None if reference.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", reference.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(key) = &source.secret_key_ref {
                let optional = key.optional == Some(true);
                match secrets.get(&key.name) {
                    None if optional => continue,
                    None => return Err(format!("secret \"{}\" not found", key.name)),
                    Some(secret) => match secret_value(secret, &key.key) {
                        Some(value) => value?,
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}",
                                key.key, key.name
                            ));
                        }
                    },
                }
            } else if let Some(key) = &source.config_map_key_ref {
                let optional = key.optional == Some(true);
                match config_maps.get(&key.name) {
                    None if optional => continue,
                    None => return Err(format!("configmap \"{}\" not found", key.name)),
                    Some(config_map) => match config_map_value(config_map, &key.key) {
                        Some(value) => value,
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}",
                                key.key, key.name
                            ));
                        }
                    },
                }
            } else if let Some(field) = &source.field_ref {
                field_value(&field.field_path, pod, pod_ip, host_ip)?
            } else {
                return Err(format!(
                    "env var {} uses a valueFrom source the sandbox does not support",
                    var.name
                ));
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &vars)
        };
        set(&mut vars, &mut order, var.name.clone(), value);
    }
    if let Some(name) = secret_on_command_line(container, secrets) {
        return Err(format!(
            "command or args of container {} expand $({name}), which comes from a Secret; the sandbox never puts secret values on a command line: read {name} from the environment instead",
            container.name
        ));
    }
    let mut resolved = Vec::with_capacity(order.len());
    for name in order {
        let value = vars.remove(&name).unwrap_or_default();
        if value.contains('\n') {
            return Err(format!(
                "env var {name} holds a multi-line value, which the sandbox kubelet cannot pass to Docker; mount it as a file instead"
            ));
        }
        resolved.push((name, value));
    }
    Ok(resolved)
}

/// The `$(NAME)` references in a string (`$$(` escapes are not references).
pub fn references(input: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = input;
    while let Some(position) = rest.find('$') {
        let after = &rest[position + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            found.push(inner[..end].to_owned());
            rest = &inner[end + 1..];
        } else {
            rest = after;
        }
    }
    found
}

/// The first Secret-backed variable (directly, through `envFrom`, or through another variable's
/// `$(…)`) that the container's command or args would expand, if any: expanding it would put a
/// secret into the argv of `docker create`.
pub fn secret_on_command_line(
    container: &Container,
    secrets: &HashMap<String, Secret>,
) -> Option<String> {
    let mut secret_backed: Vec<String> = Vec::new();
    for source in container.env_from.iter().flatten() {
        if let Some(reference) = &source.secret_ref
            && let Some(secret) = secrets.get(&reference.name)
        {
            let prefix = source.prefix.clone().unwrap_or_default();
            for key in secret.data.iter().flatten().map(|(key, _)| key) {
                secret_backed.push(format!("{prefix}{key}"));
            }
        }
    }
    for var in container.env.iter().flatten() {
        let from_secret = var
            .value_from
            .as_ref()
            .is_some_and(|source| source.secret_key_ref.is_some());
        let through = var.value.as_deref().is_some_and(|value| {
            references(value)
                .iter()
                .any(|name| secret_backed.contains(name))
        });
        if from_secret || through {
            secret_backed.push(var.name.clone());
        }
    }
    container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .flat_map(|item| references(item))
        .find(|name| secret_backed.contains(name))
}

/// Expands `$(VAR)` in command and args against the resolved environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    items.iter().map(|item| expand(item, &vars)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: None,
            value_from: Some(source),
        }
    }

    fn secret_ref(secret: &str, key: &str, optional: bool) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(optional),
            }),
            ..EnvVarSource::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".to_owned()),
                namespace: Some("shop".to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn secrets() -> HashMap<String, Secret> {
        let secret = Secret {
            data: Some(
                [(
                    "DATABASE_URL".to_owned(),
                    ByteString(b"postgres://x".to_vec()),
                )]
                .into(),
            ),
            ..Secret::default()
        };
        [("app-secrets".to_owned(), secret)].into()
    }

    #[test]
    fn literal_field_secret_and_config_map_values_resolve_in_order_with_expansion() {
        let container = Container {
            env: Some(vec![
                var("PORT", "8080"),
                var("ADDR", "0.0.0.0:$(PORT)"),
                var("ESCAPED", "$$(PORT)"),
                from(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".to_owned(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                from(
                    "IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".to_owned(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                from(
                    "DATABASE_URL",
                    secret_ref("app-secrets", "DATABASE_URL", false),
                ),
                from(
                    "LEVEL",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "app-config".to_owned(),
                            key: "level".to_owned(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                from("MAYBE", secret_ref("absent", "x", true)),
            ]),
            ..Container::default()
        };
        let config_maps: HashMap<String, ConfigMap> = [(
            "app-config".to_owned(),
            ConfigMap {
                data: Some([("level".to_owned(), "debug".to_owned())].into()),
                ..ConfigMap::default()
            },
        )]
        .into();
        let env = resolve_env(
            &container,
            &pod(),
            Some("10.1.0.5"),
            "10.1.0.1",
            &secrets(),
            &config_maps,
        )
        .expect("resolves");
        let expected: Vec<(String, String)> = [
            ("PORT", "8080"),
            ("ADDR", "0.0.0.0:8080"),
            ("ESCAPED", "$(PORT)"),
            ("POD", "web-1"),
            ("IP", "10.1.0.5"),
            ("DATABASE_URL", "postgres://x"),
            ("LEVEL", "debug"),
        ]
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
        assert_eq!(env, expected);
        assert_eq!(
            referenced_objects(&container),
            (
                vec!["absent".to_owned(), "app-secrets".to_owned()],
                vec!["app-config".to_owned()]
            )
        );
        assert_eq!(
            expand_all(&["--port=$(PORT)".to_owned()], &env),
            vec!["--port=8080".to_owned()]
        );
    }

    #[test]
    fn missing_secret_or_key_is_a_config_error_naming_it() {
        let container = Container {
            env: Some(vec![from("X", secret_ref("nope", "k", false))]),
            ..Container::default()
        };
        let error = resolve_env(&container, &pod(), None, "h", &secrets(), &HashMap::new())
            .expect_err("missing secret");
        assert_eq!(error, "secret \"nope\" not found");
        let container = Container {
            env: Some(vec![from("X", secret_ref("app-secrets", "API_KEY", false))]),
            ..Container::default()
        };
        let error = resolve_env(&container, &pod(), None, "h", &secrets(), &HashMap::new())
            .expect_err("missing key");
        assert_eq!(error, "couldn't find key API_KEY in Secret app-secrets");
    }

    #[test]
    fn secrets_are_never_expanded_onto_the_command_line() {
        let container = Container {
            name: "main".to_owned(),
            env: Some(vec![
                from(
                    "DATABASE_URL",
                    secret_ref("app-secrets", "DATABASE_URL", false),
                ),
                var("DSN", "$(DATABASE_URL)?sslmode=disable"),
                var("PORT", "8080"),
            ]),
            args: Some(vec!["--port=$(PORT)".to_owned(), "--dsn=$(DSN)".to_owned()]),
            ..Container::default()
        };
        let error = resolve_env(&container, &pod(), None, "h", &secrets(), &HashMap::new())
            .expect_err("refused");
        assert!(
            error.contains("$(DSN)") && !error.contains("postgres://"),
            "{error}"
        );
        let mut fine = container.clone();
        fine.args = Some(vec![
            "--port=$(PORT)".to_owned(),
            "--escaped=$$(DSN)".to_owned(),
        ]);
        assert!(resolve_env(&fine, &pod(), None, "h", &secrets(), &HashMap::new()).is_ok());
        assert_eq!(references("a $(X) $$(Y) $(Z"), vec!["X".to_owned()]);
    }

    #[test]
    fn multi_line_values_are_refused_without_echoing_them() {
        let container = Container {
            env: Some(vec![var("PEM", "line1\nline2")]),
            ..Container::default()
        };
        let error = resolve_env(
            &container,
            &pod(),
            None,
            "h",
            &HashMap::new(),
            &HashMap::new(),
        )
        .expect_err("refused");
        assert!(error.contains("PEM") && !error.contains("line1"), "{error}");
    }

    #[test]
    fn the_kubernetes_service_variables_name_the_advertised_address() {
        let env = master_service_env("172.18.0.1", 32443);
        let get = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("172.18.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("32443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("32443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://172.18.0.1:32443"));
        assert_eq!(get("KUBERNETES_PORT_32443_TCP_ADDR"), Some("172.18.0.1"));
        assert_eq!(get("KUBERNETES_PORT_32443_TCP_PROTO"), Some("tcp"));
    }
}
