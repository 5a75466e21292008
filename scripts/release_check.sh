#!/usr/bin/env bash
# Builds the release files of lightly-derm and checks them; uploads nothing.
#
#   scripts/release_check.sh [OUT]      # default OUT: dist/
#
# 1. copies the files git knows (tracked, and new files git does not ignore) into a
#    temporary folder, so the build leaves no build/ or *.egg-info in the checkout;
# 2. builds the sdist and, from it, the wheel into OUT (python -m build, without build
#    isolation: the setuptools and wheel of the current environment, nothing fetched);
# 3. checks both with `twine check --strict` (metadata, README rendering) and that the
#    wheel holds the package, its py.typed and the `lightly-derm` entry points.
#
# Then, for a release: twine upload OUT/*   (see docs/installation.rst)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)"
python="${PYTHON:-python}"

for module in build twine; do
    if ! "$python" -c "import $module" 2>/dev/null; then
        echo "release_check: $python has no '$module'; pip install build twine" >&2
        exit 2
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 cp --parents -t "$work")

"$python" -m build --no-isolation --outdir "$out" "$work" >"$work.log" 2>&1 || {
    cat "$work.log" >&2
    rm -f "$work.log"
    exit 1
}
rm -f "$work.log"

version="$("$python" -c "import runpy; print(runpy.run_path('$repo/lightly_derm/_version.py')['__version__'])")"
sdist="$out/lightly_derm-$version.tar.gz"
wheel="$out/lightly_derm-$version-py3-none-any.whl"
for f in "$sdist" "$wheel"; do
    [ -f "$f" ] || { echo "release_check: $f was not built" >&2; exit 1; }
done

"$python" -m twine check --strict "$sdist" "$wheel"

"$python" - "$wheel" <<'PY'
import sys
import zipfile

wheel = zipfile.ZipFile(sys.argv[1])
names = set(wheel.namelist())
info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
problems = [
    f"missing {n}"
    for n in ("lightly_derm/__init__.py", "lightly_derm/py.typed")
    if n not in names
]
problems += [f"not a package file: {n}" for n in names if n.startswith("tests/")]
entry_points = wheel.read(f"{info}/entry_points.txt").decode()
for needed in ("lightly-derm = lightly_derm.cli:main", "[lightly_derm]"):
    if needed not in entry_points:
        problems.append(f"entry_points.txt lacks {needed!r}")
if problems:
    sys.exit("release_check: " + "; ".join(problems))
PY
echo "release_check: ok: $sdist $wheel"
