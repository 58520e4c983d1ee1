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
    check.py guide             render every `helm` command of docs/install.md (variables set to test
                               values) and validate what it installs
    check.py karpenter         Karpenter's getting-started `--set` flags, renamed by the table in
                               charts/README.md, install; the names without an equivalent are
                               refused by the schema, not ignored
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
    # Recreate takes no rollingUpdate (the API refuses both), whatever the defaults hold.
    docs = render("dovetail", {**REQUIRED, "strategy": {"type": "Recreate"}})
    validate("strategy Recreate", docs)
    if [d for _, d in docs if d["kind"] == "Deployment"][0]["spec"]["strategy"] != {"type": "Recreate"}:
        fail("strategy.type Recreate renders with rollingUpdate")
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


GUIDE = os.path.join(ROOT, "docs", "install.md")
GUIDE_VARS = {
    "CLUSTER_NAME": "my-cluster",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID": "111122223333",
    "DOVETAIL_VERSION": "0.1.0",
    "REGISTRY": "111122223333.dkr.ecr.us-east-1.amazonaws.com",
}


def set_value(values, flag):
    """One `--set key=value` as Helm's strvals parses it: keys split on unescaped dots (`\\.` is a
    dot in a key), integers, true/false and null typed, anything else a string."""
    key, _, raw = flag.partition("=")
    parts, cur, i = [], "", 0
    while i < len(key):
        if key[i] == "\\" and i + 1 < len(key):
            cur += key[i + 1]
            i += 2
            continue
        if key[i] == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += key[i]
        i += 1
    parts.append(cur)
    if raw in ("true", "false"):
        value = raw == "true"
    elif raw == "null":
        value = None
    elif raw.lstrip("-").isdigit():
        value = int(raw)
    else:
        value = raw
    node = values
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return parts


def validate(label, docs):
    import kubernetes_validate

    for path, d in docs:
        if d.get("kind") == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{label}: {path}: {d['kind']} {d['metadata'].get('name')}: {e.message} at {list(e.path)}")


