#!/usr/bin/env python3
"""Writes `src/protobuf_schema.json`, the table `protobuf.rs` decodes Kubernetes protobuf with.

kube-apiserver decodes a protobuf body into the Go type and serves it as JSON. The sandbox keeps
JSON only, so it needs, for every message reachable from the kinds it serves: each field's tag,
wire type and JSON name. Tags and types come from the `k8s-pb` crate (prost code generated from
Kubernetes' generated.proto), JSON names and whether a field is required from `k8s-openapi`
(generated from the OpenAPI schema), both at the versions in Cargo.lock.

Run from the repository root after bumping either crate:
    python3 sandbox/apiserver/tools/protobuf_schema.py
"""

import json
import os
import re
import subprocess
import sys

# The release the sandbox reports (`KUBERNETES_VERSION`). k8s-pb follows a newer one: fields that
# release does not have are left out of the table, so they are skipped like any unknown tag, as
# a 1.33 kube-apiserver's Go types skip them.
KUBERNETES_MINOR = "v1_33"

# group/version/Kind of everything the sandbox decodes (built-in kinds it serves, their
# subresource bodies, the reviews, and DeleteOptions).
KINDS = [
    ("v1", "Pod"), ("v1", "Service"), ("v1", "Endpoints"), ("v1", "Secret"),
    ("v1", "ConfigMap"), ("v1", "Event"), ("v1", "ServiceAccount"), ("v1", "Namespace"),
    ("v1", "Node"), ("v1", "Binding"), ("v1", "PodTemplate"),
    ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"),
    ("autoscaling/v1", "Scale"),
    ("coordination.k8s.io/v1", "Lease"),
    ("events.k8s.io/v1", "Event"),
    ("policy/v1", "PodDisruptionBudget"), ("policy/v1", "Eviction"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
    ("authentication.k8s.io/v1", "SelfSubjectReview"),
    ("authentication.k8s.io/v1", "TokenRequest"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("meta.k8s.io/v1", "DeleteOptions"),
]

# Go packages whose proto module path differs from the API group.
GROUP_MODULE = {
    "": "api.core", "apps": "api.apps", "autoscaling": "api.autoscaling",
    "coordination.k8s.io": "api.coordination", "events.k8s.io": "api.events",
    "policy": "api.policy", "networking.k8s.io": "api.networking",
    "rbac.authorization.k8s.io": "api.rbac", "authorization.k8s.io": "api.authorization",
    "authentication.k8s.io": "api.authentication",
    "apiextensions.k8s.io": "apiextensions_apiserver.pkg.apis.apiextensions",
    "meta.k8s.io": "apimachinery.pkg.apis.meta",
}

# Messages Go marshals to JSON by hand rather than field by field.
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "raw_json",
    "apimachinery.pkg.runtime.RawExtension": "raw_json",
    "apimachinery.pkg.util.intstr.IntOrString": "int_or_string",
    "apimachinery.pkg.api.resource.Quantity": "quantity",
    "apimachinery.pkg.apis.meta.v1.Verbs": "items",
    "api.authentication.v1.ExtraValue": "items",
    "api.authorization.v1.ExtraValue": "items",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json": "raw_json",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray": "schema_or_array",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool": "schema_or_bool",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray": "schema_or_strings",
}


def crate_dirs():
    metadata = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"]))
    dirs = {}
    for package in metadata["packages"]:
        if package["name"] in ("k8s-pb", "k8s-openapi"):
            dirs[package["name"]] = os.path.dirname(package["manifest_path"])
    return dirs


PROST = re.compile(r"#\[prost\((?P<args>[^\]]*)\)\]\s*pub (?:r#)?(?P<field>\w+):\s*(?P<ty>.*?),\s*\n(?=\s*(?:///|#\[|\Z))", re.S)


def resolve(module, path):
    """Resolves a prost type path (`super::super::core::v1::PodSpec`) against `module`."""
    path = re.sub(r"\s+", "", path)
    parts = module.split(".")
    segments = path.split("::")
    if segments[0] == "crate":
        return ".".join(segments[1:])
    while segments and segments[0] == "super":
        parts = parts[:-1]
        segments = segments[1:]
    return ".".join(parts + segments)


def inner_type(ty):
    ty = re.sub(r"\s+", "", ty).replace(",>", ">")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper):-1]
    if ty.startswith("::prost::alloc::collections::BTreeMap<"):
        ty = ty[len("::prost::alloc::collections::BTreeMap<"):-1].split(",", 1)[1]
    return ty


