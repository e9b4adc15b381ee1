#!/bin/bash
# Installs the kit's pinned Neuron stack on an Ubuntu ParallelCluster node; skips what is already
# at its pin, so on an image that has everything it only checks.
#
# ParallelCluster runs it as the compute queue's OnNodeStart action (its official AMI carries no
# Neuron software) and, without the driver, as the head node's OnNodeConfigured action (the head
# node invokes nccom-test's slurm mode); TrnAmiStack's Slurm image runs it at build time and again
# with --check in its test phase. The pins come from ami/versions.json, as arguments:
#
#   install_neuron.sh [--check] --release R --venv DIR \
#       --deb NAME=VERSION [--deb ...] --pip NAME==VERSION [--pip ...] \
#       [--runtime-venv DIR --runtime-pip NAME==VERSION [--runtime-pip ...]]
#
# --deb: Neuron apt packages (driver, runtime, collectives, tools), held at their pins.
# --pip: Python packages of the venv DIR (the Neuron compiler, nki, the burn-in's dependencies),
#        from the Neuron pip repository and PyPI.
# --runtime-pip: Python packages of a second venv, --runtime-venv: nrtpy, the Neuron runtime's Python
#        API, which cannot share an environment with nki; the burn-in loads and times its compiled
#        kernels with it.
# --check: change nothing; exit 1 if anything is not at its pin.
# Exit codes: 0 everything at its pin, 1 not (or an install step failed), 2 bad arguments.
set -euo pipefail

NEURON_APT_REPO=https://apt.repos.neuron.amazonaws.com
NEURON_PIP_REPO=https://pip.repos.neuron.amazonaws.com
NEURON_APT_LIST=/etc/apt/sources.list.d/neuron.list
NEURON_APT_KEY=/usr/share/keyrings/neuron.gpg

log() { echo "install_neuron: $*" >&2; }
usage() {
  log "$1"
  log "usage: install_neuron.sh [--check] --release R --venv DIR --deb NAME=VERSION... --pip NAME==VERSION..." \
    "[--runtime-venv DIR --runtime-pip NAME==VERSION...]"
  exit 2
}

check_only=false
release=""
venv=""
runtime_venv=""
debs=()
pips=()
runtime_pips=()
pip_pin='^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*$'
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=true; shift; continue ;;
    --release | --venv | --deb | --pip | --runtime-venv | --runtime-pip) [ $# -ge 2 ] || usage "$1 needs a value" ;;
    *) usage "unknown argument: $1" ;;
  esac
  case "$1" in
    --release) release=$2 ;;
    --venv) venv=$2 ;;
    --runtime-venv) runtime_venv=$2 ;;
    --deb) [[ "$2" =~ ^[a-z0-9][a-z0-9.+-]*=[0-9][A-Za-z0-9.+~-]*$ ]] || usage "--deb wants NAME=VERSION, got '$2'"
           debs+=("$2") ;;
    --pip) [[ "$2" =~ $pip_pin ]] || usage "--pip wants NAME==VERSION, got '$2'"
           pips+=("$2") ;;
    --runtime-pip) [[ "$2" =~ $pip_pin ]] || usage "--runtime-pip wants NAME==VERSION, got '$2'"
                   runtime_pips+=("$2") ;;
  esac
  shift 2
