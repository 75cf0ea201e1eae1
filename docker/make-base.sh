#!/usr/bin/env bash
# Build a local Debian bookworm base image (python3 + venv + pip + tzdata + CA certificates) with
# debootstrap and import it into Docker, for machines that have no Docker registry to pull
# python:3.11-slim-bookworm from.  The packages come from this machine's own Debian mirror.
#
#   docker/make-base.sh                # builds avellaneda-base:bookworm unless it already exists
#   FORCE=1 docker/make-base.sh        # rebuild even if the image exists
#   BASE_IMAGE=name:tag docker/make-base.sh
#
# Needs root, debootstrap and a running Docker daemon.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-avellaneda-base:bookworm}"
SUITE="${SUITE:-bookworm}"
PACKAGES="python3,python3-venv,python3-pip,tzdata,ca-certificates"
DEBOOTSTRAP_TIMEOUT="${DEBOOTSTRAP_TIMEOUT:-900}"

log() { printf '[make-base] %s\n' "$*" >&2; }

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE already exists (FORCE=1 to rebuild)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (debootstrap)"
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq debootstrap >/dev/null
fi

# --- find this machine's Debian mirrors (deb822 *.sources and one-line *.list formats) -------------
# Prints "URI SUITE" pairs for every enabled 'deb' entry.
apt_entries() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" {
                 i = 2
                 if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }   # skip [ options ]
                 print $i, $(i + 1)
             }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'function flush() {
                 if (types ~ /(^| )deb( |$)/ && enabled != "no")
                     for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print uris[u], suites[s]
                 types = ""; enabled = ""; nu = 0; ns = 0
             }
             /^[ \t]*$/ { flush(); next }
             /^#/ { next }
             tolower($1) == "types:"   { types = $0; sub(/^[^:]*:[ \t]*/, "", types) }
             tolower($1) == "enabled:" { enabled = tolower($2) }
             tolower($1) == "uris:"    { nu = 0; for (i = 2; i <= NF; i++) uris[++nu] = $i }
             tolower($1) == "suites:"  { ns = 0; for (i = 2; i <= NF; i++) suites[++ns] = $i }
             END { flush() }' "$f"
    done
}

ENTRIES="$(apt_entries | sed 's#/*[[:space:]]# #' | sort -u)"
MIRROR="${MIRROR:-$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$ENTRIES")}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="$(awk -v s="$SUITE-security" '$2 == s { print $1; exit }' <<<"$ENTRIES")"
log "mirror: $MIRROR${SECURITY_MIRROR:+ (security: $SECURITY_MIRROR)}"

# --- debootstrap ----------------------------------------------------------------------------------
WORK="$(mktemp -d /var/tmp/avellaneda-base.XXXXXX)"
ROOTFS="$WORK/rootfs"
cleanup() {
    # never leave bind mounts behind before deleting the tree
    for m in proc dev/pts dev sys; do mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

start=$SECONDS
log "debootstrap $SUITE (minbase + $PACKAGES) into $ROOTFS"
timeout "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    log "debootstrap failed; last lines of its log:"
    tail -n 30 "$WORK/debootstrap.log" >&2
    [[ -f $ROOTFS/debootstrap/debootstrap.log ]] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    exit 1
}
log "debootstrap done in $((SECONDS - start))s"

# apt sources inside the image: the same mirror, plus -updates and -security when this machine has them
{
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [[ -n $SECURITY_MIRROR ]] && echo "deb $SECURITY_MIRROR $SUITE-security main"
} >"$ROOTFS/etc/apt/sources.list"

# pull in point-release and security fixes on top of the release packages (best effort, bounded)
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
if timeout 600 chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade' \
        >"$WORK/upgrade.log" 2>&1; then
    log "applied updates in $((SECONDS - start))s total"
else
    log "WARNING: apt-get upgrade inside the rootfs failed (continuing with release packages):"
    tail -n 10 "$WORK/upgrade.log" >&2
fi

# slim down: package lists, caches, docs (tzdata and CA certificates stay)
chroot "$ROOTFS" apt-get clean >/dev/null 2>&1 || true
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/debconf/*-old \
       "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/debootstrap \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
: >"$ROOTFS/etc/resolv.conf"
echo "avellaneda-base" >"$ROOTFS/etc/hostname"

log "importing into docker as $BASE_IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | timeout 600 docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap $SUITE minbase + $PACKAGES from $MIRROR" \
    - "$BASE_IMAGE" >/dev/null
log "built $BASE_IMAGE in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
