"""The parsing half of deploy/check.sh: docker-compose.yml and Dockerfile.

Usage: check.py QUORUMLITE_BIN SCRATCH_DIR. Writes the builder's RUN line
to SCRATCH_DIR/builder-run and the HEALTHCHECK command to
SCRATCH_DIR/healthcheck for check.sh to run. Exits 1 with the problems.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

BIN, SCRATCH = sys.argv[1], sys.argv[2]
DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
problems = []


def problem(text):
    problems.append(text)


def flags(command):
    """`--name=value` and `--name value` items of a command line."""
    out, i = {}, 0
    while i < len(command):
        item = str(command[i])
        if item.startswith("--"):
            if "=" in item:
                k, v = item[2:].split("=", 1)
            elif i + 1 < len(command) and not str(command[i + 1]).startswith("--"):
                k, v = item[2:], str(command[i + 1])
                i += 1
            else:
                k, v = item[2:], True
            out[k] = v
        i += 1
    return out


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


# ---- Dockerfile ------------------------------------------------------------


def dockerfile_stages(path):
    """[(name, base, [(instruction, args)])], continuation lines joined."""
    stages, logical, cont = [], [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not cont and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            cont += line[:-1] + " "
            continue
        logical.append(cont + line)
        cont = ""
    for line in logical:
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stages.append((m.group(2) or str(len(stages)), m.group(1), []))
        elif stages:
            stages[-1][2].append((instr, args.strip()))
    return stages


def check_dockerfile():
    stages = dockerfile_stages(os.path.join(DEPLOY, "Dockerfile"))
    if len(stages) < 2:
        problem("Dockerfile: expected a builder stage and a runtime stage")
        return {}
    (bname, bbase, binstr), (rname, rbase, rinstr) = stages[0], stages[-1]
    # The toolchain is at least the workspace's rust-version.
    cargo = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb"))
    need = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split("."))
    m = re.match(r"rust:(\d+)\.(\d+)", bbase)
    if not m or (int(m.group(1)), int(m.group(2))) < need[:2]:
        problem(f"Dockerfile: builder image {bbase} is not a rust image >= {'.'.join(map(str, need))}")
    workdir = "/"
    runs = []
    for instr, args in binstr:
        if instr == "WORKDIR":
            workdir = args
        if instr == "RUN":
            # BuildKit options (--mount=...) are not part of the command.
            words = args.split()
            while words and words[0].startswith("--"):
                words.pop(0)
            runs.append(" ".join(words))
    builds = [r for r in runs if "cargo build" in r]
    if len(builds) != 1:
        problem(f"Dockerfile: expected one cargo build in the builder stage, found {builds}")
        return {}
    run = builds[0]
    cargo_cmd = shlex.split(run.split("&&")[0])
    for want in [["build"], ["--release"], ["-p", "quorumlite"], ["--locked"]]:
        if not any(cargo_cmd[i : i + len(want)] == want for i in range(len(cargo_cmd))):
            problem(f"Dockerfile: the builder's cargo command {cargo_cmd} lacks {' '.join(want)}")
    # What the builder leaves: cargo's output, and where the RUN copies it.
    produced = {os.path.normpath(os.path.join(workdir, "target/release/quorumlite"))}
    for step in run.split("&&")[1:]:
        words = shlex.split(step)
        if words and words[0] in ("install", "cp") and any("target/release/quorumlite" in w for w in words):
            produced.add(words[-1])
    # The runtime stage.
    copies = [a for i, a in rinstr if i == "COPY" and a.startswith(f"--from={bname}")]
    if not copies:
        problem(f"Dockerfile: the runtime stage copies nothing from {bname}")
    dest = None
    for c in copies:
        src, dest = c.split()[1], c.split()[2]
        if src not in produced:
            problem(f"Dockerfile: the runtime copies {src}, which the builder does not produce ({sorted(produced)})")
    user = [a for i, a in rinstr if i == "USER"]
    if not user or user[-1].split(":")[0] in ("root", "0"):
        problem("Dockerfile: the runtime stage runs as root (no USER)")
    volumes = " ".join(a for i, a in rinstr if i == "VOLUME")
    if "/var/lib/quorumlite" not in volumes:
        problem("Dockerfile: no VOLUME for /var/lib/quorumlite")
    exposed = {int(p.split("/")[0]) for i, a in rinstr if i == "EXPOSE" for p in a.split()}
    entry = [a for i, a in rinstr if i == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1])[0] != dest:
        problem(f"Dockerfile: ENTRYPOINT {entry} does not run the copied binary {dest}")
    hc = [a for i, a in rinstr if i == "HEALTHCHECK"]
    health_cmd = None
    if not hc or "/health" not in hc[-1]:
        problem("Dockerfile: no HEALTHCHECK against /health")
    else:
        exec_form = hc[-1][hc[-1].index("CMD") + 3 :].strip()
        health = json.loads(exec_form)
        if health[:2] != ["bash", "-c"]:
            problem(f"Dockerfile: HEALTHCHECK {health} is not bash -c")
        health_cmd = health[2]
    with open(os.path.join(SCRATCH, "builder-run"), "w") as f:
        f.write(run)
    if health_cmd:
        with open(os.path.join(SCRATCH, "healthcheck"), "w") as f:
            f.write(health_cmd)
    # The build context keeps what the locked build needs.
    ignored = [
        l.strip()
        for l in open(os.path.join(ROOT, ".dockerignore"))
        if l.strip() and not l.startswith("#")
    ]
    for needed in ["Cargo.toml", "Cargo.lock", "vendor", "node", "raft", "storage", "client", "jepsen"]:
        if needed in ignored:
            problem(f".dockerignore excludes {needed}, which the build needs")
    return {"exposed": exposed, "health": health_cmd}


# ---- docker-compose.yml ----------------------------------------------------


def check_compose(image):
    compose = yaml.safe_load(open(os.path.join(DEPLOY, "docker-compose.yml")))
    services = compose.get("services", {})
    if len(services) != 3:
        problem(f"docker-compose.yml: {len(services)} services, expected 3")
    ids, peers_seen, host_ports, volumes_used = {}, set(), set(), set()
    for name, svc in services.items():
        build = svc.get("build", {})
        context = os.path.normpath(os.path.join(DEPLOY, build.get("context", ".")))
        if not os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile"))):
            problem(f"{name}: build dockerfile not found from context {context}")
        cmd = [str(c) for c in svc.get("command", [])]
        env = dict(os.environ)
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        # The real binary parses and validates the node's command line.
        r = subprocess.run([BIN, *cmd, "--check-config"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            problem(f"{name}: quorumlite {' '.join(cmd)} --check-config: {r.stderr.strip()}")
            continue
        print(f"   {name}: {r.stdout.strip()}")
        f = flags(cmd)
        node_id = int(f["id"])
        ids[node_id] = name
        peers = dict(p.split("=", 1) for p in f["peers"].split(","))
        peers_seen.add(f["peers"])
        if peers.get(str(node_id)) != f.get("advertise"):
            problem(f"{name}: --advertise {f.get('advertise')} is not its --peers entry {peers.get(str(node_id))}")
        if peers.get(str(node_id), "").split(":")[0] != name:
            problem(f"{name}: its --peers entry does not use its service name")
        listen, http, metrics = (port_of(f[k]) for k in ("listen", "http", "metrics-listen"))
        if port_of(peers[str(node_id)]) != listen:
            problem(f"{name}: peers port {peers[str(node_id)]} is not the --listen port {listen}")
        published = {}
        for p in svc.get("ports", []):
            host, container = str(p).rsplit(":", 1)
            published[int(container)] = int(host.rsplit(":", 1)[-1])
            if host in host_ports:
                problem(f"{name}: host port {host} published twice")
            host_ports.add(host)
        for port in (listen, http, metrics):
            if port not in published:
                problem(f"{name}: container port {port} is not published")
            if port not in image["exposed"]:
                problem(f"{name}: port {port} is not EXPOSEd by the Dockerfile")
        if image.get("health") and f"/{http}" not in image["health"]:
            problem(f"{name}: the image's HEALTHCHECK does not probe the --http port {http}")
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", [])}
        volume = mounts.get(f["data-dir"])
        if volume is None or volume not in (compose.get("volumes") or {}):
            problem(f"{name}: --data-dir {f['data-dir']} is not a named volume")
        elif volume in volumes_used:
            problem(f"{name}: shares volume {volume}")
        volumes_used.add(volume)
        secret = f.get("cluster-secret-file", "")
        secret_name = secret.removeprefix("/run/secrets/")
        if secret_name not in (svc.get("secrets") or []) or secret_name not in (compose.get("secrets") or {}):
            problem(f"{name}: --cluster-secret-file {secret!r} is not one of its compose secrets")
    if len(peers_seen) != 1:
        problem(f"docker-compose.yml: the nodes' --peers differ: {peers_seen}")
    elif peers_seen:
        peers = dict(p.split("=", 1) for p in next(iter(peers_seen)).split(","))
        for pid, addr in peers.items():
            if ids.get(int(pid)) != addr.split(":")[0]:
                problem(f"docker-compose.yml: peer {pid}={addr} is not service {addr.split(':')[0]} with --id {pid}")
    for s in (compose.get("secrets") or {}).values():
        path = os.path.relpath(os.path.normpath(os.path.join(DEPLOY, s["file"])), ROOT)
        for ignore in (".gitignore", ".dockerignore"):
            text = open(os.path.join(ROOT, ignore)).read()
            if path not in text:
                problem(f"{ignore} does not keep out the secret {path}")


image = check_dockerfile()
if image:
    check_compose(image)
if problems:
    for p in problems:
        print(f"deploy/check: {p}", file=sys.stderr)
    sys.exit(1)
print("   compose: 3 nodes, peers by service name, ports, volumes and secret agree")
print("   Dockerfile: builder runs cargo build --release -p quorumlite --locked; runtime copies its output")
