# Sourced by the bench scripts: the machine-readable result lines bench/run-all collects into
# bench/REPORT.md (see bench/README.md, "Result lines"). Not a bench script itself.
#
#   result BENCH METRIC VALUE UNIT [BASELINE_NAME BASELINE_VALUE] [TARGET]
# prints RESULT|BENCH|METRIC|VALUE|UNIT|BASELINE_NAME|BASELINE_VALUE|RATIO|TARGET with
# RATIO = VALUE / BASELINE_VALUE (two decimals) and "-" for what does not apply. TARGET reads
# like ">= 0.90": it applies to the ratio when there is a baseline, else to the value.
result() {
    local bench=$1 metric=$2 value=$3 unit=$4 bname=${5:--} bvalue=${6:--} target=${7:--} ratio=-
    if [[ $bvalue != - && $bname != - ]]; then
        ratio=$(awk -v a="$value" -v b="$bvalue" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    fi
    echo "RESULT|$bench|$metric|$value|$unit|$bname|$bvalue|$ratio|$target"
}

# avg SUM N -> SUM / N with the given decimals (default 0)
avg() {
    awk -v s="$1" -v n="$2" -v d="${3:-0}" 'BEGIN { printf "%.*f", d, (n > 0 ? s / n : 0) }'
}
