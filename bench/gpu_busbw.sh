#!/usr/bin/env bash
# gpu_busbw.sh - bus bandwidth of eccl's CUDA communicators with several ranks (processes) on one
# GPU: build/bin/eccl-perf -G 1 for AllReduce and AllGather with 2, 4 and 8 ranks, 8 B to 1 GiB.
# Writes DIR/gpu_busbw.md (a markdown table per collective: time and busbw per size and rank
# count) and DIR/gpu_busbw.log (every eccl-perf output), DIR being the first argument, else $OUT,
# else bench/results/tmp.
#
#   bench/gpu_busbw.sh [DIR]
#   RANKS="2 4" COLLS=allreduce BUDGET=120 bench/gpu_busbw.sh      fewer runs, another budget
#   ECCL_BUILD=build/other ...                                     where eccl-perf is
#
# Each (collective, rank count) runs eccl-perf up to three times, so that large sizes take few
# iterations and are not checked (checking 1 GiB on the host takes longer than moving it):
#   SMALL   8 B .. 512 KiB:  -n 10 -w 2, checked (-c 1)
#   MEDIUM  1 MiB .. 64 MiB: -n 2 -w 0, checked
#   LARGE   256 MiB, 1 GiB:  -n 1 -w 0, not checked (-c 0)
# (the variables override the flags). The time is boxed: BUDGET seconds in all (default 280),
# shared out as the runs go (what is left / the pairs still to run), each run bounded by
# eccl-perf's -T; rows a run did not reach in its share are marked in the table.
#
# MPS: the ranks are processes; without MPS the driver time-slices their kernels (on an H100,
# an 8-byte AllReduce of 2 ranks took 4.5 ms, of 8 ranks 54 ms, and large sizes with 4 and 8
# ranks do not fit in 5 minutes). So by default (MPS=auto) the script starts an MPS control
# daemon of its own (pipe and log folders in a temporary folder; it says "quit" to it at the
# end, whatever happens), and goes on without one if that fails. MPS=1 requires it, MPS=0
# runs time-sliced. The table's header says which.
set -u
cd "$(dirname "$0")/.." || exit 1
build=${ECCL_BUILD:-build}
perf="$build/bin/eccl-perf"
outdir=${1:-${OUT:-bench/results/tmp}}
ranks=${RANKS:-2 4 8}
colls=${COLLS:-allreduce allgather}
budget=${BUDGET:-280}
small=${SMALL:--b 8 -e 512K -f 4 -n 10 -w 2 -c 1}
medium=${MEDIUM:--b 1M -e 64M -f 4 -n 2 -w 0 -c 1}
large=${LARGE:--b 256M -e 1G -f 4 -n 1 -w 0 -c 0}

if [ ! -x "$perf" ]; then
    echo "gpu_busbw.sh: $perf is missing (make tools)" >&2
    exit 1
fi
mkdir -p "$outdir" || exit 1
log="$outdir/gpu_busbw.log"
md="$outdir/gpu_busbw.md"
rows="$outdir/.gpu_busbw.rows"
: >"$log"
: >"$rows"
export ECCL_SOCKET_IFNAME=${ECCL_SOCKET_IFNAME:-lo}

mode=${MPS:-auto}
mps=" without MPS (time-sliced)"
if [ "$mode" != 0 ]; then
    mps_dir=$(mktemp -d /tmp/eccl-mps.XXXXXX) || exit 1
    export CUDA_MPS_PIPE_DIRECTORY="$mps_dir/pipe" CUDA_MPS_LOG_DIRECTORY="$mps_dir/log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
        # The daemon (and the server it starts) stops on "quit", whatever happens to us.
        trap 'echo quit | nvidia-cuda-mps-control; rm -rf "$mps_dir"' EXIT
        mps=" under MPS"
    else
        rm -rf "$mps_dir"
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        if [ "$mode" = 1 ]; then
            echo "gpu_busbw.sh: could not start nvidia-cuda-mps-control (MPS=1)" >&2
            exit 1
        fi
        echo "gpu_busbw.sh: no MPS daemon could be started: the ranks are time-sliced" >&2
    fi
fi

