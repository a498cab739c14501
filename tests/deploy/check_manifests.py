#!/usr/bin/env python3
"""check_manifests.py - the project's own checks of deploy/ (run by test_manifests.sh).

Reads every YAML file of deploy/ (rejecting duplicate keys), the output of `kubectl kustomize` for
the base and each overlay (files given on the command line as NAME=PATH), and the PyTorchJob
example. Checks what a schema cannot: that every container running ecclrun uses options ecclrun
has (from `ecclrun --help`) and that ecclrun itself accepts each pod's command line and PET_*
environment, for every pod index (a dry run with /bin/sh as the program); that the probes use the
named metrics port and ecclrun's /healthz and /readyz; that the job secret is mounted where
ECCL_JOB_SECRET_FILE points; that the Indexed Job's parallelism and completions equal the
elastic maximum; the etcd StatefulSet's static cluster; the GPU/CPU settings of each overlay; the
Training Operator's rules for the PyTorchJob. Writes the objects for the schema validator
(validate_k8s.mjs) to --objects. Prints one line per check group; exits 1 on any failure.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

FAILURES = []
NOTES = []
# Options the manifests use that another part of issue 9 adds to ecclrun. Until `ecclrun --help`
# lists them the check says so (a NOTE) instead of failing; once listed they are checked as any
# other option. Nothing else may be missing.
PENDING_OPTIONS = {"metrics-port"}
# Secrets that a production overlay expects to be created outside kustomize (docs/kubernetes.md).
EXTERNAL_SECRETS = {"eccl-job-secret": {"job-secret"},
                    "eccl-etcd-credentials": {"username", "password", "root-password"}}
METRICS_PORT = 9400


def fail(where, msg):
    FAILURES.append(f"{where}: {msg}")


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


# ---- ecclrun's and eccl-store's own usage texts ----

def usage_of(binary):
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    return r.stdout + r.stderr


def ecclrun_options(help_text):
    """{name: takes_value} from the option lines of `ecclrun --help`."""
    opts = {}
    for m in re.finditer(r"^\s+(?:-h, )?--([a-z][a-z-]*)( [A-Za-z|:.\[\]-]+)?", help_text, re.M):
        opts[m.group(1)] = bool(m.group(2))
    return opts


def split_ecclrun_args(args, opts, where):
    """Checks ecclrun's options in args; returns ({option: value}, program argv)."""
    given = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return given, args[i + 1:]
        if not a.startswith("--"):
            return given, args[i:]
        name, eq, value = a[2:].partition("=")
        name = name.replace("_", "-")
        if name not in opts:
            if name in PENDING_OPTIONS:
                NOTES.append(f"{where}: ecclrun --help does not list --{name} yet "
                             "(issue 9 part 4 adds it): not checked")
                takes = True
            else:
                fail(where, f"ecclrun has no option --{name} (ecclrun --help)")
                takes = False
        else:
            takes = opts[name]
        if not eq and takes:
            i += 1
            if i >= len(args):
                fail(where, f"--{name} needs a value")
                break
            value = args[i]
        given[name] = value if (eq or takes) else "1"
        i += 1
    fail(where, "no program after ecclrun's options")
    return given, []


# ---- helpers over Kubernetes objects ----

