#!/usr/bin/env bash
# test_manifests.sh - checks deploy/ without a cluster: every YAML file parses (yamllint too when
# installed); `kubectl kustomize` builds the base and every overlay; every object of the outputs and
# the PyTorchJob example is validated against the Kubernetes OpenAPI schemas (npm package
# kubernetes-models, pinned in tests/deploy/package-lock.json and installed into
# $ECCL_BUILD/deploy-npm) with unknown fields refused; check_manifests.py checks the project's
# invariants, running ecclrun itself on each pod's options and PET_* environment; the Dockerfile is
# linted (npm dockerfile-utils) and checked against the build folder; the etcd auth-setup Job's
# script runs against a real etcd on loopback. Then it breaks deploy/ on purpose, one way at a time,
# and expects each break to be caught. Exits 77 with
# one line when a tool it needs is missing. The Makefile copies it to
# $ECCL_BUILD/tests/deploy/test_manifests with the source folder filled in.
set -euo pipefail
src="@SRCDIR@"
[ -d "$src/deploy" ] || src="$(cd "$(dirname "$0")/../.." && pwd)"
build="${ECCL_BUILD:-build}"
case "$build" in /*) ;; *) build="$src/$build" ;; esac
skip() { echo "skip: $*"; exit 77; }

command -v python3 >/dev/null || skip "python3 is not installed"
python3 -c 'import yaml' 2>/dev/null || skip "python3 has no yaml module (apt-get install python3-yaml)"
command -v kubectl >/dev/null || skip "kubectl (with kustomize v4+) is not installed"
kver=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
if [ -z "$kver" ] || [ "$kver" -lt 4 ]; then skip "kubectl's kustomize is older than v4 (or absent)"; fi
command -v node >/dev/null || skip "node is not installed"
command -v npm >/dev/null || skip "npm is not installed"
ecclrun="$build/bin/ecclrun"
store="$build/bin/eccl-store"
if [ ! -x "$ecclrun" ] || [ ! -x "$store" ]; then skip "$ecclrun or $store is missing: run make first"; fi

# The schema validator, pinned by the lock file, in a folder of the build.
npmdir="$build/deploy-npm"
want=$(sed -n 's/.*"kubernetes-models": "\(.*\)".*/\1/p' "$src/tests/deploy/package.json")
have=$(node -p "require('$npmdir/node_modules/kubernetes-models/package.json').version" \
    2>/dev/null || true)
if [ "$have" != "$want" ] || ! cmp -s "$src/tests/deploy/package-lock.json" "$npmdir/package-lock.json"; then
    rm -rf "$npmdir" && mkdir -p "$npmdir"
    cp "$src/tests/deploy/package.json" "$src/tests/deploy/package-lock.json" "$npmdir/"
    (cd "$npmdir" && timeout 180 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
        >npm.log 2>&1) || { tail -n 5 "$npmdir/npm.log"; rm -rf "$npmdir"; \
        skip "npm could not install kubernetes-models $want"; }
fi
nm="$npmdir/node_modules"

