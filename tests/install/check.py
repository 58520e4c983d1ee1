#!/usr/bin/env python3
"""Checks the installation artefacts with the ecosystem's own tools.

    check.py charts            render and lint both charts with the real Helm library
                               (helm-python-sdk), default values and values-all.yaml; validate every
                               manifest against the Kubernetes OpenAPI schemas (kubernetes-validate);
                               refuse wildcards in RBAC
    check.py checkov           checkov on the rendered manifests, the Dockerfile and the
                               CloudFormation template (skips, each justified, in .checkov.yaml)
    check.py cfn ENDPOINT      cfn-lint the template, deploy it into moto's CloudFormation at
                               ENDPOINT and check the queue, its policy and the four rules exist
    check.py rbac NAMESPACE    print the RBAC rules of the chart installed in NAMESPACE as JSON
                               (for tests/install.rs)
    check.py iam               print the IAM actions the template grants the controller as JSON

Exit status 0 when everything passes; the reason on stderr otherwise.
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHARTS = os.path.join(ROOT, "charts")
TEMPLATE = os.path.join(ROOT, "deploy", "cloudformation.yaml")
VALUES_ALL = os.path.join(os.path.dirname(__file__), "values-all.yaml")
KUBERNETES = "1.33.0"
REQUIRED = {"settings": {"clusterName": "my-cluster"}}


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def render(chart, values, namespace="dovetail"):
    import helm_python as helm

    c = helm.Chart.load(os.path.join(CHARTS, chart))
    merged = c.merge_values(values)
    c.validate_schema(merged)
    out = c.render(values, name="dovetail", namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append((path, d))
    return docs


def value_sets():
    with open(VALUES_ALL) as f:
        return [("default values", REQUIRED), ("values-all.yaml", yaml.safe_load(f))]


def charts():
    import helm_python as helm
    import kubernetes_validate

    custom_cni = dict(value_sets()[1][1], hostNetwork=True)
    for chart in ("dovetail-crd", "dovetail"):
        for label, values in value_sets() + [("values-all.yaml, hostNetwork", custom_cni)]:
            report = helm.lint(os.path.join(CHARTS, chart), values, strict=True)
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            if problems:
                fail(f"helm lint {chart} ({label}): {problems}")
            docs = render(chart, values)
            if not docs:
                fail(f"{chart} ({label}) renders nothing")
            for path, d in docs:
                kind = d.get("kind")
                if kind == "ServiceMonitor":
                    continue  # the Prometheus operator's CRD; no OpenAPI schema in kubernetes-validate
                try:
                    kubernetes_validate.validate(d, KUBERNETES, strict=True)
                except kubernetes_validate.ValidationError as e:
                    fail(f"{path} ({label}): {kind} {d['metadata'].get('name')}: {e.message} at {list(e.path)}")
                for rule in d.get("rules", []) if kind in ("ClusterRole", "Role") else []:
                    for field in ("apiGroups", "resources", "verbs"):
                        if "*" in rule.get(field, []):
                            fail(f"{path}: {kind} grants a wildcard in {field}: {rule}")
            print(f"{chart} ({label}): {len(docs)} manifests lint, render and validate against Kubernetes {KUBERNETES}")
    # A missing required value is refused with the fix.
    try:
        render("dovetail", {})
        fail("the chart renders without settings.clusterName")
    except Exception as e:  # helm_python.HelmRenderError
        if "settings.clusterName is required" not in str(e):
            fail(f"without settings.clusterName the chart fails, but says: {e}")


def checkov():
    with tempfile.TemporaryDirectory() as tmp:
        for label, values in value_sets():
            for chart in ("dovetail-crd", "dovetail"):
                name = f"{chart}-{'all' if label.startswith('values') else 'default'}.yaml"
                with open(os.path.join(tmp, name), "w") as f:
                    yaml.safe_dump_all([d for _, d in render(chart, values)], f)
        targets = [
            ["-d", tmp, "--framework", "kubernetes"],
            ["-f", os.path.join(ROOT, "Dockerfile"), "--framework", "dockerfile"],
            ["-f", TEMPLATE, "--framework", "cloudformation"],
        ]
        for t in targets:
            out = subprocess.run(
                ["checkov", *t, "--config-file", os.path.join(ROOT, ".checkov.yaml"), "-o", "json", "--skip-download", "--compact"],
                capture_output=True, text=True, cwd=ROOT,
            )
            try:
                reports = json.loads(out.stdout)
            except json.JSONDecodeError:
                fail(f"checkov {t}: no report: {out.stderr[-2000:]}")
            reports = reports if isinstance(reports, list) else [reports]
            resources = 0
            for r in reports:
                if "results" not in r:
                    continue
                resources += r["summary"]["resource_count"]
                failed = r["results"]["failed_checks"]
                if failed:
                    fail("checkov: " + "; ".join(f"{c['check_id']} {c['check_name']} ({c['resource']}, {c.get('file_path')})" for c in failed))
            if resources == 0:
                fail(f"checkov {t}: it checked nothing")
            print(f"checkov {t[1] if t[0] == '-f' else 'rendered charts'}: {resources} resources, no failed check")


def cfn(endpoint):
    out = subprocess.run(["cfn-lint", TEMPLATE], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"cfn-lint: {out.stdout}{out.stderr}")
    import boto3

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    cf = boto3.client("cloudformation", **kw)
    with open(TEMPLATE) as f:
        body = f.read()
    cf.create_stack(StackName="dovetail-my-cluster", TemplateBody=body,
                    Parameters=[{"ParameterKey": "ClusterName", "ParameterValue": "my-cluster"}],
                    Capabilities=["CAPABILITY_NAMED_IAM"])
    stack = cf.describe_stacks(StackName="dovetail-my-cluster")["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        fail(f"stack: {stack['StackStatus']}: {stack.get('StackStatusReason')}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    url = outputs.get("InterruptionQueueUrl", "")
    if not url.endswith("/dovetail-my-cluster") or outputs.get("InterruptionQueueName") != "dovetail-my-cluster":
        fail(f"the queue outputs (URL, and the name the chart takes): {outputs}")
    sqs = boto3.client("sqs", **kw)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    # moto does not model AWS::SQS::QueuePolicy (the stack creates, the queue has no policy), so
    # the policy is checked in the template: EventBridge may send to the queue.
    with open(TEMPLATE) as f:
        policy = yaml.load(f, Loader=Tagged)["Resources"]["InterruptionQueuePolicy"]["Properties"]["PolicyDocument"]
    if not any(st["Effect"] == "Allow" and st["Action"] == "sqs:SendMessage"
               and "events.amazonaws.com" in st["Principal"]["Service"] for st in policy["Statement"]):
        fail(f"the queue policy does not let EventBridge send: {policy}")
    events = boto3.client("events", **kw)
    rules = events.list_rules()["Rules"]
    kinds = set()
    for r in rules:
        targets = events.list_targets_by_rule(Rule=r["Name"])["Targets"]
        if any(t["Arn"] == attrs["QueueArn"] for t in targets):
            kinds.update(json.loads(r["EventPattern"])["detail-type"])
    want = {"AWS Health Event", "EC2 Spot Instance Interruption Warning",
            "EC2 Instance Rebalance Recommendation", "EC2 Instance State-change Notification"}
    if kinds != want:
        fail(f"rules targeting the queue: {sorted(kinds)}, want {sorted(want)}")
    iam = boto3.client("iam", **kw)
    role = iam.get_role(RoleName="DovetailNodeRole-my-cluster")["Role"]
    print(f"cfn-lint clean; the stack deploys into moto: queue {url}, {len(kinds)} rules, node role {role['RoleName']}")


def rbac(namespace):
    """The rules of the chart installed in `namespace`, each with its kind and, for a Role, the
    namespace it grants in."""
    rules = []
    for _, d in render("dovetail", REQUIRED, namespace):
        if d["kind"] in ("ClusterRole", "Role"):
            for r in d["rules"]:
                rules.append({"kind": d["kind"], "namespace": d["metadata"].get("namespace"), **r})
    print(json.dumps(rules))


class Tagged(yaml.SafeLoader):
    pass


Tagged.add_multi_constructor("!", lambda loader, suffix, node: None)


def iam():
    with open(TEMPLATE) as f:
        t = yaml.load(f, Loader=Tagged)
    actions = set()
    for s in t["Resources"]["ControllerPolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        a = s["Action"]
        actions.update([a] if isinstance(a, str) else a)
    print(json.dumps(sorted(actions)))


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    cmd = sys.argv[1]
    if cmd == "charts":
        charts()
    elif cmd == "checkov":
        checkov()
    elif cmd == "cfn":
        cfn(sys.argv[2])
    elif cmd == "rbac":
        rbac(sys.argv[2])
    elif cmd == "iam":
        iam()
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
