"""A fault-injecting proxy in front of moto. Two faults:

- `--ice TYPE:ZONE`: CreateFleet overrides for that offering fail with
  InsufficientInstanceCapacity, as EC2 reports it (an entry in the response's errorSet); the request
  goes on to moto without them, so the fleet launches the next override the way EC2 would.
- `--kill-after-create-fleet PIDFILE`: the first CreateFleet goes to moto (the instance exists),
  then the process whose pid the file holds is killed (SIGKILL) before the answer reaches it: a
  controller that crashed right after launching.

- `--fail CALL`: a call is answered 500 InternalError and not forwarded — a JSON-protocol call
  by its X-Amz-Target (`AmazonSQS.DeleteMessageBatch`), a query-protocol one by its Action
  (`TerminateInstances`).

And an IAM check (`--iam-template deploy/cloudformation.yaml --iam-cluster NAME`, iam_check.py
beside this file): every request is judged against the controller policy as AWS would judge it;
one the policy refuses is answered as AWS answers it (EC2 `UnauthorizedOperation`, IAM
`AccessDenied`, 403) and not forwarded. GET /iam-denials lists the refusals with the statement
that is missing; GET /iam-allowed the actions allowed. `--iam-without SID` drops a statement (to
show the check fails). moto evaluates no IAM at all; this is what stands in for it.

And one stand-in: `--ssm-parameter NAME=VALUE` answers SSM GetParameter for NAME as AWS would.
moto refuses to store parameters under the reserved `/aws/` prefix, where AWS publishes the
EKS-optimized AMI ids; the proxy plays that public parameter.

Everything else is forwarded unchanged. GET /ice-count and GET /killed say how often each fault
struck.

    python3 fault_proxy.py --port 4567 --upstream http://127.0.0.1:5000 --ice m5.large:us-east-1a
"""

import argparse
import json
import os
import sys
from xml.sax.saxutils import escape
import re
import signal
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
CHECKER = None
INJECTED = 0
KILLED = 0

ERROR_ITEM = """<item><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient {t} capacity in the Availability Zone you requested ({z}).</errorMessage><launchTemplateAndOverrides><overrides><instanceType>{t}</instanceType><availabilityZone>{z}</availabilityZone></overrides></launchTemplateAndOverrides><lifecycle>{life}</lifecycle></item>"""


def poisoned():
    return {tuple(x.split(":", 1)) for x in ARGS.ice}


