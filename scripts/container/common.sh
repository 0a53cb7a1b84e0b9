# Shared by the scripts in scripts/container/ (sourced, not run).

# The first container engine that answers: podman if `podman info` works, else docker if `docker info` works.
# ENGINE=podman|docker forces one.
container_engine() {
    if [[ -n ${ENGINE:-} ]]; then
        echo "$ENGINE"
        return 0
    fi
    if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
        echo podman
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        echo docker
    else
        echo "error: no working container engine: neither \`podman info\` nor \`docker info\` succeeds" \
            "(a docker CLI without a running daemon does not count). Install podman (apt-get install podman runc)" \
            "or start a docker daemon; \`make test-container\` installs podman itself." >&2
        return 1
    fi
}

# `podman run` flags for rlimits no higher than this host's hard limits: runc cannot raise them ("error setting
# rlimit type 7: operation not permitted" where the host allows fewer open files than podman's default).
container_ulimits() {
    local nofile nproc
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
    nproc=$(ulimit -Hu)
    [[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
    echo "--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
}
