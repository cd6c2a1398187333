#!/usr/bin/env python3
"""Schema validation of dubfarm's deployment files, for Tests/DeployTests (run with the repository's
.venv python: `make py-deps` installs tools/requirements-check.txt there).

    validate.py kubernetes [--kubernetes-version 1.31.0] FILE...   (multi-document YAML; - is stdin)
    validate.py compose FILE

kubernetes: every document against the Kubernetes JSON schema of that version, strict (a field the
API does not define is an error), by kubernetes-validate; KEDA's kinds (keda.sh) against the
openAPIV3Schema of KEDA's own CRDs (schemas/, see README.md), made strict the same way, with
metadata checked as Kubernetes' ObjectMeta. A kind with no schema is an error, not a warning.
compose: the file against the Compose Specification's JSON schema (schemas/compose-spec.json).

Prints one line per document (OK or ERROR with the path in the document and the reason); exits 1
when any document fails, 2 on a usage or input error.
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KEDA_VERSION = "2.20.2"
KEDA_CRDS = {
    "ScaledObject": SCHEMAS / f"keda-{KEDA_VERSION}-scaledobjects.yaml",
    "TriggerAuthentication": SCHEMAS / f"keda-{KEDA_VERSION}-triggerauthentications.yaml",
}
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = DEFINITIONS_ID + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def load_documents(name):
    text = sys.stdin.read() if name == "-" else Path(name).read_text()
    return [d for d in yaml.safe_load_all(text) if d is not None]


def strict(schema):
    """An OpenAPI v3 structural schema as a strict JSON schema: objects with declared properties
    refuse others (as `kubectl apply` with strict field validation does), unless the schema keeps
    unknown fields or declares additionalProperties itself."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def keda_validator(kind, api_version, definitions):
    crd = yaml.safe_load(KEDA_CRDS[kind].read_text())
    group, _, version = api_version.partition("/")
    if crd["spec"]["group"] != group:
        raise LookupError(f"{api_version}: KEDA's CRD is of group {crd['spec']['group']}")
    served = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served", True)]
    if not served:
        raise LookupError(f"{api_version}: KEDA {KEDA_VERSION} serves no version {version} of {kind}")
    schema = strict(copy.deepcopy(served[0]["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    registry = Registry().with_resource(DEFINITIONS_ID, Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors_text(errors):
    return "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(document)'}: {e.message}" for e in errors)


def validate_kubernetes(files, version):
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    failed = 0
    for name in files:
        for doc in load_documents(name):
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                print(f"ERROR {name}: a document without apiVersion and kind")
                failed += 1
                continue
            what = f"{name}: {doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
            try:
                if doc["apiVersion"].split("/")[0] == "keda.sh":
                    if doc["kind"] not in KEDA_CRDS:
                        raise LookupError(f"no KEDA schema for kind {doc['kind']}")
                    errors = sorted(keda_validator(doc["kind"], doc["apiVersion"], definitions).iter_errors(doc),
                                    key=lambda e: list(e.absolute_path))
                    if errors:
                        raise ValueError(errors_text(errors))
                    print(f"OK {what} (KEDA {KEDA_VERSION} CRD schema)")
                else:
                    got = kubernetes_validate.validate(doc, version, strict=True)
                    print(f"OK {what} (Kubernetes {got}, strict)")
            except kv.ValidationError as e:
                print(f"ERROR {what}: {'.'.join(str(p) for p in e.path) or '(document)'}: {e.message}")
                failed += 1
            except (kv.SchemaNotFoundError, LookupError) as e:
                print(f"ERROR {what}: no schema: {getattr(e, 'message', e)}")
                failed += 1
            except ValueError as e:
                print(f"ERROR {what}: {e}")
                failed += 1
    return failed


def validate_compose(name):
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    docs = load_documents(name)
    if len(docs) != 1:
        print(f"ERROR {name}: a compose file is one YAML document, found {len(docs)}")
        return 1
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(docs[0]), key=lambda e: list(e.absolute_path))
    if errors:
        for e in errors:
            print(f"ERROR {name}: {'.'.join(str(p) for p in e.absolute_path) or '(document)'}: {e.message}")
        return 1
    print(f"OK {name} (compose-spec schema)")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kubernetes")
    k.add_argument("--kubernetes-version", default="1.31.0")
    k.add_argument("files", nargs="+")
    c = sub.add_parser("compose")
    c.add_argument("file")
    args = parser.parse_args()
    try:
        failed = validate_kubernetes(args.files, args.kubernetes_version) if args.what == "kubernetes" \
            else validate_compose(args.file)
    except (OSError, yaml.YAMLError) as e:
        print(f"ERROR {e}")
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