def rewrite_create_fleet(params):
    """Drops poisoned overrides; returns (new params, [(type, zone)] dropped)."""
    pattern = re.compile(r"^LaunchTemplateConfigs\.(\d+)\.Overrides\.(\d+)\.(.+)$")
    overrides = {}
    rest = []
    for k, v in params:
        m = pattern.match(k)
        if m:
            overrides.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = v
        else:
            rest.append((k, v))
    dropped = []
    renumbered = {}
    for (cfg, n) in sorted(overrides, key=lambda x: (x[0], x[1])):
        o = overrides[(cfg, n)]
        key = (o.get("InstanceType"), o.get("AvailabilityZone"))
        if key in poisoned():
            dropped.append(key)
            continue
        idx = renumbered.setdefault(cfg, 0) + 1
        renumbered[cfg] = idx
        for field, value in o.items():
            rest.append((f"LaunchTemplateConfigs.{cfg}.Overrides.{idx}.{field}", value))
    return rest, dropped


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def refuse(self, why):
        """Answers as AWS answers a request IAM denies."""
        target = self.headers.get("X-Amz-Target")
        message = f"You are not authorized to perform this operation. {why}"
        if target:
            data = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
            ctype = "application/x-amz-json-1.1"
        elif "/iam/" in self.headers.get("Authorization", ""):
            data = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
                    + escape(message) + "</Message></Error><RequestId>iam-check</RequestId></ErrorResponse>").encode()
            ctype = "text/xml"
        elif "/eks/" in self.headers.get("Authorization", ""):
            data = json.dumps({"message": message}).encode()
            ctype = "application/json"
        else:
            data = ("<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>" + escape(message)
                    + "</Message></Error></Errors><RequestID>iam-check</RequestID></Response>").encode()
            ctype = "text/xml"
        self.send_response(403)
        self.send_header("Content-Type", ctype)
        if "/eks/" in self.headers.get("Authorization", ""):
            self.send_header("x-amzn-ErrorType", "AccessDeniedException")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def denied(self, body):
        """Judges the request; True when it was refused (and answered)."""
        if CHECKER is None or not self.headers.get("Authorization"):
            return False
        why = CHECKER.judge(self.command, self.path, self.headers, body)
        if why is None:
            return False
        self.refuse(why)
        return True

    def do_GET(self):
        if self.path in ("/iam-denials", "/iam-allowed"):
            body = json.dumps(CHECKER.denials if self.path == "/iam-denials" else sorted(CHECKER.allowed)).encode() if CHECKER else b"[]"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path in ("/ice-count", "/killed"):
            body = str(INJECTED if self.path == "/ice-count" else KILLED).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.denied(b""):
            return
        self.forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("X-Amz-Target") in ARGS.fail:
            data = b'{"__type":"InternalError","message":"fault proxy: injected failure"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        action = dict(urllib.parse.parse_qsl(body.decode(errors="replace"))).get("Action") if body else None
        if action and action in ARGS.fail:
            data = ("<Response><Errors><Error><Code>InternalError</Code><Message>fault proxy: injected "
                    f"{action} failure</Message></Error></Errors><RequestID>fault</RequestID></Response>").encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.denied(body):
            return
        if self.headers.get("X-Amz-Target") == "AmazonSSM.GetParameter":
            name = json.loads(body or b"{}").get("Name")
            for entry in ARGS.ssm_parameter:
                key, value = entry.split("=", 1)
                if key == name:
                    data = json.dumps({"Parameter": {"Name": name, "Type": "String", "Value": value, "Version": 1,
                                                     "DataType": "text", "ARN": f"arn:aws:ssm:us-east-1::parameter{name}"}}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
        self.forward(body)

    def forward(self, body):
        global INJECTED
        dropped = []
        params = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True) if body else []
        life = "spot"
        create_fleet = ("Action", "CreateFleet") in params
        if create_fleet:
            for k, v in params:
                if k == "TargetCapacitySpecification.DefaultTargetCapacityType":
                    life = v
            params, dropped = rewrite_create_fleet(params)
            body = urllib.parse.urlencode(params).encode()
            if dropped and not any(".Overrides." in k for k, _ in params):
                # Nothing left to launch: EC2 answers with the errors alone.
                items = "".join(ERROR_ITEM.format(t=t, z=z, life=life) for t, z in dropped)
                INJECTED += len(dropped)
                data = (
                    '<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                    "<requestId>ice-proxy</requestId><fleetId>fleet-ice</fleetId>"
                    f"<errorSet>{items}</errorSet><fleetInstanceSet/></CreateFleetResponse>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        req = urllib.request.Request(ARGS.upstream + self.path, data=body or None, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(req) as resp:
                status, data, rheaders = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, data, rheaders = e.code, e.read(), e.headers
        if create_fleet and status == 200 and ARGS.kill_after_create_fleet and kill_once():
            # The caller is gone; there is no one to answer.
            self.close_connection = True
            return
        if dropped and status == 200:
            items = "".join(ERROR_ITEM.format(t=t, z=z, life=life) for t, z in dropped)
            INJECTED += len(dropped)
            text = data.decode()
            if "<errorSet/>" in text:
                text = text.replace("<errorSet/>", f"<errorSet>{items}</errorSet>")
            elif "<errorSet>" in text:
                text = text.replace("<errorSet>", f"<errorSet>{items}", 1)
            else:
                text = text.replace("</CreateFleetResponse>", f"<errorSet>{items}</errorSet></CreateFleetResponse>")
            data = text.encode()
        self.send_response(status)
        for k, v in rheaders.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def kill_once():
    """Kills the process named in the pid file the first time; True when it did."""
    global KILLED
    if KILLED:
        return False
    with open(ARGS.kill_after_create_fleet) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)
    KILLED += 1
    # Until it is gone: nothing it had in flight may land after this.
    for _ in range(200):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    return True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--ice", action="append", default=[], help="TYPE:ZONE")
    p.add_argument("--kill-after-create-fleet", metavar="PIDFILE")
    p.add_argument("--ssm-parameter", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--fail", action="append", default=[], metavar="CALL")
    p.add_argument("--iam-template", help="judge every request against this template's controller policy")
    p.add_argument("--iam-cluster", default="my-cluster")
    p.add_argument("--iam-without", action="append", default=[], metavar="SID")
    ARGS = p.parse_args()
    if ARGS.iam_template:
        global CHECKER
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import iam_check
        CHECKER = iam_check.Checker(ARGS.iam_template, ARGS.iam_cluster, ARGS.upstream, ARGS.iam_without)
    ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
