#!/bin/sh
# virtup first boot: give this clone its own identity from the VIRTUPCFG config disk.
#
# Installed by virtup into templates as /usr/local/lib/virtup/firstboot and run once, early, by
# virtup-firstboot.service (before the network and sshd). Without a config disk it changes nothing
# and does not mark itself done, so a booted template never carries "done" into its clones.
# It never prints a secret: only file names and non-secret values reach the journal.
#
# Environment (for virt-sysprep's offline run and for tests; unset at boot):
#   VIRTUP_CONFIG_DIR  read the config files from this directory instead of the disk
#   VIRTUP_OFFLINE=1   running in a chroot, not a booted guest: skip live changes
#   VIRTUP_ROOT        act on this directory as if it were /
#   VIRTUP_WAIT        seconds to wait for a late config disk after udev settled (default 5)
set -eu
LC_ALL=C
export LC_ALL

ROOT=${VIRTUP_ROOT:-}
OFFLINE=${VIRTUP_OFFLINE:-}
WAIT=${VIRTUP_WAIT:-5}
LABEL=VIRTUPCFG
DONE=$ROOT/var/lib/virtup/firstboot.done

umask 077
cfg=${VIRTUP_CONFIG_DIR:-}
mnt=

log() { printf 'virtup-firstboot: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

release_disk() {
    if [ -n "$mnt" ]; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || :
        rmdir "$mnt" 2>/dev/null || :
        mnt=
    fi
}
trap release_disk EXIT
trap 'exit 1' HUP INT TERM

# put_file DEST MODE: stdin becomes DEST, atomically (temp file in the same directory, then rename).
put_file() {
    tmp=$(mktemp "$1.virtup.XXXXXX")
    if cat >"$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1"; then
        return 0
    fi
    rm -f "$tmp"
    die "cannot write $1"
}

# value NAME: first line of config file NAME, empty when absent.
value() {
    v=
    if [ -f "$cfg/$1" ]; then
        IFS= read -r v <"$cfg/$1" || :
    fi
    printf '%s' "$v"
}

valid_hostname() {
    case $1 in
        '' | *[!A-Za-z0-9.-]* | [.-]* | *[.-] | *..*) return 1 ;;
    esac
    [ "${#1}" -le 253 ]
}

find_disk() {
    if dev=$(blkid -L "$LABEL" 2>/dev/null) && [ -n "$dev" ]; then
        printf '%s\n' "$dev"
        return 0
    fi
    if [ -e "/dev/disk/by-label/$LABEL" ]; then
        printf '%s\n' "/dev/disk/by-label/$LABEL"
        return 0
    fi
    return 1
}

if [ -z "$cfg" ]; then
    # After udev has processed the devices present at boot, the disk is either there or late.
    udevadm settle --timeout=30 2>/dev/null || :
    dev=
    waited=0
    until dev=$(find_disk); do
        if [ "$waited" -ge "$WAIT" ]; then
            log "no disk labelled $LABEL: nothing to do (looking again next boot)"
            exit 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    # A private mount point: the disk's files are world-readable, the directory is not.
    mnt=$(mktemp -d /run/virtup-config.XXXXXX)
    mount -t iso9660 -o ro,nosuid,nodev,noexec "$dev" "$mnt" || die "cannot mount $dev"
    cfg=$mnt
fi

format=$(value format)
[ "$format" = "virtup-config 1" ] || die "unknown config format '$format'"

# Hostname first: the DHCP client sends it, so it must be set before the network comes up.
name=$(value hostname)
if [ -n "$name" ]; then
    valid_hostname "$name" || die "invalid hostname '$name'"
    fqdn=$(value fqdn)
    names=$name
    if [ -n "$fqdn" ]; then
        valid_hostname "$fqdn" || die "invalid fqdn '$fqdn'"
        names="$fqdn $name"
    fi
    printf '%s\n' "$name" | put_file "$ROOT/etc/hostname" 0644
    line=$(printf '127.0.1.1\t%s' "$names")
    hosts=$ROOT/etc/hosts
    [ -f "$hosts" ] || : >>"$hosts"
    awk -v line="$line" '
        /^127\.0\.1\.1[ \t]/ { if (!done) print line; done = 1; next }
        { print }
        END { if (!done) print line }
    ' "$hosts" | put_file "$hosts" 0644
    if [ -z "$OFFLINE" ]; then
        hostname "$name"
    fi
    log "hostname $names"
fi

