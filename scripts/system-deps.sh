#!/usr/bin/env bash
# Install the Debian packages the tests and the demo use as independent peers, if missing.
# Idempotent and quiet when everything is already there.
set -euo pipefail
want=(
    openssl faketime stunnel4                       # independent TLS peers and clock skew
    openssh-server openssh-client                   # the ssh launcher against a real sshd
    munge slurmctld slurmd slurm-client             # the slurm launcher against a real Slurm
    procps coreutils util-linux                     # ps -ww, timeout, setsid, nsenter
    libegl1 libgl1-mesa-dri                         # VTK's offscreen EGL rendering (Mesa)
    paraview python3-paraview xvfb xauth            # pvserver / pvpython through the tunnel
    openmpi-bin                                     # mpiexec for pvserver --ranks (only recommended by paraview)
    iproute2 nftables                               # network namespaces as hosts, firewalls
    chromium                                        # the JupyterLab panel's browser tests (Playwright)
    nodejs                                          # the panel's build; JupyterHub's configurable-http-proxy (tools/jupyterhub)
    softhsm2                                        # a PKCS#11 token for session keys (SoftHSM2)
    freeradius freeradius-utils                     # RADIUS authorisation and accounting tests
    gcc libc6-dev                                   # the C relay (paraconnect/tunnel/_crelay.c)
)
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm ships inside some nodejs builds (NodeSource's) and apart in Debian's: ask for it only
# where it is missing.
command -v npm >/dev/null 2>&1 || dpkg-query -W -f='${Status}' npm 2>/dev/null | grep -q "install ok installed" || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing Debian packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
