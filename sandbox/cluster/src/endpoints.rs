//! Pure Endpoints computation for a Service: the IPs of the pods it selects (ready ones as
//! addresses, others as notReadyAddresses) with the Service's target ports resolved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::replicaset::is_ready;
use crate::selector::map_selector_matches;

/// (name, port, protocol) of a Service port resolved against one pod.
type ResolvedPort = (String, i32, String);

/// Resolves a Service port's targetPort against a pod: numbers as they are, names through the
/// pod's container ports. `None` when a named port does not exist in the pod.
fn resolve_target_port(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|container| container.ports.iter().flatten())
            .find(|container_port| container_port.name.as_deref() == Some(name.as_str()))
            .map(|container_port| container_port.container_port),
    }
}

/// The Endpoints object for `service` given every pod in its namespace, or `None` for a Service
/// without a selector (whose Endpoints are managed by hand).
pub fn endpoints_for(service: &Service, pods: &[Pod]) -> Option<Endpoints> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref()?;
    let service_ports = spec.ports.clone().unwrap_or_default();
    // Pods whose resolved ports differ land in different subsets, as in the real controller.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|pod| {
            pod.metadata.namespace == service.metadata.namespace
                && pod.metadata.deletion_timestamp.is_none()
                && map_selector_matches(selector, pod.metadata.labels.as_ref())
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in selected {
        let Some(ip) = pod.status.as_ref().and_then(|status| status.pod_ip.clone()) else {
            continue;
        };
        let ports: Vec<ResolvedPort> = service_ports
            .iter()
            .filter_map(|port| {
                let number = resolve_target_port(port.target_port.as_ref(), port.port, pod)?;
                Some((
                    port.name.clone().unwrap_or_default(),
                    number,
                    port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                ))
            })
            .collect();
        if ports.is_empty() && !service_ports.is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip,
            node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            hostname: None,
        };
        let entry = subsets.entry(ports).or_default();
        if is_ready(pod) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: (!name.is_empty()).then_some(name),
                        port,
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    Some(Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    })
}

/// Whether two Endpoints carry the same addresses and ports (metadata aside).
pub fn same_subsets(a: &Endpoints, b: &Endpoints) -> bool {
    serde_json::to_value(&a.subsets).ok() == serde_json::to_value(&b.subsets).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn mk_pod(name: &str, ip: Option<&str>, ready: bool, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".to_owned(),
                    ports: Some(vec![ContainerPort {
                        name: Some("metrics".to_owned()),
                        container_port: 8002,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn ready_pods_are_addresses_others_not_ready_and_named_ports_resolve() {
        let service = Service {
            metadata: ObjectMeta {
                name: Some("poller-metrics".to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_owned(), "poller".to_owned())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("metrics".to_owned()),
                    port: 8002,
                    target_port: Some(IntOrString::String("metrics".to_owned())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let pods = vec![
            mk_pod("a", Some("10.0.0.2"), true, "poller"),
            mk_pod("b", Some("10.0.0.3"), false, "poller"),
            mk_pod("c", None, true, "poller"),
            mk_pod("d", Some("10.0.0.4"), true, "other"),
        ];
        let endpoints = endpoints_for(&service, &pods).expect("selector service has endpoints");
        let subsets = endpoints.subsets.expect("one subset");
        assert_eq!(subsets.len(), 1);
        let ips = |addresses: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            addresses
                .iter()
                .flatten()
                .map(|address| address.ip.clone())
                .collect()
        };
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.3"]);
        let port = &subsets[0].ports.as_ref().expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 8002));

        let mut no_selector = service.clone();
        if let Some(spec) = no_selector.spec.as_mut() {
            spec.selector = None;
        }
        assert!(endpoints_for(&no_selector, &pods).is_none());
    }
}
