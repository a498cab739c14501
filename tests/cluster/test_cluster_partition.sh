#!/usr/bin/env bash
# test_cluster_partition - one pod is cut off the network mid-training (docs/cluster-test.md).
#
# Three pods (network namespaces on a bridge, tests/cluster/cluster_lib.sh) run ecclrun with 2
# workers of examples/elastic_train each, on an etcd of their own. Once the 6 ranks train, pod b's
# port on the bridge is taken down: its packets are dropped and nothing tells its sockets (no
# reset, no error), as when a node drops off the network. Checked:
# - lease expiry removes pod b's members: the 4 other ranks form a new generation without them
#   within ECCL_ELASTIC_LEASE_MS + a margin (nothing else can tell them: b's agent and workers
#   are alive, and evict nobody);
# - the link comes back up; pod b's workers find that their leases are gone, join the job again
#   (docs/elastic.md: a member whose lease is gone registers again) and are admitted at a step
#   boundary (grow mode) into a later generation of 6 ranks;
# - every pod's ecclrun exits 0 (none hangs), and the final parameters are bit-identical to a
#   failure-free run (elastic_train's EQUAL, and the checksum of `elastic_train --reference`);
# - nothing is left running in any pod.
# Logs (ecclrun's, the workers', ECCL_EVENT_LOG's) stay in $ECCL_BUILD/tests/logs/cluster-partition/.
# make installs it as build/tests/cluster/test_cluster_partition (tests/run.sh cluster/ runs it).
# Exits 77 with one line where namespaces cannot be made or etcd is missing.
set -u
CL_NAME=partition
CL_SRC=@SRCDIR@
# shellcheck source=tests/cluster/cluster_lib.sh
. "$CL_SRC/tests/cluster/cluster_lib.sh"

STEPS=${CLUSTER_STEPS:-700}
STEP_MS=${CLUSTER_STEP_MS:-10}
LEASE_MS=2000
MARGIN_S=8 # scheduling on 2 busy cores, the last-call window, the agreement: a no-hang bound

cl_job_begin "$STEPS"

export ECCL_DEBUG=INFO ECCL_ELASTIC_LEASE_MS=$LEASE_MS ECCL_ELASTIC_LAST_CALL_MS=1000 ECCL_ELASTIC_REPLACE_WAIT_MS=1000
export ECCL_ELASTIC_RECOVER_TIMEOUT_MS=30000 ECCL_ELASTIC_JOIN_TIMEOUT_MS=30000
cl_job_start grow "$STEPS" "$STEP_MS"
sleep 1.5 # training
cl_check "pod a's ranks reach the other pods through NET connectors (sockets over the bridge), not SHM" \
    cl_check_net_between_pods a
cut_at=$(cl_elapsed)
cl_pod_link b down

# The survivors' new generation without b: 2 workers each of a and c recover into 4 ranks.
bound=$((LEASE_MS / 1000 + MARGIN_S))
ok=0
cl_wait_npids 4 "$bound" 'recovered in .* rank [0-9] of 4' "$CL_LOGS"/{a,c}.log && ok=1
cl_check "lease expiry removed pod b: the 4 other ranks formed a generation without it within ${bound} s (lease TTL $LEASE_MS ms + $MARGIN_S s)" test "$ok" = 1
if [ "$ok" = 1 ]; then
    line=$(cat "$CL_LOGS"/{a,c}.log | grep -E 'recovered in .* rank [0-9] of 4' | sort | tail -n 1)
    formed=$(echo "$line" | sed -E 's/^\[\+ *([0-9.]+) s\].*/\1/')
    gen_without=$(echo "$line" | sed -E 's/.*generation ([0-9]+),.*/\1/')
    cl_say "generation $gen_without (4 ranks) at +$formed s: $(awk -v a="$formed" -v b="$cut_at" 'BEGIN { printf "%.2f", a - b }') s after the cut"
    # The survivors go on without b: each of the 4 finishes a step in that generation.
    cl_check "the 4 other ranks trained on without pod b" \
        cl_wait_npids 4 10 "gen $gen_without: first step after recovery done" "$CL_LOGS"/{a,c}.log
else
    gen_without=999999
fi
sleep 1
cl_pod_link b up

cl_job_wait a b c

cl_check "pod a exited 0" test "${cl_pod_rc[a]}" = 0
cl_check "pod c exited 0" test "${cl_pod_rc[c]}" = 0
cl_check "pod b's workers found their leases gone (keepalive could not refresh them)" \
    test "$(cat "$CL_LOGS"/b.*.dbg | grep -E 'lease [0-9]+ is lost' | grep -oE '^[^ ]+:[0-9]+:' | sort -u | wc -l)" = 2
rejoined=$(grep -E 'recovered in .* generation [0-9]+, rank [0-9] of 6' "$CL_LOGS/b.log" |
    sed -E 's/.*pid ([0-9]+) .*generation ([0-9]+),.*/\1 \2/' | awk -v g="$gen_without" '$2 > g { print $1 }' | sort -u | wc -l)
cl_check "pod b's 2 workers joined again, in a generation of 6 after generation $gen_without" test "$rejoined" = 2
cl_check "pod b exited 0" test "${cl_pod_rc[b]}" = 0
cl_job_check_equal "$STEPS"
for p in a b c; do
    cl_check "nothing left running in pod $p" test -z "$("$CL_IP" netns pids "${cl_pod_ns[$p]}")"
done
# Where the job stood when b came back: the generation that took b back must not go behind it
# (b's own, older step has no say: docs/internals/rdzv.md).
back=$(grep -hE 'gen [0-9]+: (joiners waiting|generation revoked) at step' "$CL_LOGS"/{a,c}.log | sed -E 's/.* at step ([0-9]+).*/\1/' | sort -n | tail -n 1)
agreed=$(grep -hE 'recovered in .* of 6, agreed step' "$CL_LOGS/b.log" | sed -E 's/.*agreed step ([0-9-]+).*/\1/' | head -n 1)
cl_say "when pod b came back the others were at step ${back:-?}; the generation that took b back agreed step ${agreed:-?}"
cl_check "the generation that took b back agreed a step no older than the others' (${agreed:-?} >= ${back:-?})" \
    test "${agreed:--1}" -ge "${back:-0}"

[ "$cl_failed" = 0 ] || cl_die "see $CL_LOGS"
cl_say "PASSED: pod b cut off, removed by lease expiry, joined again; final parameters EQUAL"
