#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (configured in pyproject.toml, [tool.mutmut]), within a time budget.
#
#   scripts/mutation.sh [-b SECONDS] [-s] [MODULE ...]
#
# MODULE: configuration_embgpt, modeling_embgpt, formats (or one of its modules, e.g. formats.gpt2), checkpoints
# (default: all four). The budget (default 600 s, or $MUTATION_BUDGET) bounds the whole run; mutants not reached in
# time are reported as "not checked", and the next run checks only those (mutmut keeps its results in mutants/;
# delete the folder to start over). -s reruns the mutants that survived instead: after writing tests for them.
# $PYTHON picks the interpreter (default: python); $MUTATION_CHILDREN the parallel test processes (default 1).
#
# Prints killed / survived / timed out per run and every surviving mutant's diff. A survivor is either harmless
# (say why in the issue's closing note) or a missing test: write the test, watch it kill the mutant, rerun.
# Not in CI: a module takes minutes. Run it before closing an issue that touches these modules.
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${MUTATION_BUDGET:-600}"
rerun="not checked"  # the status of the mutants this run checks
while [[ "${1:-}" == -* ]]; do
    case "$1" in
        -b | --budget) budget="$2"; shift 2 ;;
        -s | --survivors) rerun="survived"; shift ;;
        *) echo "unknown option $1; usage: scripts/mutation.sh [-b SECONDS] [-s] [MODULE ...]" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python}"
children="${MUTATION_CHILDREN:-1}"
# mutmut forks a worker per mutant (pyproject.toml: from a fork server); with one OpenMP thread per process no pool
# crosses a fork (an inherited one can hang a worker without using CPU, below the CPU-time limit that stops it).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

declare -A PATTERNS=(
    [configuration_embgpt]="hf_embgpt.configuration_embgpt.*"
    [modeling_embgpt]="hf_embgpt.modeling_embgpt.*"
    [formats]="hf_embgpt.formats.*"
    [checkpoints]="hf_embgpt.training.checkpoints.*"
)
modules=("$@")
[[ ${#modules[@]} -gt 0 ]] || modules=(configuration_embgpt modeling_embgpt formats checkpoints)
patterns=()
for module in "${modules[@]}"; do
    if [[ -n "${PATTERNS[$module]:-}" ]]; then
        patterns+=("${PATTERNS[$module]}")
    elif [[ "$module" =~ ^formats\.[a-z0-9_]+$ && -f "src/hf_embgpt/${module/./\/}.py" ]]; then
        patterns+=("hf_embgpt.$module.*")  # one module of formats/, e.g. formats.gpt2
    else
        echo "unknown module '$module'; choose from: ${!PATTERNS[*]} (or formats.<module>)" >&2
        exit 2
    fi
done

if ! "$python" -c "import mutmut" 2>/dev/null; then
    echo "mutmut is not installed for $python: pip install -e '.[dev]' (or: pip install 'mutmut>=3.3,<4')" >&2
    exit 2
fi

# Mutants given by name are always rerun: after a first run, name only those not checked yet, so runs resume.
# `mutmut results --all true | select STATUS PATTERN...`: the mutants of the selection with that status ("any": all)
select='
import fnmatch, sys
wanted, patterns = sys.argv[1], sys.argv[2:]
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if wanted in ("any", status) and any(fnmatch.fnmatch(name, p) for p in patterns):
        print(name)
'
earlier=""
if [[ -d mutants ]]; then
    # mutmut brings its records up to date only when it runs: functions edited since (their mutants), and a changed
    # test selection in pyproject.toml (every mutant), are "not checked" after that. Run one mutant of the selection
    # first, so the list of unchecked mutants below is today's.
    first="$("$python" -m mutmut results --all true 2>/dev/null | "$python" -c "$select" any "${patterns[@]}" 2>/dev/null |
        head -n 1 || true)"
    if [[ -n "$first" ]]; then
        echo "bringing mutmut's records up to date (one mutant: $first)"
        "$python" -m mutmut run --max-children "$children" "$first" >mutants.log 2>&1 || true
    fi
    earlier="$("$python" -m mutmut results --all true 2>/dev/null || true)"
fi
if [[ -n "$earlier" ]]; then
    mapfile -t targets < <(printf '%s\n' "$earlier" | "$python" -c "$select" "$rerun" "${patterns[@]}")
    if [[ ${#targets[@]} -eq 0 ]]; then
        echo "no mutant of ${modules[*]} is '$rerun' (delete mutants/ to start over)"
    fi
else
    targets=("${patterns[@]}")
fi

echo "mutation testing ${modules[*]} (${#targets[@]} targets) for at most ${budget}s with $python ($children test process(es))"
# SIGINT lets mutmut stop its workers and keep the results it has; SIGKILL 60 s later if it does not
started=$(date +%s)
status=0
if [[ ${#targets[@]} -gt 0 ]]; then
    timeout --signal=INT --kill-after=60 "$budget" \
        "$python" -m mutmut run --max-children "$children" "${targets[@]}" >mutants.log 2>&1 || status=$?
fi
echo "mutmut ran $(($(date +%s) - started))s (exit status $status; its output is in mutants.log)"
if [[ $status -eq 124 || $status -eq 137 ]]; then  # 137: stopped by SIGKILL after the budget
    echo "the budget ran out: the mutants not reached are 'not checked'; run again to continue"
fi

# `mutmut results --all true` lists every mutant as "name: status"; keep the selected modules'
"$python" -m mutmut results --all true 2>/dev/null | "$python" -c '
import collections, fnmatch, subprocess, sys

python, patterns = sys.argv[1], sys.argv[2:]
statuses = {}
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if name and any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
        statuses[name] = status
counts = collections.Counter(statuses.values())
print()
print(f"{len(statuses)} mutants: " + ", ".join(f"{counts[s]} {s}" for s in ("killed", "survived", "timeout")), end="")
others = {s: n for s, n in counts.items() if s not in ("killed", "survived", "timeout")}
print("".join(f", {n} {s}" for s, n in sorted(others.items())))
for status in ("survived", "timeout", "suspicious", "no tests"):
    names = sorted(name for name, s in statuses.items() if s == status)
    if not names:
        continue
    print(f"\n---- {status} ({len(names)})")
    for name in names:
        if status == "survived":
            diff = subprocess.run([python, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout
            print(diff.rstrip())
        else:
            print(name)
' "$python" "${patterns[@]}"
