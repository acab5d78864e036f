//! A pod's ServiceAccount credentials as a real cluster provides them: the ServiceAccount
//! admission adds the projected volume `kube-api-access-*`, the kubelet mounts `token`,
//! `ca.crt` and `namespace` at /var/run/secrets/kubernetes.io/serviceaccount and sets
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, and a real kubectl inside the pod (no kubeconfig) reaches
//! the API server over TLS as `system:serviceaccount:NS:NAME`. The token is bound to the pod:
//! once the pod is gone the API server refuses it. `automountServiceAccountToken: false` on the
//! ServiceAccount leaves pods without the volume unless the pod asks for it.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{Namespace, eventually, sandbox};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// busybox and the sandbox's kubectl on the base image.
fn kubectl_image() -> String {
    let sandbox = sandbox();
    sandbox.busybox_image_with(
        "kubectl",
        "1",
        &[(sandbox.kubectl.as_path(), "/usr/local/bin/kubectl")],
    )
}

fn log(namespace: &Namespace<'_>, pod: &str) -> String {
    namespace.kubectl(&["logs", pod]).stdout
}

#[test]
fn a_pod_reaches_the_api_server_as_its_service_account_until_it_is_deleted() {
    let sandbox = sandbox();
    let image = kubectl_image();
    let namespace = sandbox.namespace("sa-token");
    let ns = namespace.name.clone();
    namespace
        .kubectl(&["create", "serviceaccount", "reader"])
        .ok("create serviceaccount");
    namespace
        .kubectl(&[
            "create",
            "rolebinding",
            "reader-view",
            "--clusterrole=view",
            &format!("--serviceaccount={ns}:reader"),
        ])
        .ok("create rolebinding");
    let script = format!(
        "echo namespace=$(cat {MOUNT}/namespace); \
         echo ca=$(sha256sum {MOUNT}/ca.crt | cut -d' ' -f1); \
         echo token-bytes=$(wc -c < {MOUNT}/token); \
         echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT; \
         echo whoami=$(kubectl auth whoami -o jsonpath='{{.status.userInfo.username}}'); \
         kubectl get pods -o name; \
         kubectl get secrets 2>&1 | tail -n 1; \
         echo done; sleep 3600"
    );
    namespace.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\nspec:\n  serviceAccountName: reader\n  containers:\n    - name: main\n      image: {image}\n      command: [\"/bin/sh\", \"-c\", {script:?}]\n"
    ));

    // What admission wrote into the pod.
    let pod = namespace.get_json(&["get", "pod", "probe"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "reader");
    assert_eq!(pod["spec"]["serviceAccount"], "reader");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .and_then(|volumes| {
            volumes.iter().find(|volume| {
                volume["name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("kube-api-access-"))
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no kube-api-access volume: {pod:#}"));
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0],
        serde_json::json!({ "name": volume["name"], "readOnly": true, "mountPath": MOUNT })
    );

    let output = eventually("the probe's report", Duration::from_secs(120), || {
        let text = log(&namespace, "probe");
        if text.contains("done") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let ca = std::fs::read(sandbox.state.join("secrets/api-ca.crt")).expect("the sandbox CA");
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sandbox.state.join("sandbox.json")).expect("sandbox.json"),
    )
    .expect("sandbox.json parses");
    let gateway = std::fs::read_to_string(sandbox.state.join("gateway")).expect("the gateway");
    for expected in [
        format!("namespace={ns}\n"),
        format!("ca={}\n", hex::encode(Sha256::digest(&ca))),
        format!("host={} port={}\n", gateway.trim(), settings["api_port"]),
        format!("whoami=system:serviceaccount:{ns}:reader\n"),
        "pod/probe\n".to_owned(),
        format!(
            "secrets is forbidden: User \"system:serviceaccount:{ns}:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        ),
    ] {
        assert!(
            output.contains(&expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    assert!(!output.contains("token-bytes=0\n"), "{output}");

    // The token as the kubelet wrote it (never printed): valid while the pod exists.
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let token_path = sandbox
        .state
        .join("kubelet/pods")
        .join(uid)
        .join("volumes/kubernetes.io~projected")
        .join(volume["name"].as_str().expect("volume name"))
        .join("token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", token_path.display()));
    let status = |token: &str| {
        let output =
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    "-H",
                    "@-",
                    &format!("{}/api/v1/namespaces/{ns}/pods", sandbox.api_url),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().expect("stdin").write_all(
                        format!("Authorization: Bearer {}\n", token.trim()).as_bytes(),
                    )?;
                    child.wait_with_output()
                })
                .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(status(&token), "200");
    namespace
        .kubectl(&["delete", "pod", "probe", "--wait=true", "--timeout=60s"])
        .ok("delete the pod");
    eventually(
        "the bound token refused",
        Duration::from_secs(30),
        || match status(&token).as_str() {
            "401" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
    assert!(
        !token_path.exists(),
        "the kubelet left the volume behind: {}",
        token_path.display()
    );
}

#[test]
fn automount_is_off_for_the_service_account_unless_the_pod_asks() {
    let sandbox = sandbox();
    let image = sandbox.busybox_image("1");
    let namespace = sandbox.namespace("sa-automount");
    namespace.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: quiet\nautomountServiceAccountToken: false\n",
    );
    let pod = |name: &str, automount: Option<bool>| {
        let line = automount
            .map(|value| format!("  automountServiceAccountToken: {value}\n"))
            .unwrap_or_default();
        namespace.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  serviceAccountName: quiet\n{line}  containers:\n    - name: main\n      image: {image}\n      command: [\"/bin/sh\", \"-c\", \"ls {MOUNT} 2>&1; sleep 3600\"]\n"
        ));
        namespace.get_json(&["get", "pod", name])
    };
    let has_volume = |pod: &serde_json::Value| {
        pod["spec"]["volumes"].as_array().is_some_and(|volumes| {
            volumes.iter().any(|volume| {
                volume["name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("kube-api-access-"))
            })
        })
    };
    assert!(!has_volume(&pod("inherits", None)));
    assert!(has_volume(&pod("asks", Some(true))));
    let listing = eventually("the pod's listing", Duration::from_secs(90), || {
        let text = log(&namespace, "inherits");
        if text.is_empty() { Err(text) } else { Ok(text) }
    });
    assert!(listing.contains("No such file or directory"), "{listing}");

    // A pod naming a ServiceAccount that does not exist is refused, as admission refuses it.
    let refused = namespace.sandbox.kubectl_stdin(
        &["-n", &namespace.name, "apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ghost\nspec:\n  serviceAccountName: ghost\n  containers:\n    - name: main\n      image: {image}\n"
        ),
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&format!(
            "pods \"ghost\" is forbidden: error looking up service account {}/ghost: serviceaccount \"ghost\" not found",
            namespace.name
        )),
        "{}",
        refused.stderr
    );
}