done
[ -n "$release" ] || usage "--release is required"
[[ "$venv" == /* ]] || usage "--venv wants an absolute path"
[ ${#debs[@]} -gt 0 ] || usage "at least one --deb is required"
[ ${#pips[@]} -gt 0 ] || usage "at least one --pip is required"
if [ -n "$runtime_venv" ] || [ ${#runtime_pips[@]} -gt 0 ]; then
  [[ "$runtime_venv" == /* ]] || usage "--runtime-venv wants an absolute path (with --runtime-pip)"
  [ ${#runtime_pips[@]} -gt 0 ] || usage "--runtime-venv needs at least one --runtime-pip"
  [ "$runtime_venv" != "$venv" ] || usage "--runtime-venv must differ from --venv: nrtpy and nki cannot share one"
fi

# Neuron's deb versions may carry a build suffix (2.23.112.0-9b5179492, say): a pin matches the
# version itself or the version followed by "-<suffix>".
deb_at_pin() {
  local name=${1%%=*} pin=${1#*=} state installed
  state=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$name" 2>/dev/null) || state=""
  installed=${state#installed }
  if [ "$state" = "installed $installed" ] && { [ "$installed" = "$pin" ] || [[ "$installed" == "$pin"-* ]]; }; then
    log "$name $installed: at pin"
    return 0
  fi
  log "$name: want $pin, have ${state:-nothing}"
  return 1
}

# The driver must be built for the running kernel, and a loaded module must be the installed one.
driver_current() {
  local built loaded
  if ! built=$(modinfo -F version neuron 2>/dev/null); then
    log "neuron driver: not built for kernel $(uname -r)"
    return 1
  fi
  loaded=$(cat /sys/module/neuron/version 2>/dev/null) || loaded=""
  if [ -n "$loaded" ] && [ "$loaded" != "$built" ]; then
    log "neuron driver: $loaded loaded, $built installed"
    return 1
  fi
  return 0
}

# missing_pips DIR PIN...: prints each pin the venv DIR does not satisfy, one a line.
missing_pips() {
  local dir=$1
  shift
  if [ ! -x "$dir/bin/python" ]; then
    printf '%s\n' "$@"
    return 0
  fi
  "$dir/bin/python" - "$@" <<'PY'
import sys
from importlib import metadata

for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        print(pin)
PY
}

# venv_at_pins DIR PIN...
venv_at_pins() {
  local dir=$1 missing
  if ! missing=$(missing_pips "$@"); then
    log "venv $dir: its python cannot list its packages"
    return 1
  fi
  if [ -n "$missing" ]; then
    log "venv $dir: want ${missing//$'\n'/ }"
    return 1
  fi
  log "venv $dir: at pins"
  return 0
}

apt_get() {
  # Waits for a boot-time apt run instead of failing on its lock; never restarts services
  # (needrestart) in the middle of ParallelCluster's bootstrap.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
    apt-get -y -o DPkg::Lock::Timeout=600 "$@"
}

apt_updated=false
apt_update_once() {
  if ! $apt_updated; then
    apt_get update
    apt_updated=true
  fi
}

install_debs() {
  local spec to_install=() drivers_pin=""
  for spec in "${debs[@]}"; do
    [ "${spec%%=*}" = aws-neuronx-dkms ] && drivers_pin=$spec
    deb_at_pin "$spec" || to_install+=("${spec}*")
  done
  # A driver at its pin but not built (or not loaded) for this kernel is installed again.
  if [ -n "$drivers_pin" ] && [ ${#to_install[@]} -eq 0 ] && ! driver_current; then
    to_install+=("${drivers_pin}*")
  fi
  [ ${#to_install[@]} -gt 0 ] || return 0
  if ! grep -rqs "$NEURON_APT_REPO" /etc/apt/sources.list.d; then
    . /etc/os-release
    curl -fsSL "$NEURON_APT_REPO/GPG-PUB-KEY-AMAZON-AWS-NEURON.PUB" | gpg --batch --yes --dearmor -o "$NEURON_APT_KEY"
    echo "deb [signed-by=$NEURON_APT_KEY] $NEURON_APT_REPO ${VERSION_CODENAME} main" > "$NEURON_APT_LIST"
  fi
  apt_update_once
  # DKMS builds the driver against the running kernel's headers.
  if [ -n "$drivers_pin" ] && [ ! -d "/lib/modules/$(uname -r)/build" ]; then
    to_install+=("linux-headers-$(uname -r)")
  fi
  apt_get install --reinstall --allow-downgrades --allow-change-held-packages "${to_install[@]}"
  # Unattended upgrades must not move the pins.
  apt-mark hold "${debs[@]%%=*}"
  if [ -n "$drivers_pin" ]; then
    # Load the driver just built: a module of another version goes first (nothing uses the
    # devices yet). On a build host without Trainium devices the module still loads.
    if [ -e /sys/module/neuron ]; then modprobe -r neuron; fi
    modprobe neuron
  fi
}

# install_venv DIR PIN...
install_venv() {
  local dir=$1
  if venv_at_pins "$@"; then
    return 0
  fi
  shift
  apt_update_once
  apt_get install python3-venv
  python3 -m venv "$dir"
  # The real Neuron packages are only in the Neuron repository (PyPI has placeholders under the
  # same names); the exact pins select the release.
  "$dir/bin/python" -m pip install --no-input --disable-pip-version-check --progress-bar off \
    --extra-index-url "$NEURON_PIP_REPO" "$@"
}

verify() {
  local spec ok=0
  for spec in "${debs[@]}"; do
    deb_at_pin "$spec" || ok=1
    if [ "${spec%%=*}" = aws-neuronx-dkms ]; then driver_current || ok=1; fi
  done
  venv_at_pins "$venv" "${pips[@]}" || ok=1
  if [ -n "$runtime_venv" ]; then venv_at_pins "$runtime_venv" "${runtime_pips[@]}" || ok=1; fi
  return $ok
}

log "Neuron SDK $release"
if ! $check_only; then
  install_debs
  install_venv "$venv" "${pips[@]}"
  if [ -n "$runtime_venv" ]; then install_venv "$runtime_venv" "${runtime_pips[@]}"; fi
fi
if verify; then
  log "everything at its pin"
else
  log "FAILED: not everything is at its pin"
  exit 1
fi
