#!/usr/bin/env bash
# test_cluster_podkill - a whole pod dies mid-training and a new pod, with a new address, takes
# its place (docs/cluster-test.md).
#
# Three pods (network namespaces on a bridge, tests/cluster/cluster_lib.sh) run ecclrun with 2
# workers of examples/elastic_train each, on an etcd of their own (in its own namespace), in
# replace mode. Once the 6 ranks train, every process of pod b (its ecclrun and both workers) is
# SIGKILLed at once, and pod d starts in a new namespace with a new veth and a new IP address, with
# b's node rank, as Kubernetes would start the replacement of a lost StatefulSet pod. Checked:
# - the first generation has the 6 ranks of pods a, b, c;
# - the survivors see the failure and recover into a later generation of 6 ranks, which pod d's
#   workers join as replacements (from the agreed step, state copied from a survivor);
# - every surviving pod and pod d exit 0, and the final parameters are bit-identical to a
#   failure-free run of the same steps (elastic_train's EQUAL, and the checksum of
#   `elastic_train --reference`);
# - the event logs (ECCL_EVENT_LOG, one per pod) are kept in $ECCL_BUILD/tests/logs/cluster-podkill/;
#   where the build writes them, each pod's is there and pod d's has its workers' generation;
# - where build/bin/eccl-timeline exists, the timeline PNG is rendered into
#   $ECCL_BUILD/tests/logs/cluster-podkill-timeline.png (checked: written, a PNG).
# make installs it as build/tests/cluster/test_cluster_podkill (tests/run.sh cluster/ runs it).
# Exits 77 with one line where namespaces cannot be made or etcd is missing.
set -u
CL_NAME=podkill
CL_SRC=@SRCDIR@
# shellcheck source=tests/cluster/cluster_lib.sh
. "$CL_SRC/tests/cluster/cluster_lib.sh"

STEPS=${CLUSTER_STEPS:-600}
STEP_MS=${CLUSTER_STEP_MS:-10}

cl_job_begin "$STEPS"

export ECCL_DEBUG=WARN ECCL_ELASTIC_LEASE_MS=2000 ECCL_ELASTIC_LAST_CALL_MS=1500 ECCL_ELASTIC_REPLACE_WAIT_MS=20000
export ECCL_ELASTIC_RECOVER_TIMEOUT_MS=30000 ECCL_ELASTIC_JOIN_TIMEOUT_MS=30000
cl_job_start replace "$STEPS" "$STEP_MS"
sleep 1.5 # training
cl_pod_kill b
cl_pod_start d 1 21 "${cl_pod_args[@]}"

cl_job_wait a c d

cl_check "pod a exited 0" test "${cl_pod_rc[a]}" = 0
cl_check "pod c exited 0" test "${cl_pod_rc[c]}" = 0
cl_check "pod d (the replacement) exited 0" test "${cl_pod_rc[d]}" = 0
cl_check "the survivors saw the failure" grep -qE 'failure seen|generation revoked' "$cl_all"
cl_check "the 4 survivors recovered into a generation of 6" \
    test "$(cl_npids 'recovered in .* rank [0-9] of 6' "$CL_LOGS"/{a,c}.log)" = 4
cl_check "pod d's 2 workers joined a later generation as replacements" \
    test "$(cl_count "$CL_LOGS/d.log" 'gen ([2-9]|[1-9][0-9]+): joined: rank [0-9] of 6, agreed step [0-9]+ \(replacement\)')" = 2
cl_check "pod d's workers took their state from a survivor" \
    test "$(cl_count "$CL_LOGS/d.log" 'state restored to step')" = 2
cl_check "pod d's workers finished" test "$(cl_count "$CL_LOGS/d.log" 'worker [01] .* finished')" = 2
cl_job_check_equal "$STEPS"

if [ -e "$CL_LOGS/a.jsonl" ]; then
    for p in a b c d; do
        cl_check "pod $p's event log $p.jsonl was written" test -s "$CL_LOGS/$p.jsonl"
    done
    cl_check "pod d's event log has the generation that its 2 workers joined" \
        test "$(grep -E '"event": *"generation"' "$CL_LOGS/d.jsonl" | grep -oE '"pid": *[0-9]+' | sort -u | wc -l)" = 2
else
    cl_say "event log: ECCL_EVENT_LOG wrote nothing (not in this build): not checked"
fi
timeline="$CL_BUILD/bin/eccl-timeline"
png="$CL_BUILD/tests/logs/cluster-podkill-timeline.png"
rm -f "$png"
if [ -x "$timeline" ]; then
    "$timeline" -o "$png" "$CL_LOGS"/[abcd].jsonl >"$CL_LOGS/timeline.log" 2>&1
    cl_check "eccl-timeline rendered $png" test -s "$png"
    cl_check "it is a PNG" test "$(head -c 8 "$png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a
else
    cl_say "timeline: $timeline is not built: no PNG rendered (skipped)"
fi

[ "$cl_failed" = 0 ] || cl_die "see $CL_LOGS"
cl_say "PASSED: pod b killed whole, pod d joined with a new address, final parameters EQUAL"
