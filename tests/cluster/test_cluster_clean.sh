#!/usr/bin/env bash
# test_cluster_clean - a job with no failure ends quietly (docs/cluster-test.md).
#
# Three pods (network namespaces on a bridge, tests/cluster/cluster_lib.sh) run ecclrun with 2
# workers of examples/elastic_train each, on an etcd of their own, to the end. The workers finish
# at slightly different moments and leave one after another (ecclElasticLeave: a closing barrier,
# a graceful destroy, the leave announcement, the lease revoke). Checked:
# - every pod's ecclrun exits 0 and the final parameters equal a failure-free run's;
# - the job stayed in generation 1: nobody took a departure for a failure;
# - no ECCL WARN line in any worker's log but the store client's: a member that leaves first is a departure to the
#   others (EL_RDZV_EV_MEMBER_LEFT), and the sockets it closes after its last message are not
#   errors of the peers still receiving;
# - nothing is left running in any pod.
# Logs stay in $ECCL_BUILD/tests/logs/cluster-clean/. Exits 77 with one line where namespaces
# cannot be made or etcd is missing.
set -u
CL_NAME=clean
CL_SRC=@SRCDIR@
# shellcheck source=tests/cluster/cluster_lib.sh
. "$CL_SRC/tests/cluster/cluster_lib.sh"

STEPS=${CLUSTER_STEPS:-300}
STEP_MS=${CLUSTER_STEP_MS:-10}

cl_job_begin "$STEPS"
export ECCL_DEBUG=INFO ECCL_ELASTIC_LAST_CALL_MS=1000
cl_job_start grow "$STEPS" "$STEP_MS"
cl_job_wait a b c

for p in a b c; do
    cl_check "pod $p exited 0" test "${cl_pod_rc[$p]}" = 0
done
cl_job_check_equal "$STEPS"
cl_check "every rank stayed in generation 1 (no recovery)" \
    test "$(cl_count "$cl_all" 'recovered in|failure seen|generation revoked')" = 0
# The store client's own warnings (a keepalive that timed out on a busy machine) are not about
# the job's ending.
warns=$(cat "$CL_LOGS"/*.dbg 2>/dev/null | grep -F ' WARN ' | grep -vE '^[^ ]+ \[[0-9-]+\] (etcd|store)\.c:')
[ -z "$warns" ] || echo "$warns" | head -n 20
cl_check "no WARN in the workers' logs (the store client's aside)" test -z "$warns"
for p in a b c; do
    cl_check "nothing left running in pod $p" test -z "$("$CL_IP" netns pids "${cl_pod_ns[$p]}")"
done

[ "$cl_failed" = 0 ] || cl_die "see $CL_LOGS"
cl_say "PASSED: 6 ranks on 3 pods trained to the end and left without a warning"
