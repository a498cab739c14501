#!/usr/bin/env bash
# Every ECCL_* variable the code reads (declared once with ECCL_PARAM_INT/STR, or read with
# getenv) must have a row in docs/env.md.
set -u
cd "$(dirname "$0")/.."
vars=$( (grep -rhoE 'ECCL_PARAM_(INT|STR)\([a-z0-9_]+, "ECCL_[A-Z0-9_]+"' common core kernels proxy store elastic nccl tools 2>/dev/null |
          sed -E 's/.*"(ECCL_[A-Z0-9_]+)"/\1/'
        grep -rhoE 'getenv\("ECCL_[A-Z0-9_]+"\)' common core kernels proxy store elastic nccl tools 2>/dev/null |
          sed -E 's/getenv\("(ECCL_[A-Z0-9_]+)"\)/\1/') | sort -u)
missing=0
for v in $vars; do
    grep -q "\`$v\`" docs/env.md || { echo "docs/env.md lacks $v"; missing=1; }
done
[ $missing -eq 0 ] && echo "check-env-docs: OK ($(echo "$vars" | wc -w) variables)"
exit $missing
