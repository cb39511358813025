# Shared by the .ci/ Docker scripts (sourced, not run): logging, the private daemon's folders, unmounting.
# Needs WORK (the work folder, absolute) set before docker_env is called.

log() { printf '    %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

# docker_env: DOCKER (the client), RUN_DIR, PIDFILE and DOCKER_HOST for the private dockerd of $WORK.
# Sockets must fit in sun_path (108 bytes): a deep work folder gets a short run folder in /tmp, named by a
# hash of the work folder so that every script finds the same one.
docker_env() {
    # The docker.io client matches the daemon it ships with; another `docker` earlier on PATH may be newer.
    if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER="$(command -v docker || echo docker)"; fi
    RUN_DIR="$WORK/run"
    if (( ${#RUN_DIR} > 60 )); then
        RUN_DIR="/tmp/mia-docker-test.$(printf '%s' "$WORK" | sha256sum | cut -c1-12)"
    fi
    PIDFILE="$RUN_DIR/dockerd.pid"
    DOCKER_HOST="unix://$RUN_DIR/docker.sock"
    # The classic builder: it needs no buildx plugin and fetches nothing from a registry by itself.
    DOCKER_BUILDKIT=0
    export DOCKER DOCKER_HOST DOCKER_BUILDKIT
}

# unmount_under DIR: unmount, deepest first, every mount point below DIR (left by a dockerd or debootstrap
# that died).
unmount_under() {
    local prefix="$1" mp
    [[ -n "$prefix" && -d "$prefix" ]] || return 0
    awk -v p="$prefix/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mp; do
        mp="$(printf '%b' "$mp")"   # /proc/mounts escapes spaces as \040
        umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
}