def parse_prost(root):
    messages = {}
    for directory, _, files in os.walk(os.path.join(root, "src")):
        if "mod.rs" not in files:
            continue
        module = os.path.relpath(directory, os.path.join(root, "src")).replace(os.sep, ".")
        text = open(os.path.join(directory, "mod.rs")).read()
        for match in re.finditer(r"pub struct (\w+) \{(?:\}|(.*?)\n\})", text, re.S):
            name, body = match.group(1), (match.group(2) or "") + "\n"
            fields = []
            for field in PROST.finditer(body):
                args = field.group("args")
                tag = int(re.search(r'tag = "(\d+)"', args).group(1))
                map_match = re.search(r'btree_map = "string, (\w+)"', args)
                if map_match:
                    kind, cardinality = map_match.group(1), "map"
                else:
                    kind = args.split(",")[0].split("=")[0].strip()
                    cardinality = "repeated" if "repeated" in args else "one"
                reference = None
                if kind == "message":
                    reference = resolve(module, inner_type(field.group("ty")))
                fields.append({"rust": field.group("field"), "tag": tag, "kind": kind,
                               "cardinality": cardinality, "message": reference})
            messages[f"{module}.{name}"] = fields
    return messages


def parse_openapi(root):
    """Per struct (module path + name): Rust field name -> (JSON name, required)."""
    base = os.path.join(root, "src", KUBERNETES_MINOR)
    structs = {}
    for directory, _, files in os.walk(base):
        module = os.path.relpath(directory, base).replace(os.sep, ".")
        for file in files:
            if file == "mod.rs":
                continue
            text = open(os.path.join(directory, file)).read()
            struct = re.search(r"pub struct (\w+) \{(.*?)\n\}", text, re.S)
            if not struct:
                continue
            optional = {}
            for field in re.finditer(r"pub (?:r#)?(\w+): (.*?),\n", struct.group(2)):
                optional[field.group(1)] = field.group(2).startswith("Option<")
            names = {}
            for key in re.finditer(r'"([\w$-]+)" => Field::Key_(\w+),', text):
                rust = key.group(2)
                names[rust] = (key.group(1), not optional.get(rust, True))
            # Struct names are matched case-insensitively: k8s-pb spells `JsonSchemaProps`
            # where k8s-openapi keeps Go's `JSONSchemaProps`.
            structs[f"{module}.{struct.group(1)}".lower()] = names
    return structs


def normalized(name):
    return re.sub(r"[_$-]", "", name.replace("r#", "")).lower()


def main():
    dirs = crate_dirs()
    prost = parse_prost(dirs["k8s-pb"])
    openapi = parse_openapi(dirs["k8s-openapi"])
    kinds = {}
    pending = []
    for api_version, kind in KINDS:
        group, version = api_version.rsplit("/", 1) if "/" in api_version else ("", api_version)
        message = f"{GROUP_MODULE[group]}.{version}.{kind}"
        if message not in prost:
            sys.exit(f"k8s-pb has no message {message}")
        kinds[f"{api_version}/{kind}"] = message
        pending.append(message)
    schema = {}
    skipped = []
    inline_names = {}
    while pending:
        message = pending.pop()
        if message in schema:
            continue
        if message in SPECIAL:
            # Read by tag; the JSON is written by hand (`special_json` in protobuf.rs).
            fields = []
            for field in prost[message]:
                entry = [field["tag"], field["rust"], field["kind"], field["cardinality"], False]
                if field["message"]:
                    entry.append(field["message"])
                    pending.append(field["message"])
                fields.append(entry)
            schema[message] = {"special": SPECIAL[message], "fields": sorted(fields)}
            continue
        names = openapi.get(message.lower(), inline_names.get(message))
        if names is None and not prost[message]:
            names = {}
        if names is None:
            sys.exit(f"k8s-openapi has no struct for {message}")
        by_normalized = {normalized(json_name): (json_name, required)
                         for json_name, required in names.values()}
        by_normalized.update({normalized(rust): value for rust, value in names.items()})
        fields = []
        for field in prost[message]:
            json_name, required = by_normalized.get(normalized(field["rust"]), (None, False))
            inner_fields = prost[field["message"]] if field["message"] else []
            known = [inner for inner in inner_fields if normalized(inner["rust"]) in by_normalized]
            if json_name is None and 2 * len(known) > len(inner_fields):
                # A Go struct embedded without a JSON name (`LocalObjectReference` in
                # `ConfigMapKeySelector`, `ProbeHandler` in `Probe`): its fields are the parent's.
                json_name, required = "", False
                inline_names.setdefault(field["message"], names)
            if json_name is None:
                skipped.append(f"{message}.{field['rust']}")
                continue
            entry = [field["tag"], json_name, field["kind"], field["cardinality"], required]
            if field["message"]:
                entry.append(field["message"])
                pending.append(field["message"])
            fields.append(entry)
        schema[message] = {"fields": sorted(fields)}
    out = os.path.join(os.path.dirname(__file__), "..", "src", "protobuf_schema.json")
    with open(out, "w") as handle:
        json.dump({"kinds": kinds, "messages": dict(sorted(schema.items()))}, handle,
                  indent=0, separators=(",", ":"))
        handle.write("\n")
    print(f"{len(kinds)} kinds, {len(schema)} messages -> {os.path.normpath(out)}")
    print(f"fields newer than {KUBERNETES_MINOR}, skipped: {', '.join(sorted(set(skipped)))}")


if __name__ == "__main__":
    main()