def env_of(docs):
    for _, d in docs:
        if d["kind"] == "Deployment":
            return {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    fail("no Deployment rendered")


def guide():
    import re
    import shlex

    with open(GUIDE) as f:
        text = f.read()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("helm "):
                commands.append(line)
    if len(commands) < 4:
        fail(f"docs/install.md: expected the install and upgrade commands of both charts, found {commands}")
    installed = {}
    for cmd in commands:
        expanded = re.sub(r"\$\{(\w+)\}", lambda m: GUIDE_VARS[m.group(1)], cmd)
        args = shlex.split(expanded)
        if args[:2] == ["helm", "uninstall"]:
            continue
        if args[:2] == ["helm", "test"]:
            # The release's test hook: the doctor, as the controller's service account.
            release = args[2]
            docs = render("dovetail", installed[release], "dovetail")
            jobs = [d for _, d in docs if d["kind"] == "Job"
                    and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
            if not jobs or jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"] != ["doctor"]:
                fail(f"docs/install.md: `{cmd}` but the chart has no doctor test hook")
            print(f"docs/install.md: helm test {release}: the doctor Job runs as {jobs[0]['spec']['template']['spec']['serviceAccountName']}")
            continue
        if args[1] != "upgrade":
            fail(f"docs/install.md: a helm command the check does not know: {cmd}")
        positional, values, namespace, i = [], {}, None, 2
        reuse = False
        while i < len(args):
            a = args[i]
            if a == "--set":
                set_value(values, args[i + 1])
                i += 2
            elif a == "--namespace":
                namespace = args[i + 1]
                i += 2
            elif a in ("--install", "--wait", "--create-namespace"):
                i += 1
            elif a == "--reuse-values":
                reuse = True
                i += 1
            elif a.startswith("-"):
                fail(f"docs/install.md: an option the check does not know: {a} in {cmd}")
            else:
                positional.append(a)
                i += 1
        release, chart_path = positional
        chart = os.path.basename(chart_path)
        if not os.path.isdir(os.path.join(ROOT, chart_path)):
            fail(f"docs/install.md: {chart_path} is not a chart of this repository")
        if reuse:
            # --reuse-values: the release's values, the new --set merged in at every depth.
            def merge(into, new):
                for k, v in new.items():
                    if isinstance(v, dict) and isinstance(into.get(k), dict):
                        merge(into[k], v)
                    else:
                        into[k] = v
                return into

            values = merge(json.loads(json.dumps(installed.get(release, {}))), values)
        installed.setdefault(release, values)
        label = f"docs/install.md: helm {' '.join(args[1:4])}"
        docs = render(chart, values, namespace or "default")
        validate(label, docs)
        if chart == "dovetail":
            env = env_of(docs)
            if env["CLUSTER_NAME"] != "my-cluster" or not env.get("INTERRUPTION_QUEUE"):
                fail(f"{label}: the controller's settings: {env}")
            image = [d for _, d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["image"]
            if image != f"{GUIDE_VARS['REGISTRY']}/dovetail:{GUIDE_VARS['DOVETAIL_VERSION']}":
                fail(f"{label}: the image is {image}, not the one step 3 pushed")
        print(f"{label}: {len(docs)} manifests render and validate")


def karpenter_table():
    """charts/README.md's table: Karpenter's value → (Dovetail's, or None with why)."""
    table = {}
    with open(os.path.join(CHARTS, "README.md")) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0].startswith("`"):
                theirs = cells[0].split("`")[1]
                if cells[1] == "same":
                    table[theirs] = (theirs, cells[2])
                elif cells[1] == "—":
                    table[theirs] = (None, cells[2])
                else:
                    table[theirs] = (cells[1].split("`")[1], cells[2])
    return table


# Karpenter's getting-started `helm upgrade --install` flags (website getting-started
# scripts/step08-apply-helm-chart.sh; the IRSA annotation from its Fargate variant; `dnsPolicy`
# and `logLevel` from the guide's and the troubleshooting page's advice).
KARPENTER_FLAGS = [
    "settings.clusterName=my-cluster",
    "settings.interruptionQueue=my-cluster",
    "settings.enableZonalShift=true",
    "controller.resources.requests.cpu=1",
    "controller.resources.requests.memory=1Gi",
    "controller.resources.limits.cpu=1",
    "controller.resources.limits.memory=1Gi",
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/my-cluster-karpenter",
    "dnsPolicy=Default",
    "logLevel=debug",
]


def karpenter():
    import helm_python as helm

    table = karpenter_table()
    chart = helm.Chart.load(os.path.join(CHARTS, "dovetail"))
    values, dropped = {}, []
    for flag in KARPENTER_FLAGS:
        key = flag.partition("=")[0].replace("\\.", "\0")
        # The longest row of the table that the flag's key starts with.
        row = max((k for k in table if key == k or key.startswith(k + ".")), key=len, default=None)
        if row is None:
            fail(f"charts/README.md has no row for Karpenter's {key.split('.')[0]}… ({flag})")
        ours, why = table[row]
        if ours is None:
            # The name without an equivalent is refused, never silently ignored.
            raw = {}
            set_value(raw, flag)
            try:
                chart.validate_schema(chart.merge_values({**REQUIRED, **raw}))
            except helm.HelmValuesError as e:
                if row.split(".")[-1] not in str(e):
                    fail(f"Karpenter's {row} is refused, but not for its name: {e}")
            else:
                fail(f"the chart accepts Karpenter's {row}, which it does not honour")
            dropped.append(f"{row} ({why})")
            continue
        set_value(values, ours + flag[len(row):])
    chart.validate_schema(chart.merge_values(values))
    docs = render("dovetail", values, "kube-system")
    validate("Karpenter's flags", docs)
    env = env_of(docs)
    if env["INTERRUPTION_QUEUE"] != "my-cluster" or env["LOG_LEVEL"] != "debug":
        fail(f"Karpenter's flags: the controller's settings: {env}")
    print(f"Karpenter's getting-started flags install: {len(KARPENTER_FLAGS) - len(dropped)} carried over; dropped: {'; '.join(dropped)}")


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
    elif cmd == "guide":
        guide()
    elif cmd == "karpenter":
        karpenter()
    elif cmd == "rbac":
        rbac(sys.argv[2])
    elif cmd == "iam":
        iam()
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
