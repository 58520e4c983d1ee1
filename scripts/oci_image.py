#!/usr/bin/env python3
"""Assembles the controller image as an OCI image layout, without a container engine.

The image is what the Dockerfile's runtime stage holds, built from this machine's files: the
`dovetail` binary (debug info stripped), the shared libraries it loads (glibc, libgcc_s, libm
and the loader, found by ldd), the CA bundle its TLS clients read, /etc/passwd and /etc/group
with the user `nonroot` (65532), and a /tmp. No shell, no package manager. One layer, made
reproducibly (sorted entries, fixed times and owners), so the same inputs give the same digest.

The binary must be for this machine's architecture: its libraries come from here.
scripts/image.sh runs this and pushes the layout with skopeo.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile

# ELF e_machine → OCI architecture.
ARCHES = {0x3E: "amd64", 0xB7: "arm64"}
HOST = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
USER = "65532:65532"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def fail(why: str) -> None:
    sys.exit(f"oci_image: {why}")


def elf_arch(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        fail(f"{path} is not an ELF executable")
    machine = int.from_bytes(head[18:20], "little")
    if machine not in ARCHES:
        fail(f"{path} is for ELF machine {machine:#x}; the image is built for amd64 or arm64")
    return ARCHES[machine]


def libraries(binary: str) -> list[str]:
    """The absolute paths the dynamic loader resolves for the binary (ldd), the loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"ldd {binary}: {out.stderr.strip() or out.stdout.strip()}")
    paths = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            fail(f"{binary} needs a library this machine lacks: {line}")
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" ")[0]
        else:
            target = line.split(" ")[0]
        if target.startswith("/"):
            paths.append(target)
    return paths


def tar_layer(root: str, when: int) -> bytes:
    """The root directory as one tar, entries sorted, every time `when`, owned by root unless the
    file says otherwise (home and /tmp)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries, key=lambda p: os.path.relpath(p, root)):
            rel = os.path.relpath(path, root)
            info = tar.gettarinfo(path, arcname=rel)
            info.mtime = when
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if rel in ("home/nonroot",):
                info.uid = info.gid = 65532
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def blob(layout: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return f"sha256:{digest}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True, help="the dovetail executable to put in the image")
    p.add_argument("--out", required=True, help="the OCI image layout directory to write")
    p.add_argument("--tag", required=True, help="the layout's reference name (e.g. 0.1.0)")
    p.add_argument("--version", default="", help="org.opencontainers.image.version")
    p.add_argument("--revision", default="", help="org.opencontainers.image.revision")
    args = p.parse_args()

    if not os.path.isfile(args.binary):
        fail(f"{args.binary} does not exist: build it (cargo build --release -p dovetail)")
    arch = elf_arch(args.binary)
    host = HOST.get(platform.machine())
    if arch != host:
        fail(
            f"{args.binary} is for {arch} but this machine is {host}: its libraries come from "
            "this machine, so build each architecture on its own (or with the Dockerfile and buildx)"
        )
    if not os.path.isfile(CA_BUNDLE):
        fail(f"{CA_BUNDLE} is missing: install Debian's ca-certificates")
    when = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    with tempfile.TemporaryDirectory(prefix="dovetail-image-") as root:
        exe = os.path.join(root, "usr/local/bin/dovetail")
        os.makedirs(os.path.dirname(exe))
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-debug", "-o", exe, args.binary], check=True)
        else:
            shutil.copyfile(args.binary, exe)
        os.chmod(exe, 0o755)
        for lib in libraries(args.binary):
            dest = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.realpath(lib), dest)
            os.chmod(dest, 0o755)
        etc = os.path.join(root, "etc")
        os.makedirs(os.path.join(etc, "ssl/certs"))
        shutil.copyfile(CA_BUNDLE, os.path.join(root, CA_BUNDLE.lstrip("/")))
        with open(os.path.join(etc, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/sbin/nologin\n")
            f.write("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        with open(os.path.join(etc, "group"), "w") as f:
            f.write("root:x:0:\nnonroot:x:65532:\n")
        with open(os.path.join(etc, "nsswitch.conf"), "w") as f:
            f.write("hosts: files dns\n")
        os.makedirs(os.path.join(root, "home/nonroot"), mode=0o700)
        os.makedirs(os.path.join(root, "tmp"))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        layer = tar_layer(root, when)

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    created = "1970-01-01T00:00:00Z" if when == 0 else None
    if created is None:
        import datetime

        created = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    labels = {
        "org.opencontainers.image.title": "dovetail",
        "org.opencontainers.image.description": "Dovetail, a Kubernetes node autoscaler for AWS",
        "org.opencontainers.image.source": "https://github.com/dovetail-sh/dovetail",
    }
    if args.version:
        labels["org.opencontainers.image.version"] = args.version
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    compressed = gzip.compress(layer, compresslevel=6, mtime=0)
    layer_digest = blob(args.out, compressed)
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ["/usr/local/bin/dovetail"],
            "Cmd": ["controller"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", f"SSL_CERT_FILE={CA_BUNDLE}"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created": created, "created_by": "scripts/oci_image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = blob(args.out, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(compressed),
            }
        ],
        "annotations": labels,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = blob(args.out, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": args.tag},
            }
        ],
    }
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{args.out}:{args.tag} linux/{arch} {manifest_digest} ({len(compressed) // 2**20} MiB)")


if __name__ == "__main__":
    main()