work=$(mktemp -d /tmp/eccl-deploy-test.XXXXXX)
etcd_pid=
cleanup() {
    if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
echo "tools: $(kubectl version --client 2>/dev/null | tr '\n' ' ')| node $(node --version)" \
    "| kubernetes-models $want | PyYAML $(python3 -c 'import yaml; print(yaml.__version__)')" \
    "| yamllint $(yamllint --version 2>/dev/null | awk '{print $2}' || true)"

# Renders the base and the overlays named in $3... (all of them when none is named) of the
# deploy/ folder in $1 into $2/NAME.yaml; prints the NAME=PATH arguments of check_manifests.py.
render() {
    local root=$1 out=$2 d name
    shift 2
    for d in "$root/deploy/k8s/base" "$root"/deploy/k8s/overlays/*/; do
        d=${d%/}
        name=$(basename "$d")
        if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
        kubectl kustomize "$d" >"$out/$name.yaml" 2>"$out/$name.err" ||
            { echo "FAIL kubectl kustomize $d:" >&2; cat "$out/$name.err" >&2; return 1; }
        printf '%s=%s ' "$name" "$out/$name.yaml"
    done
}

# Runs the checks on the deploy/ folder in $1 (outputs in $2): every overlay and the PyTorchJob,
# or only those named in $3... ("pytorchjob" for the PyTorchJob).
check() {
    local root=$1 out=$2 rendered rc=0 pj=()
    shift 2
    if [ $# -gt 0 ] && [[ " $* " != *" pytorchjob "* ]]; then pj=(--no-pytorchjob); fi
    rendered=$(render "$root" "$out" "$@") || return 1
    # shellcheck disable=SC2086 # NAME=PATH words, no spaces
    python3 "$src/tests/deploy/check_manifests.py" --root "$root" --ecclrun "$ecclrun" \
        --eccl-store "$store" --build "$build" --objects "$out/objects.json" "${pj[@]}" \
        $rendered || rc=1
    [ -s "$out/objects.json" ] || return 1
    # SCHEMA=0: the project's checks alone (the breaks that they must catch).
    [ "${SCHEMA:-1}" = 0 ] && return $rc
    node "$src/tests/deploy/lint_dockerfile.mjs" "$nm" "$root/deploy/Dockerfile" || rc=1
    node "$src/tests/deploy/validate_k8s.mjs" "$nm" "$out/objects.json" || rc=1
    return $rc
}

if command -v yamllint >/dev/null; then
    yamllint -s -d '{extends: default, rules: {line-length: {max: 200},
        document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1},
        indentation: {indent-sequences: whatever}}}' "$src/deploy"
    echo "yamllint: deploy/ is clean"
fi

mkdir -p "$work/real"
if ! check "$src" "$work/real"; then
    echo "test_manifests: FAILED"
    exit 1
fi

# The etcd auth-setup Job's script, run against a real etcd on loopback (Debian's etcd-server):
# auth ends up on, the job's user reaches /eccl/ through eccl-store (as the training pods' init
# container does) and nothing outside it, a second run changes nothing, a wrong password fails.
if [ -x /usr/bin/etcd ] && command -v etcdctl >/dev/null; then
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
    cport=$(free_port); pport=$(free_port)
    /usr/bin/etcd --name t --data-dir "$work/etcd" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "t=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    python3 -c 'import sys, yaml
job = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d["kind"] == "Job"][0]
print(job["spec"]["template"]["spec"]["containers"][0]["command"][2])' \
        "$src/deploy/k8s/base/etcd-auth-job.yaml" >"$work/auth-setup.sh"
    auth() { # PASSWORD -> runs the Job's script with the Job's variables
        ETCD_ENDPOINTS="http://127.0.0.1:$cport" ETCD_ROOT_PASSWORD=root-pw ECCL_STORE_USER=eccl \
            ECCL_STORE_PASSWORD="$1" timeout 60 bash -ec "$(cat "$work/auth-setup.sh")" 2>&1 |
            grep -v '"level"'
        return "${PIPESTATUS[0]}"
    }
    st() { # PASSWORD eccl-store-args...
        local pw=$1
        shift
        ECCL_STORE_USER=eccl ECCL_STORE_PASSWORD="$pw" "$store" --timeout 5000 "$@"
    }
    ok=1
    auth job-pw >"$work/auth1.log" || { ok=0; cat "$work/auth1.log"; }
    grep -q "auth enabled" "$work/auth1.log" || { ok=0; echo "FAIL auth setup: auth not enabled"; }
    st job-pw --url "etcd://127.0.0.1:$cport/eccl" ls --limit 1 >/dev/null ||
        { ok=0; echo "FAIL the job's user cannot list /eccl"; }
    st job-pw --url "etcd://127.0.0.1:$cport/eccl" put k v >/dev/null ||
        { ok=0; echo "FAIL the job's user cannot write under /eccl/"; }
    if st job-pw --url "etcd://127.0.0.1:$cport/other" put k v >/dev/null 2>&1; then
        ok=0; echo "FAIL the job's user can write outside /eccl/"
    fi
    if ! auth job-pw >"$work/auth2.log" || ! grep -q "already on" "$work/auth2.log"; then
        ok=0; echo "FAIL a second auth setup run:"; cat "$work/auth2.log"
    fi
    if auth wrong-pw >"$work/auth3.log"; then ok=0; echo "FAIL auth setup accepted a wrong password"; fi
    [ "$ok" = 1 ] || { echo "test_manifests: FAILED"; exit 1; }
    echo "etcd: the auth-setup Job's script on etcd $(/usr/bin/etcd --version | awk '/etcd Version/ {print $3}'): auth on, user eccl limited to /eccl/, idempotent"
    kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; etcd_pid=
else
    echo "etcd: not installed here: the auth-setup script was not run"
fi

# Each of these breaks must be caught: FILE#sed expression#text expected in the output#what to
# check (an overlay, or pytorchjob)#schema: whether the schema validator is the one to catch it.
breaks=(
    "deploy/k8s/base/train.yaml#s/^  parallelism: 4/  parallelism: 3/#differ from the elastic maximum#cpu-demo#0"
    "deploy/k8s/base/train.yaml#0,/port: metrics/s//port: 9401/#is not a port of the container#cpu-demo#0"
    "deploy/k8s/base/train.yaml#s|value: /var/run/secrets/eccl/job-secret|value: /var/run/secrets/eccl/secret|#not a key of Secret#cpu-demo#0"
    "deploy/k8s/base/train-env.yaml#s/PET_ELASTIC_MODE: grow/PET_ELASTIC_MODE: grwo/#refused the pod's options#base#0"
    "deploy/k8s/base/train.yaml#s/- --metrics-port=9400/- --rdzv-conf=timeout=9/#has no option --rdzv-conf#base#0"
    "deploy/k8s/base/train.yaml#s/readinessProbe:/readinesProbe:/#no such field in ApiCoreV1Container#cpu-demo#1"
    "deploy/k8s/base/train.yaml#s/completionMode: Indexed/completionMode: indexed/#must be equal to one of the allowed values#cpu-demo#1"
    "deploy/k8s/base/etcd.yaml#s/eccl-etcd-2=http/eccl-etcd-9=http/#is not the StatefulSet's members#cpu-demo#0"
    "deploy/k8s/overlays/gpu/train-env.yaml#s/ECCL_NET: ib/PET_ELASTIC_MODE: replace/#is never admitted (use grow)#gpu#0"
    "deploy/k8s/overlays/gpu/train-gpu.yaml#s/rdma\/hca: 1/rdma\/hca: 0/#resource rdma/hca#gpu#0"
    "deploy/kubeflow/pytorchjob.yaml#s/rdzvBackend: etcd-v2/rdzvBackend: zookeeper/#is not one ecclrun takes#pytorchjob#0"
    "deploy/kubeflow/pytorchjob.yaml#s/- name: pytorch$/- name: trainer/#no container named pytorch#pytorchjob#0"
    "deploy/Dockerfile#s/^USER 10001:10001/USER root/#does not run as a non-root USER#pytorchjob#0"
    "deploy/Dockerfile#s/^WORKDIR \/src/WORKDIR/#Instruction has no arguments#pytorchjob#1"
    "deploy/Dockerfile#s/ \/src\/build\/bin\/eccl-store / \/src\/build\/bin\/eccl-stor /#build/bin/eccl-stor does not exist#pytorchjob#0"
)
caught=0
for b in "${breaks[@]}"; do
    IFS='#' read -r file expr expect what schema <<<"$b"
    root="$work/break"
    rm -rf "$root" && mkdir -p "$root/out"
    cp -r "$src/deploy" "$root/deploy"
    cp "$src/.dockerignore" "$root/"
    for e in "$src"/*; do [ "${e##*/}" = deploy ] || ln -s "$e" "$root/${e##*/}"; done
    sed -i "$expr" "$root/$file"
    if cmp -s "$src/$file" "$root/$file"; then
        echo "FAIL break '$expr' changed nothing in $file"
        exit 1
    fi
    # shellcheck disable=SC2086 # what: one word or more
    if SCHEMA=$schema check "$root" "$root/out" $what >"$root/log" 2>&1; then
        echo "FAIL break of $file ($expr) was not caught"
        exit 1
    fi
    if ! grep -qF -- "$expect" "$root/log"; then
        echo "FAIL break of $file ($expr) failed without '$expect':"
        grep -E 'FAIL|refused' "$root/log" | head -5
        exit 1
    fi
    caught=$((caught + 1))
done
echo "breaks: $caught of ${#breaks[@]} deliberate breaks caught"
echo "test_manifests: PASSED"