def pod_templates(obj):
    """(label, pod spec, pod metadata) of every pod template in obj."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Job", "StatefulSet", "Deployment", "DaemonSet"):
        t = spec.get("template") or {}
        yield kind + "/" + obj["metadata"]["name"], t.get("spec") or {}, t.get("metadata") or {}
    elif kind == "PyTorchJob":
        for rtype, rs in (spec.get("pytorchReplicaSpecs") or {}).items():
            t = (rs or {}).get("template") or {}
            yield (f"PyTorchJob/{obj['metadata']['name']}/{rtype}", t.get("spec") or {},
                   t.get("metadata") or {})


def container_env(container, objs):
    """The container's environment as {name: value or None (from a field/secret)}, envFrom
    ConfigMaps first, as the kubelet resolves it."""
    env = {}
    for ef in container.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref:
            cm = find(objs, "ConfigMap", ref)
            if cm is None:
                fail(container["name"], f"envFrom ConfigMap {ref} is not in the output")
            else:
                env.update(cm.get("data") or {})
    for e in container.get("env") or []:
        env[e["name"]] = e.get("value") if "value" in e else None
    return env


def find(objs, kind, name):
    for o in objs:
        if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
            return o
    return None


def nnodes_max(v):
    parts = str(v).split(":")
    return int(parts[-1])


# ---- the checks ----

def check_ecclrun_container(where, c, env, opts, ecclrun, store_help, index_count, tmp, expect):
    """Options, probes, secret file and a dry run of ecclrun for each pod index."""
    cmd = (c.get("command") or []) + (c.get("args") or [])
    if not cmd or os.path.basename(cmd[0]) != "ecclrun":
        fail(where, f"container {c['name']} does not run ecclrun: {cmd[:1]}")
        return
    given, program = split_ecclrun_args(cmd[1:], opts, where)
    # The program must be one the image has: /opt/eccl/examples/<x> <- examples/<x>.c.
    if program:
        m = re.fullmatch(r"/opt/eccl/examples/([A-Za-z0-9_]+)", program[0])
        if m and not os.path.exists(os.path.join(ROOT, "examples", m.group(1) + ".c")):
            fail(where, f"{program[0]}: no examples/{m.group(1)}.c in the repository")
    # PET_* variables: each one names an ecclrun option.
    for k in env:
        if k.startswith("PET_"):
            name = k[4:].lower().replace("_", "-")
            if name not in opts:
                fail(where, f"{k} names no ecclrun option (--{name})")
    # Probes: /healthz and /readyz of ecclrun's metrics port, by name.
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if ports.get("metrics") != METRICS_PORT:
        fail(where, f"no container port named metrics = {METRICS_PORT}: {ports}")
    mp = given.get("metrics-port")
    if mp is None or str(mp) != str(ports.get("metrics")):
        fail(where, f"--metrics-port {mp} is not the metrics port {ports.get('metrics')}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path:
            fail(where, f"{probe} path {hg.get('path')!r} is not {path}")
        port = hg.get("port")
        if port not in ports and port not in ports.values():
            fail(where, f"{probe} port {port!r} is not a port of the container")
        if port != "metrics":
            fail(where, f"{probe} should use the named port metrics, not {port!r}")
    # Pods that come late (or are recreated) join only in grow mode: with MIN < MAX a replace or
    # shrink job would leave them waiting (tried with ecclrun: docs/kubernetes.md).
    nn = str(given.get("nnodes", env.get("PET_NNODES", "1"))).split(":")
    mode = given.get("elastic-mode", env.get("PET_ELASTIC_MODE", "replace"))
    if len(nn) == 2 and nn[0] != nn[1] and mode != "grow":
        fail(where, f"--nnodes {':'.join(nn)} with elastic mode {mode}: a pod that starts after "
                    "the first generation formed is never admitted (use grow)")
    # The job secret: ECCL_JOB_SECRET_FILE is a file of a mounted Secret volume.
    check_secret_file(where, c, env, expect)
    # What the overlay promises.
    for k, v in expect.get("env", {}).items():
        if env.get(k) != v:
            fail(where, f"{k}={env.get(k)!r}, expected {v!r}")
    res = c.get("resources") or {}
    for r in expect.get("extended", []):
        lim = (res.get("limits") or {}).get(r)
        req = (res.get("requests") or {}).get(r, lim)
        if lim is None or int(lim) < 1 or req != lim:
            fail(where, f"resource {r}: limits {lim}, requests {req} (want equal, >= 1)")
    for r in expect.get("no_extended", []):
        if r in (res.get("limits") or {}) or r in (res.get("requests") or {}):
            fail(where, f"resource {r} requested in a CPU-only overlay")
    # Dry run: ecclrun with this environment and these options, /bin/sh as the program, once
    # per pod index. It must accept them (exit 0) and give the workers the expected store.
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "ECCL_"))}
    for k, v in env.items():
        if v is not None:
            run_env[k] = str(v)
    secret = os.path.join(tmp, "job-secret")
    with open(secret, "w", encoding="utf-8") as f:
        f.write("dry-run-secret\n")
    run_env["ECCL_JOB_SECRET_FILE"] = secret
    if run_env.get("PET_NPROC_PER_NODE") in ("gpu", "auto"):
        NOTES.append(f"{where}: PET_NPROC_PER_NODE={run_env['PET_NPROC_PER_NODE']} run as 2 "
                     "here (no GPU on this machine)")
        run_env["PET_NPROC_PER_NODE"] = "2"
    for idx in range(index_count):
        run_env.update(expect.get("operator_env", {}))
        run_env["JOB_COMPLETION_INDEX"] = str(idx)
        run_env["REPLICA_INDEX"] = str(idx)
        argv = [ecclrun]
        for name, value in given.items():
            if name in PENDING_OPTIONS and name not in opts:
                continue
            if name == "metrics-port":
                value = "0"  # no server on this machine: 0 is "off" (the port is checked above)
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: run_env.get(m.group(1), ""), str(value))
            argv.append(f"--{name}={value}")
        argv += ["--", "/bin/sh", "-c", 'echo "DRYRUN STORE=$ECCL_ELASTIC_STORE RANK=$RANK '
                 'MIN=$ECCL_ELASTIC_MIN_RANKS MAX=$ECCL_ELASTIC_MAX_RANKS"']
        try:
            r = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=20,
                               cwd=tmp)
        except subprocess.TimeoutExpired:
            fail(where, f"index {idx}: ecclrun dry run did not end in 20 s")
            continue
        if r.returncode != 0:
            fail(where, f"index {idx}: ecclrun refused the pod's options/environment "
                        f"(exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
            continue
        stores = set(re.findall(r"DRYRUN STORE=(\S*)", r.stdout))
        want = expect.get("store") or env.get("PET_RDZV_ENDPOINT")
        if stores != {want}:
            fail(where, f"index {idx}: workers got ECCL_ELASTIC_STORE {stores}, expected {want}")
        nproc = int(given.get("nproc-per-node", run_env.get("PET_NPROC_PER_NODE", "1")))
        ranks = sorted(int(x) for x in re.findall(r"DRYRUN STORE=\S* RANK=(\d+)", r.stdout))
        if ranks != list(range(idx * nproc, (idx + 1) * nproc)):
            fail(where, f"index {idx}: workers got RANK {ranks}, expected node {idx}'s "
                        f"{idx * nproc}..{(idx + 1) * nproc - 1}")
    # The init container's eccl-store command uses options and a command eccl-store has.
    for ic in expect.get("init", []):
        text = " ".join(ic.get("command") or []) + " " + " ".join(ic.get("args") or [])
        if "eccl-store" in text:
            for word in re.findall(r"eccl-store ((?:--?[a-z]+ \S+ )*)(\w+)", text):
                for flag in re.findall(r"(--?[a-z]+)", word[0]):
                    if flag not in store_help:
                        fail(where, f"init container: eccl-store has no {flag}")
                if not re.search(r"^\s+" + word[1] + r"\b", store_help, re.M):
                    fail(where, f"init container: eccl-store has no command {word[1]}")


def check_secret_file(where, c, env, expect):
    path = env.get("ECCL_JOB_SECRET_FILE")
    if not path:
        fail(where, "no ECCL_JOB_SECRET_FILE")
        return
    spec = expect["pod_spec"]
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    d, base = os.path.split(path)
    mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == d]
    if not mounts:
        fail(where, f"ECCL_JOB_SECRET_FILE={path}: nothing is mounted at {d}")
        return
    vol = vols.get(mounts[0]["name"]) or {}
    sec = vol.get("secret")
    if not sec:
        fail(where, f"{d} is not a Secret volume")
        return
    if not mounts[0].get("readOnly"):
        fail(where, f"the Secret at {d} is not mounted readOnly")
    items = sec.get("items")
    name = sec.get("secretName", "")
    secret_obj = expect["find_secret"](name)
    keys = set(((secret_obj or {}).get("data") or {}).keys()) | set(
        ((secret_obj or {}).get("stringData") or {}).keys())
    if secret_obj is None:
        ext = EXTERNAL_SECRETS.get(name)
        if ext is None or not expect.get("external_secrets_ok"):
            fail(where, f"Secret {name} is neither in the output nor an expected external one")
            return
        keys = ext
    if items:
        paths = {i["path"]: i["key"] for i in items}
        if base not in paths or paths[base] not in keys:
            fail(where, f"{path}: not a key of Secret {name} (items {items}, keys {keys})")
    elif base not in keys:
        fail(where, f"{path}: Secret {name} has no key {base} (keys {sorted(keys)})")
    mode = sec.get("defaultMode")
    if mode is None or mode & 0o007:
        fail(where, f"the job secret's defaultMode {mode} lets other users read it")


def check_secret_refs(where, objs, external_ok):
    """Every secretKeyRef and secret volume names a Secret of the output (with that key), or,
    where the overlay leaves them out, one of the documented external Secrets."""
    for o in objs:
        for label, spec, _ in pod_templates(o):
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        check_secret_key(where + " " + label, objs, ref["name"], ref["key"],
                                         external_ok)
            for v in spec.get("volumes") or []:
                if "secret" in v:
                    for it in v["secret"].get("items") or []:
                        check_secret_key(where + " " + label, objs, v["secret"]["secretName"],
                                         it["key"], external_ok)


def check_secret_key(where, objs, name, key, external_ok):
    s = find(objs, "Secret", name)
    if s is None:
        if external_ok and key in EXTERNAL_SECRETS.get(name, set()):
            return
        fail(where, f"Secret {name} (key {key}) is not in the output")
        return
    keys = set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())
    if key not in keys:
        fail(where, f"Secret {name} has no key {key}")


def check_etcd(where, objs):
    sts = find(objs, "StatefulSet", "eccl-etcd")
    if sts is None:
        return False
    spec = sts["spec"]
    n = spec.get("replicas")
    if n != 3:
        fail(where, f"etcd has {n} members, not 3")
    svc = find(objs, "Service", spec.get("serviceName"))
    if svc is None or svc["spec"].get("clusterIP") != "None":
        fail(where, f"etcd's serviceName {spec.get('serviceName')} is not a headless Service")
    elif not svc["spec"].get("publishNotReadyAddresses"):
        fail(where, "etcd's headless Service must publish not-ready members (bootstrap)")
    if spec.get("podManagementPolicy") != "Parallel":
        fail(where, "etcd members must start in parallel (podManagementPolicy: Parallel)")
    c = spec["template"]["spec"]["containers"][0]
    args = c.get("command", []) + c.get("args", [])
    ic = [a.split("=", 1)[1] for a in args if a.startswith("--initial-cluster=")]
    name = sts["metadata"]["name"]
    peers = {f"{name}-{i}": f"http://{name}-{i}.{spec.get('serviceName')}:2380"
             for i in range(n or 0)}
    got = dict(p.split("=", 1) for p in ic[0].split(",")) if ic else {}
    if got != peers:
        fail(where, f"--initial-cluster {got} is not the StatefulSet's members {peers}")
    labels = spec["template"]["metadata"].get("labels") or {}
    client = find(objs, "Service", "eccl-etcd-client")
    if client is None or 2379 not in [p.get("port") for p in client["spec"].get("ports", [])]:
        fail(where, "no client Service eccl-etcd-client on 2379")
    for s in (svc, client):
        sel = (s or {}).get("spec", {}).get("selector") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            fail(where, f"Service {(s or {}).get('metadata', {}).get('name')} selects no etcd pod")
    return True


def check_indexed_job(where, objs, opts, ecclrun, store_help, tmp, expect):
    job = find(objs, "Job", "eccl-train")
    if job is None:
        fail(where, "no Job eccl-train")
        return
    spec = job["spec"]
    pod = spec["template"]["spec"]
    if spec.get("completionMode") != "Indexed":
        fail(where, "the training Job is not Indexed")
    c = pod["containers"][0]
    env = container_env(c, objs)
    nmax = nnodes_max(env.get("PET_NNODES", "1"))
    if spec.get("parallelism") != nmax or spec.get("completions") != nmax:
        fail(where, f"parallelism {spec.get('parallelism')} / completions "
                    f"{spec.get('completions')} differ from the elastic maximum {nmax} "
                    f"(PET_NNODES={env.get('PET_NNODES')})")
    svc = find(objs, "Service", pod.get("subdomain"))
    if svc is None or svc["spec"].get("clusterIP") != "None":
        fail(where, f"subdomain {pod.get('subdomain')} is not a headless Service")
    else:
        if not svc["spec"].get("publishNotReadyAddresses"):
            fail(where, "the job's headless Service must publish not-ready pods (readiness "
                        "waits for the rendezvous, which needs the peers' names)")
        labels = spec["template"]["metadata"].get("labels") or {}
        sel = svc["spec"].get("selector") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            fail(where, "the job's headless Service selects none of its pods")
    if env.get("JOB_COMPLETION_INDEX", "x") is not None:
        fail(where, "JOB_COMPLETION_INDEX should come from the completion-index annotation")
    expect = dict(expect, pod_spec=pod, init=pod.get("initContainers") or [],
                  find_secret=lambda n: find(objs, "Secret", n))
    check_ecclrun_container(where, c, env, opts, ecclrun, store_help, nmax, tmp, expect)
    # The rendezvous endpoint: a Service of the output when etcd is deployed here.
    ep = env.get("PET_RDZV_ENDPOINT", "")
    m = re.match(r"etcds?://([^/:,]+)", ep)
    if expect.get("etcd_here") and (not m or find(objs, "Service", m.group(1)) is None):
        fail(where, f"PET_RDZV_ENDPOINT {ep} is not the etcd Service of this deployment")
    if not expect.get("etcd_here") and m and find(objs, "Service", m.group(1)) is not None:
        fail(where, f"PET_RDZV_ENDPOINT {ep} still points at the removed etcd")


def check_pytorchjob(where, obj, opts, ecclrun, store_help, tmp, help_text):
    md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if obj.get("apiVersion") != "kubeflow.org/v1" or obj.get("kind") != "PyTorchJob":
        fail(where, "not a kubeflow.org/v1 PyTorchJob")
        return
    # Field names of the operator's v1 API (pkg/apis/kubeflow.org/v1): typos are caught here.
    allowed = {
        "spec": {"runPolicy", "elasticPolicy", "pytorchReplicaSpecs", "nprocPerNode"},
        "elasticPolicy": {"minReplicas", "maxReplicas", "rdzvBackend", "rdzvPort", "rdzvHost",
                          "rdzvId", "rdzvConf", "standalone", "nProcPerNode", "maxRestarts",
                          "metrics"},
        "runPolicy": {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
                      "backoffLimit", "schedulingPolicy", "suspend", "managedBy"},
        "replica": {"replicas", "template", "restartPolicy"},
    }
    ep = spec.get("elasticPolicy") or {}
    for part, fields in (("spec", spec), ("elasticPolicy", ep),
                         ("runPolicy", spec.get("runPolicy") or {})):
        for k in fields:
            if k not in allowed[part]:
                fail(where, f"{part} has no field {k}")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", md.get("name", "")):
        fail(where, "metadata.name is not a DNS-1035 label (the operator's webhook)")
    if (spec.get("runPolicy") or {}).get("cleanPodPolicy", "None") not in ("None", "Running",
                                                                           "All"):
        fail(where, "runPolicy.cleanPodPolicy is not None, Running or All")
    rs = spec.get("pytorchReplicaSpecs") or {}
    if set(rs) - {"Master", "Worker"}:
        fail(where, f"replica types {sorted(rs)}: only Master and Worker")
    if "Worker" not in rs:
        fail(where, "an elastic policy needs a Worker replica spec (the operator's webhook)")
        return
    for rtype, r in rs.items():
        for k in r:
            if k not in allowed["replica"]:
                fail(where, f"{rtype} has no field {k}")
        if r.get("restartPolicy", "OnFailure") not in ("Always", "OnFailure", "Never",
                                                       "ExitCode"):
            fail(where, f"{rtype}.restartPolicy {r.get('restartPolicy')} is not valid")
    if "nProcPerNode" in ep:
        fail(where, "elasticPolicy.nProcPerNode is deprecated: use spec.nprocPerNode")
    backends = re.search(r"--rdzv-backend ([a-z0-9|-]+)", help_text).group(1).split("|")
    if ep.get("rdzvBackend") not in backends:
        fail(where, f"rdzvBackend {ep.get('rdzvBackend')} is not one ecclrun takes ({backends})")
    lo, hi = ep.get("minReplicas"), ep.get("maxReplicas")
    w = rs["Worker"]
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        fail(where, f"minReplicas {lo} / maxReplicas {hi}")
    if w.get("replicas") != hi:
        fail(where, f"Worker replicas {w.get('replicas')} differ from maxReplicas {hi}")
    pod = w["template"]["spec"]
    cs = [c for c in pod.get("containers") or [] if c.get("name") == "pytorch"]
    if not cs:
        fail(where, "no container named pytorch (the operator injects PET_* only there)")
        return
    c = cs[0]
    env = container_env(c, [])
    if "REPLICA_INDEX" in env and (
            next(e for e in c["env"] if e["name"] == "REPLICA_INDEX")["valueFrom"]["fieldRef"]
            ["fieldPath"] != "metadata.labels['training.kubeflow.org/replica-index']"):
        fail(where, "REPLICA_INDEX should come from the training.kubeflow.org/replica-index label")
    # What the operator injects (pkg/controller.v1/pytorch/elastic.go): ecclrun must take it.
    operator_env = {
        "PET_NNODES": f"{lo}:{hi}",
        "PET_RDZV_BACKEND": ep.get("rdzvBackend", "c10d"),
        "PET_RDZV_ENDPOINT": f"{ep.get('rdzvHost')}:{ep.get('rdzvPort')}",
    }
    for k, src in (("PET_RDZV_ID", ep.get("rdzvId")), ("PET_MAX_RESTARTS", ep.get("maxRestarts")),
                   ("PET_NPROC_PER_NODE", spec.get("nprocPerNode"))):
        if src is not None:
            operator_env[k] = str(src)
    env.update(operator_env)
    host, port = ep.get("rdzvHost"), ep.get("rdzvPort")
    want_store = f"etcd://{host}:{port}/eccl" if ep.get("rdzvBackend", "c10d") != "c10d" else \
        f"tcp://{host}:{port}/eccl"
    expect = {"pod_spec": pod, "operator_env": operator_env, "store": want_store,
              "external_secrets_ok": True, "find_secret": lambda n: None,
              "env": {"ECCL_DEVICE": "cuda"}, "extended": ["nvidia.com/gpu", "rdma/hca"]}
    check_ecclrun_container(where, c, env, opts, ecclrun, store_help, hi, tmp, expect)
    check_secret_refs(where, [obj], True)


def check_dockerfile(root, build):
    """What the Dockerfile copies out of the build exists after `make` (in this build folder),
    the image holds the tools and examples the manifests run, and .dockerignore keeps the
    sources that `make` needs in the build context."""
    where = "deploy/Dockerfile"
    with open(os.path.join(root, "deploy", "Dockerfile"), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) != 2 or "-devel-" not in stages[0][0] or "-runtime-" not in stages[1][0]:
        fail(where, f"not a devel build stage and a runtime stage: {stages}")
    if not re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.M):
        fail(where, "the image does not run as a non-root USER")
    if not re.search(r"\bmake\b[^\n]*\ball\b", text):
        fail(where, "the build stage does not run make ... all")
    copied = []
    for m in re.finditer(r"^COPY\s+--from=build\s+(.+)$", text, re.M):
        *srcs, dest = m.group(1).split()
        for src_path in srcs:
            rel = src_path.removeprefix("/src/")
            if not rel.startswith("build/"):
                fail(where, f"COPY --from=build {src_path}: not under /src/build")
                continue
            if not os.path.exists(os.path.join(build, rel[len("build/"):])):
                fail(where, f"COPY --from=build {src_path}: {rel} does not exist after make")
            copied.append((rel, dest))
    for tool in ("ecclrun", "eccl-perf", "eccl-store"):
        if not any(r == f"build/bin/{tool}" and d.startswith("/opt/eccl/bin") for r, d in copied):
            fail(where, f"the image lacks /opt/eccl/bin/{tool}")
    for rel, dest in (("build/lib/", "/opt/eccl/lib/"), ("build/examples/", "/opt/eccl/examples/")):
        if (rel, dest) not in copied:
            fail(where, f"the image lacks {dest} (COPY --from=build /src/{rel} {dest})")
    with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as f:
        ignored = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    for need in ("Makefile", "include", "common", "store", "proxy", "core", "kernels",
                 "elastic", "nccl", "tools", "examples"):
        if not os.path.exists(os.path.join(root, need)):
            fail(where, f"make needs {need}, which the repository lacks")
        if any(pat.strip("/") == need for pat in ignored):
            fail(".dockerignore", f"leaves {need} out of the build context")
    print(f"check: deploy/Dockerfile: 2 stages, non-root, {len(copied)} paths copied from the "
          "build exist; .dockerignore keeps the sources")


OVERLAYS = {
    # name: what the rendered overlay must show
    "base": {"etcd_here": True, "external_secrets_ok": True},
    "cpu-demo": {"etcd_here": True, "external_secrets_ok": False,
                 "env": {"ECCL_DEVICE": "host"}, "no_extended": ["nvidia.com/gpu", "rdma/hca"]},
    "gpu": {"etcd_here": True, "external_secrets_ok": True, "env": {"ECCL_DEVICE": "cuda"},
            "extended": ["nvidia.com/gpu", "rdma/hca"]},
    "gpu-external-etcd": {"etcd_here": False, "external_secrets_ok": True,
                          "env": {"ECCL_DEVICE": "cuda"},
                          "extended": ["nvidia.com/gpu", "rdma/hca"]},
}


def main():
    global ROOT
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--ecclrun", required=True)
    ap.add_argument("--eccl-store", required=True)
    ap.add_argument("--objects", required=True)
    ap.add_argument("--no-pytorchjob", action="store_true", help="skip deploy/kubeflow")
    ap.add_argument("--build", help="the build folder: check deploy/Dockerfile against it")
    ap.add_argument("rendered", nargs="*", help="NAME=PATH of kubectl kustomize outputs")
    a = ap.parse_args()
    ROOT = a.root
    a.ecclrun = os.path.abspath(a.ecclrun)
    a.eccl_store = os.path.abspath(a.eccl_store)
    help_text = usage_of(a.ecclrun)
    store_help = usage_of(a.eccl_store)
    opts = ecclrun_options(help_text)
    if "rdzv-endpoint" not in opts:
        print(f"FAIL cannot read ecclrun's options from {a.ecclrun} --help")
        return 1
    objects = []
    # 1. Every YAML file of deploy/ parses, with no duplicate key; every object has a kind.
    nfiles = 0
    for d, _, files in os.walk(os.path.join(ROOT, "deploy")):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")):
                continue
            p = os.path.join(d, f)
            nfiles += 1
            try:
                docs = load_docs(p)
            except yaml.YAMLError as e:
                fail(os.path.relpath(p, ROOT), f"does not parse: {e}")
                continue
            for doc in docs:
                if not isinstance(doc, dict) and not isinstance(doc, list):
                    fail(os.path.relpath(p, ROOT), "a document is neither a map nor a list")
                elif isinstance(doc, dict) and not doc.get("kind") and f != "kustomization.yaml":
                    if not (isinstance(doc, dict) and "$patch" in doc):
                        fail(os.path.relpath(p, ROOT), "a document without kind")
    print(f"check: {nfiles} YAML files under deploy/ parse (no duplicate keys)")
    if a.build:
        check_dockerfile(ROOT, a.build)
    n_before = len(FAILURES)
    with tempfile.TemporaryDirectory(prefix="eccl-deploy-check.") as tmp:
        for item in a.rendered:
            name, _, path = item.partition("=")
            where = f"overlay {name}"
            objs = load_docs(path)
            for o in objs:
                objects.append({"source": name, "object": o})
            expect = OVERLAYS.get(name)
            if expect is None:
                fail(where, "an overlay this check does not know: add it to OVERLAYS")
                continue
            if check_etcd(where, objs) != expect["etcd_here"]:
                fail(where, "etcd " + ("missing" if expect["etcd_here"] else "still deployed"))
            check_indexed_job(where, objs, opts, a.ecclrun, store_help, tmp, expect)
            check_secret_refs(where, objs, expect["external_secrets_ok"])
            kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
            print(f"check: {where}: {len(objs)} objects ({', '.join(kinds)})")
        pj = os.path.join(ROOT, "deploy", "kubeflow", "pytorchjob.yaml")
        for o in [] if a.no_pytorchjob else load_docs(pj):
            objects.append({"source": "kubeflow/pytorchjob.yaml", "object": o})
            check_pytorchjob("kubeflow/pytorchjob.yaml", o, opts, a.ecclrun, store_help, tmp,
                             help_text)
            print("check: kubeflow/pytorchjob.yaml: PyTorchJob/"
                  f"{o['metadata']['name']} (the operator's PET_* env given to ecclrun)")
    for n in NOTES:
        print(f"NOTE {n}")
    with open(a.objects, "w", encoding="utf-8") as f:
        json.dump(objects, f)
    for fl in FAILURES:
        print(f"FAIL {fl}")
    print(f"check: ecclrun dry runs and invariants: {len(FAILURES) - n_before} failures "
          f"({len(FAILURES)} in all)")
    return 1 if FAILURES else 0


ROOT = "."
if __name__ == "__main__":
    sys.exit(main())