machine_id=$(value machine-id)
if [ -n "$machine_id" ]; then
    case $machine_id in *[!0-9a-f]*) die "invalid machine-id" ;; esac
    [ "${#machine_id}" -eq 32 ] || die "invalid machine-id"
    # systemd bind-mounts a transient id over an empty /etc/machine-id; write the real file.
    if [ -z "$OFFLINE" ] && [ -z "$ROOT" ] && mountpoint -q /etc/machine-id 2>/dev/null; then
        umount /etc/machine-id || :
    fi
    printf '%s\n' "$machine_id" | put_file "$ROOT/etc/machine-id" 0444
    dbus_id=$ROOT/var/lib/dbus/machine-id
    if [ -f "$dbus_id" ] && [ ! -L "$dbus_id" ]; then
        printf '%s\n' "$machine_id" | put_file "$dbus_id" 0444
    fi
    log "machine-id $machine_id"
fi

keys=
for key in "$cfg"/ssh_host_*_key; do
    [ -f "$key" ] || continue
    key_name=${key##*/}
    case $key_name in *[!A-Za-z0-9_]*) die "invalid host key name '$key_name'" ;; esac
    [ -f "$key.pub" ] || die "host key $key_name has no .pub"
    keys="$keys $key_name"
done
if [ -n "$keys" ]; then
    mkdir -p "$ROOT/etc/ssh"
    # Only this instance's keys: the template's (or any other type) must not linger.
    for old in "$ROOT"/etc/ssh/ssh_host_*; do
        [ -e "$old" ] || [ -L "$old" ] || continue
        rm -f "$old"
    done
    for key_name in $keys; do
        put_file "$ROOT/etc/ssh/$key_name" 0600 <"$cfg/$key_name"
        put_file "$ROOT/etc/ssh/$key_name.pub" 0644 <"$cfg/$key_name.pub"
    done
    log "SSH host keys:$keys"
fi

user=$(value user)
if [ -n "$user" ]; then
    case $user in
        '' | root | [!a-z_]* | *[!a-z0-9_-]*) die "invalid user name '$user'" ;;
    esac
    if ! getent passwd "$user" >/dev/null; then
        useradd --create-home --shell /bin/bash "$user" || die "cannot create user $user"
        log "created user $user"
    fi
    if [ -d "$ROOT/etc/sudoers.d" ]; then
        printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" | put_file "$ROOT/etc/sudoers.d/virtup-$user" 0440
    fi
    entry=$(getent passwd "$user") || die "user $user vanished"
    uid=$(printf '%s\n' "$entry" | cut -d: -f3)
    gid=$(printf '%s\n' "$entry" | cut -d: -f4)
    home=$(printf '%s\n' "$entry" | cut -d: -f6)
    case $home in /?*) ;; *) die "user $user has no usable home directory" ;; esac
    if [ -f "$cfg/authorized_keys" ]; then
        ssh_dir=$ROOT$home/.ssh
        if [ -L "$ssh_dir" ]; then rm -f "$ssh_dir"; fi
        mkdir -p "$ssh_dir"
        chmod 0700 "$ssh_dir"
        put_file "$ssh_dir/authorized_keys" 0600 <"$cfg/authorized_keys"
        chown "$uid:$gid" "$ssh_dir" "$ssh_dir/authorized_keys"
        log "authorized_keys for $user"
    fi
fi

if [ -s "$cfg/shadow" ]; then
    # NAME:HASH lines for chpasswd -e, which reads them on stdin: hashes never reach argv. Every line
    # chpasswd reads must pass the checks below, and `read` fails on a last line without a newline
    # (the loop would end without checking it): virtup always ends the file with one.
    [ -z "$(tail -c 1 "$cfg/shadow")" ] || die "shadow does not end with a newline"
    while IFS=: read -r account hash; do
        case $account in root | "$user") ;; *) die "unexpected account '$account' in shadow" ;; esac
        case $hash in '$'*) ;; *) die "invalid password hash for $account" ;; esac
        case $hash in *[!A-Za-z0-9./=,\$]*) die "invalid password hash for $account" ;; esac
    done <"$cfg/shadow"
    chpasswd -e <"$cfg/shadow" || die "chpasswd failed"
    log "password hashes applied"
fi

release_disk
(umask 022 && mkdir -p "${DONE%/*}")
date -u '+%Y-%m-%dT%H:%M:%SZ' | put_file "$DONE" 0644
log "done"