npairs=0
for coll in $colls; do for n in $ranks; do npairs=$((npairs + 1)); done; done
start=$(date +%s)
status=0
for coll in $colls; do
    for n in $ranks; do
        # This pair's share of what is left.
        left=$((budget - ($(date +%s) - start)))
        share=$((left / npairs))
        npairs=$((npairs - 1))
        pair_end=$(($(date +%s) + share))
        stopped=""
        for phase in small medium large; do
            flags=${!phase}
            limit=$((pair_end - $(date +%s)))
            if [ -n "$stopped" ] || [ "$limit" -lt 5 ]; then
                echo "### $coll $n ranks $phase: not run (${stopped:-its share of the budget is spent})" >>"$log"
                printf '%s\t%s\t%s\tSKIPPED\n' "$coll" "$n" "$phase" >>"$rows"
                stopped=${stopped:-its share of the budget is spent}
                continue
            fi
            t0=$(date +%s.%N)
            echo "### $perf -G 1 -C $coll -N $n $flags -T $limit" >>"$log"
            # shellcheck disable=SC2086 # the flags are words
            "$perf" -G 1 -C "$coll" -N "$n" $flags -T "$limit" >"$outdir/.run.out" 2>"$outdir/.run.err"
            rc=$?
            secs=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
            {
                cat "$outdir/.run.out"
                sed 's/^/stderr: /' "$outdir/.run.err"
                echo "### exit $rc after ${secs}s"
            } >>"$log"
            echo "$coll $n ranks $phase: exit $rc, ${secs}s" >&2
            if [ "$rc" -eq 124 ]; then
                stopped="the run before it was stopped at its -T"
            elif [ "$rc" -ne 0 ]; then
                status=1
                stopped="the run before it failed"
            fi
            # Table rows (complete ones only: a run stopped by -T may leave half a row): the
            # row's place (phase, index: the same requested size whatever the rank count),
            # size, time busbw #wrong (out of place), time busbw #wrong (in place).
            awk -v c="$coll" -v n="$n" -v ph="$phase" -v rc="$rc" '
                BEGIN { base = ph == "small" ? 0 : ph == "medium" ? 1000 : 2000 }
                /^ *[0-9]+ +[0-9]+ / && NF == 13 {
                    printf "%s\t%s\t%s\tROW\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n",
                        c, n, ph, $1, $6, $8, $9, $10, $12, $13, base + seen
                    seen++
                }
                END { printf "%s\t%s\t%s\tEXIT\t%s\t%d\n", c, n, ph, rc, seen }
            ' "$outdir/.run.out" >>"$rows"
            [ -z "${gpu_name:-}" ] &&
                gpu_name=$(sed -n 's/^#  Rank  0 .* device *[0-9-]* \[[^]]*\] //p' "$outdir/.run.out" | head -1)
        done
    done
done
rm -f "$outdir/.run.out" "$outdir/.run.err"
total=$(($(date +%s) - start))

{
    echo "# eccl CUDA communicators: bus bandwidth with several ranks on one GPU"
    echo
    echo "GPU: ${gpu_name:-unknown}; $(date -u +%Y-%m-%dT%H:%MZ); host $(hostname -s); ${total}s in all."
    echo "\`eccl-perf -G 1 -N <ranks>\` (one process per rank, all on GPU 0${mps}), float, sum;"
    echo "time: the max over ranks of each rank's average iteration time, measured with CUDA events."
    echo "Flags per size range: \`$small\` / \`$medium\` / \`$large\`."
    echo "busbw: out of place / in place, GB/s. #wrong: checked elements that differ (N/A: not checked)."
    echo
    for coll in $colls; do
        echo "## $coll"
        echo
        awk -F'\t' -v c="$coll" -v rlist="$ranks" '
            BEGIN { nr = split(rlist, R, " ") }
            $1 != c { next }
            $4 == "ROW" {
                # A row is its place; its size is the largest any rank count printed there
                # (AllGather sizes are rounded down to a multiple of the rank count).
                key = $12 SUBSEP $2
                if (!($12 in seen)) { seen[$12] = 1; order[++ns] = $12 }
                if ($5 + 0 > size[$12] + 0) size[$12] = $5
                t[key] = $6; bo[key] = $7; bi[key] = $10
                w[key] = ($8 == "N/A" && $11 == "N/A") ? "N/A" : ($8 + 0 + $11)
            }
            $4 == "EXIT" && $5 == 124 { note[$2] = note[$2] " " $3 ": stopped at its time limit after " $6 " rows;" }
            $4 == "EXIT" && $5 != 0 && $5 != 124 { note[$2] = note[$2] " " $3 ": FAILED, exit " $5 " after " $6 " rows;" }
            $4 == "SKIPPED" { note[$2] = note[$2] " " $3 ": not run (time budget);" }
            END {
                printf "| size (B) |"
                for (i = 1; i <= nr; i++) printf " %s ranks: time (us) | busbw (GB/s) | #wrong |", R[i]
                printf "\n|---:|"
                for (i = 1; i <= nr; i++) printf "---:|---:|---:|"
                printf "\n"
                for (a = 1; a <= ns; a++) for (b = a + 1; b <= ns; b++)
                    if (order[b] + 0 < order[a] + 0) { x = order[a]; order[a] = order[b]; order[b] = x }
                for (s = 1; s <= ns; s++) {
                    printf "| %s |", size[order[s]]
                    for (i = 1; i <= nr; i++) {
                        key = order[s] SUBSEP R[i]
                        if (key in t) printf " %s | %s / %s | %s |", t[key], bo[key], bi[key], w[key]
                        else printf " - | - | - |"
                    }
                    printf "\n"
                }
                for (i = 1; i <= nr; i++)
                    if (R[i] in note) printf "\n%s ranks:%s", R[i], note[R[i]]
                printf "\n"
            }
        ' "$rows"
        echo
    done
} >"$md"
rm -f "$rows"
cat "$md"
echo "gpu_busbw.sh: wrote $md and $log" >&2
exit $status
