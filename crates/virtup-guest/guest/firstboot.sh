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
#   VIRTUP_SYSFS       where sysfs is (default /sys)
#   VIRTUP_WAIT        seconds to wait for a late config disk once udev is idle (default 5)
#   VIRTUP_WAIT_MAX    seconds after which the search ends whatever udev says (default 60)
#
# A *seed* is the machine virtup boots once per template generation and saves to memory, so that warm
# clones resume from it instead of booting. libvirt gives it SMBIOS family "virtup-seed"; it has no
# config disk and no NIC. Its first boot waits here, with no deadline, holding the port open (libvirt
# shows the channel "connected", which is how virtup knows when to save), until a resumed clone
# gets its config disk hot-plugged; then it first sets the clock forward from the RTC (it stood
# still while the seed was saved; a failure there is only logged, since a clone with a wrong clock
# is better than one half given its identity) and applies the identity as a cold clone does.
set -eu
LC_ALL=C
export LC_ALL

ROOT=${VIRTUP_ROOT:-}
OFFLINE=${VIRTUP_OFFLINE:-}
WAIT=${VIRTUP_WAIT:-5}
WAIT_MAX=${VIRTUP_WAIT_MAX:-60}
SYSFS=${VIRTUP_SYSFS:-/sys}
LABEL=VIRTUPCFG
DONE=$ROOT/var/lib/virtup/firstboot.done
NOTES=$ROOT/run/virtup-firstboot.notes
SEED_FAMILY=virtup-seed
SEED_PORT_NAME=dev.virtup.seed

umask 077
cfg=${VIRTUP_CONFIG_DIR:-}
# Set only when the disk is searched for (a staged config is never a seed's); initialised here so
# that `set -u` cannot trip on it later.
seed=
mnt=

log() { printf 'virtup-firstboot: %s\n' "$*" >&2; }
# note MESSAGE: something asked for that this boot did not do (a disk not mounted, a static address
# not written, the root not grown, or all that came after an error): logged, and kept where
# virtup's SSH proof reads it right after this boot (`NOTES`, world-readable, in /run: gone at the
# next boot), so that the module reports it as a warning rather than succeed in silence. Nothing
# secret is ever a note. Offline (in virt-sysprep's chroot) the image's /run is no booted guest's.
note() {
    log "$*"
    [ -n "$OFFLINE" ] && return 0
    (umask 022 && printf 'virtup-firstboot: %s\n' "$*" >>"$NOTES") 2>/dev/null || :
}
# An error stops the first boot before what came after it (sshd may still start with the keys it
# already has): a note too.
die() { note "error: $*; the first boot stopped there"; exit 1; }

release_disk() {
    if [ -n "$mnt" ]; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || :
        rmdir "$mnt" 2>/dev/null || :
        mnt=
    fi
}
trap release_disk EXIT
trap 'note "stopped by a signal before it finished"; exit 1' HUP INT TERM

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

# uptime_now: whole seconds since boot into $now, without a fork.
uptime_now() {
    read -r now _ </proc/uptime
    now=${now%%.*}
}

# can_reseed / reseed_crng [FILE]: FILE's bytes credited to the kernel's input pool (RNDADDENTROPY),
# then its CRNG reseeded from that pool now (RNDRESEEDCRNG, Linux 4.17+). A resumed seed's CRNG is
# every sibling's until its next scheduled reseed, seconds or minutes away; a VM generation ID does
# not help a kernel without the vmgenid driver (Debian 12's cloud kernel has none), and bytes
# written to /dev/urandom are not credited, so an older kernel's reseed would not even use them. A
# shell cannot issue an ioctl; perl (Essential in Debian) can. The numbers are the generic ioctl
# encoding, which these architectures use.
can_reseed() {
    case $(uname -m 2>/dev/null) in
        x86_64 | i?86 | aarch64 | arm* | riscv64 | s390x) ;;
        *) return 1 ;;
    esac
    command -v perl >/dev/null 2>&1
}
reseed_crng() {
    perl -e '
        open(my $rnd, "<", shift) or exit 1;
        if (@ARGV) {
            open(my $in, "<", shift) or exit 1;
            binmode $in;
            local $/;
            my $bytes = <$in>;
            ioctl($rnd, 0x40085203, pack("ii", 8 * length($bytes), length($bytes)) . $bytes) or exit 1;
        }
        ioctl($rnd, 0x5207, 0) or exit 1;
    ' "$ROOT/dev/urandom" "$@" 2>/dev/null
}

# is_seed: whether libvirt marked this machine as a seed (see the top of this file).
is_seed() {
    family=
    [ -r "$SYSFS/class/dmi/id/product_family" ] || return 1
    IFS= read -r family <"$SYSFS/class/dmi/id/product_family" || :
    [ "$family" = "$SEED_FAMILY" ]
}

# device_with CLASS_DIR ATTR VALUE: prints the name of the device under CLASS_DIR whose one-line
# attribute ATTR reads VALUE (a disk by its serial, a virtio port by its name), without probing it.
device_with() {
    for attr_file in "$1"/*/"$2"; do
        [ -r "$attr_file" ] || continue
        value=
        IFS= read -r value <"$attr_file" || :
        if [ "$value" = "$3" ]; then
            attr_file=${attr_file%/*}
            printf '%s\n' "${attr_file##*/}"
            return 0
        fi
    done
    return 1
}

# set_clock_from_rtc: steps the clock of a clone resumed from a seed to the RTC's time. The guest's
# clock stood still from the seed's save to this resume, while the RTC kept the host's time. Only
# forward: a clock that is ahead already (NTP, a host whose RTC lags) must not go back, which would
# reorder the journal and file times. Every failure is only logged: the identity must still apply.
set_clock_from_rtc() {
    rtc_file=$SYSFS/class/rtc/rtc0/since_epoch
    rtc=
    if [ -r "$rtc_file" ]; then
        IFS= read -r rtc <"$rtc_file" || :
    fi
    # All digits and no more than 12 of them (year 33658), so the comparison below cannot overflow.
    case $rtc in
        '' | *[!0-9]*)
            log "clock not set: no time in $rtc_file"
            return 0
            ;;
    esac
    if [ "${#rtc}" -gt 12 ]; then
        log "clock not set: no time in $rtc_file"
        return 0
    fi
    clock=$(date +%s 2>/dev/null) || clock=
    case $clock in
        '' | *[!0-9]*)
            log "clock not set: cannot read the system clock"
            return 0
            ;;
    esac
    if [ "$rtc" -le "$clock" ] 2>/dev/null; then
        log "clock not set: the RTC ($rtc) is not ahead of the system clock ($clock)"
        return 0
    fi
    # The RTC counts whole seconds: the host's time is in [rtc, rtc + 1), and its middle is never
    # more than half a second off (a clone resumed within a second of the save sat 0.3-0.9 s behind).
    # busybox's date takes no fraction: it gets the whole second.
    if date -u -s "@$rtc.5" >/dev/null 2>&1 || date -u -s "@$rtc" >/dev/null 2>&1; then
        log "clock set forward from the RTC ($clock -> $rtc)"
    else
        log "clock not set: date -s failed"
    fi
}

# seed_port: the seed's virtio port device, found by its name in /sys (udev's
# /dev/virtio-ports/ link may not exist yet: this runs before udev has settled).
seed_port() {
    name=$(device_with "$SYSFS/class/virtio-ports" name "$SEED_PORT_NAME") || return 1
    [ -c "$ROOT/dev/$name" ] || [ -p "$ROOT/dev/$name" ] || return 1
    printf '%s\n' "$ROOT/dev/$name"
}

find_disk() {
    # virtup gives the disk this serial: /sys says so without probing any device (a blkid scan
    # took 1.3 s under TCG while udev still ran). The label is the fallback for older instances.
    if block=$(device_with "$SYSFS/block" serial "$LABEL"); then
        printf '/dev/%s\n' "$block"
        return 0
    fi
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
    # Look for the disk itself every 0.2 s rather than wait for udev to handle every device: a
    # full `udevadm settle` was 3.3 s of this unit's 4.1 s under TCG (step timestamps in a lab
    # clone), while the disk is there well before. udev only tells when to give up: once its
    # queue has been empty (`settle --timeout=0` succeeds; no udevadm counts as empty) for WAIT
    # seconds and no disk came, it is absent. Whatever udev says, the search ends after
    # WAIT_MAX seconds by this deadline, well inside the unit's TimeoutStartSec (120 s). A seed
    # waits with no deadline, but only until the host sees its port and saves it (a second or so
    # of the unit's time): the guest's clock stands still while it is saved, and a resumed clone
    # goes on from there.
    dev=
    port_open=
    port_failed=
    if is_seed; then
        seed=1
        if ! can_reseed || ! reseed_crng; then
            # Its clones would share the kernel's random state until its next scheduled reseed:
            # such a seed never offers itself to be saved, and it stops (virtup's seeding fails,
            # saying why).
            log "seed: cannot make the kernel reseed its random number generator: not offering to be saved"
            systemctl --no-block poweroff 2>/dev/null || :
            exit 1
        fi
        log "seed: waiting for a config disk"
    fi
    uptime_now
    started=$now
    idle_since=
    until dev=$(find_disk); do
        if [ -n "$seed" ]; then
            # Held open until this process ends: the host sees the channel "connected" while
            # the seed waits (when to save it) and "disconnected" once the identity is applied.
            # `command exec`: a failed redirection of the bare special builtin `exec` would end
            # the shell without a word; through `command` it only fails, and is tried again.
            if [ -z "$port_open" ] && port=$(seed_port); then
                if { command exec 3>"$port"; } 2>/dev/null; then
                    port_open=1
                    log "seed: ready to be saved (holding $port)"
                elif [ -z "$port_failed" ]; then
                    # Once: this loop runs five times a second for as long as the seed waits.
                    port_failed=1
                    log "seed: cannot open $port (retrying)"
                fi
            fi
            sleep 0.2 2>/dev/null || sleep 1 || :
            continue
        fi
        uptime_now
        if ! command -v udevadm >/dev/null 2>&1 || udevadm settle --timeout=0 2>/dev/null; then
            idle_since=${idle_since:-$now}
        else
            idle_since=
        fi
        if { [ -n "$idle_since" ] && [ $((now - idle_since)) -ge "$WAIT" ]; } ||
            [ $((now - started)) -ge "$WAIT_MAX" ]; then
            log "no disk labelled $LABEL: nothing to do (looking again next boot)"
            exit 0
        fi
        # A sleep without fractions (not coreutils or busybox) still gets there, in whole seconds.
        sleep 0.2 2>/dev/null || sleep 1 || :
    done
    # The clock first, before anything is written: file times and the journal of the identity
    # steps are then the clone's, not the seed's saved moment.
    if [ -n "$seed" ] && [ -z "$OFFLINE" ]; then
        set_clock_from_rtc
    fi
    # A private mount point: the disk's files are world-readable, the directory is not.
    mnt=$(mktemp -d "$ROOT/run/virtup-config.XXXXXX")
    mount -t iso9660 -o ro,nosuid,nodev,noexec "$dev" "$mnt" || die "cannot mount $dev"
    cfg=$mnt
fi

format=$(value format)
[ "$format" = "virtup-config 1" ] || die "unknown config format '$format'"

if [ -f "$cfg/random-seed" ] && [ -z "$OFFLINE" ]; then
    # The host's bytes, mixed into the kernel's input pool. A resumed seed's pool and CRNG are
    # every sibling's: the CRNG is reseeded from the pool right away, before anything of the clone
    # draws from it, and a clone that cannot reseed stops here, before its host keys are in place
    # (its SSH never answers with the pinned key, so virtup never calls it running).
    if [ -n "$seed" ]; then
        reseed_crng "$cfg/random-seed" || die "cannot make the kernel reseed its random number generator"
        log "random seed credited and the random number generator reseeded"
    else
        cat "$cfg/random-seed" >"$ROOT/dev/urandom" || die "cannot write the random seed"
        log "random seed mixed in"
    fi
fi

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

# static-ipv4 (`address_mode: static`): `MAC ADDRESS/PREFIX GATEWAY DNS[,DNS]` (`-` for none), written
# as a systemd-networkd file matching the NIC's MAC. 05- sorts before the image's own files (the lab's
# 90-dhcp-all, netplan's 10-netplan-*, cloud-init's 10-cloud-init-*), and networkd takes the first file
# that matches a link. This runs before network-pre.target, so networkd reads it at its start. Guests
# without networkd are only told in the journal: the instance's DHCP reservation gives it the same
# address there.
static_line=$(value static-ipv4)
if [ -n "$static_line" ]; then
    read -r s_mac s_cidr s_gateway s_dns s_mtu s_domain s_rest <<EOF
$static_line
EOF
    [ -z "$s_rest" ] || die "invalid static-ipv4: more fields than expected"
    case $s_mac in
        [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) ;;
        *) die "invalid MAC in static-ipv4" ;;
    esac
    case $s_cidr in
        '' | *[!0-9./]* | */*/* | */ | /*) die "invalid address in static-ipv4" ;;
        */*) ;;
        *) die "invalid address in static-ipv4" ;;
    esac
    case $s_gateway in
        -) ;;
        '' | *[!0-9.]* | *..* | .* | *.) die "invalid gateway in static-ipv4" ;;
    esac
    case $s_dns in
        -) ;;
        '' | *[!0-9.,]* | *..* | *,,* | [.,]* | *[.,]) die "invalid DNS servers in static-ipv4" ;;
    esac
    case $s_mtu in
        -) ;;
        '' | *[!0-9]*) die "invalid MTU in static-ipv4" ;;
    esac
    [ "$s_domain" = - ] || valid_hostname "$s_domain" || die "invalid domain in static-ipv4"
    networkd=
    for d in "$ROOT/lib/systemd" "$ROOT/usr/lib/systemd"; do
        [ -x "$d/systemd-networkd" ] && networkd=1
    done
    # Enabled (a wants link, the admin's or the vendor's), or driven by netplan with its networkd
    # renderer (whose generator enables it at boot); masked, it never runs.
    enabled=
    for link in "$ROOT"/etc/systemd/system/*.wants/systemd-networkd.service \
        "$ROOT"/lib/systemd/system/*.wants/systemd-networkd.service \
        "$ROOT"/usr/lib/systemd/system/*.wants/systemd-networkd.service; do
        if [ -e "$link" ] || [ -L "$link" ]; then enabled=1; fi
    done
    if [ -x "$ROOT/usr/sbin/netplan" ] && ! grep -rqs 'renderer: *NetworkManager' "$ROOT/etc/netplan"; then
        enabled=1
    fi
    masked=
    if [ "$(readlink "$ROOT/etc/systemd/system/systemd-networkd.service" 2>/dev/null)" = /dev/null ]; then
        masked=1
    fi
    # Two managers of one NIC fight over it: with NetworkManager enabled, it is left to that.
    manager=
    for link in "$ROOT"/etc/systemd/system/*.wants/NetworkManager.service; do
        if [ -e "$link" ] || [ -L "$link" ]; then manager=1; fi
    done
    if [ -n "$networkd" ] && [ -n "$enabled" ] && [ -z "$masked" ] && [ -z "$manager" ]; then
        # networkd runs as systemd-network: the directory must be readable by it.
        (umask 022 && mkdir -p "$ROOT/etc/systemd/network") || die "cannot make /etc/systemd/network"
        {
            printf '# Written by virtup'"'"'s first boot: this instance'"'"'s static address (address_mode: static).\n'
            # Type=ether: a VLAN, bond or bridge made on the NIC later inherits its MAC, not this.
            printf '[Match]\nMACAddress=%s\nType=ether\n\n' "$s_mac"
            [ "$s_mtu" = - ] || printf '[Link]\nMTUBytes=%s\n\n' "$s_mtu"
            printf '[Network]\nAddress=%s\n' "$s_cidr"
            [ "$s_gateway" = - ] || printf 'Gateway=%s\n' "$s_gateway"
            if [ "$s_dns" != - ]; then
                old_ifs=$IFS
                IFS=,
                for server in $s_dns; do
                    printf 'DNS=%s\n' "$server"
                done
                IFS=$old_ifs
            fi
            [ "$s_domain" = - ] || printf 'Domains=%s\n' "$s_domain"
        } | put_file "$ROOT/etc/systemd/network/05-virtup.network" 0644
        log "static address $s_cidr for $s_mac (systemd-networkd)"
    elif [ -n "$manager" ]; then
        note "static address $s_cidr not written: NetworkManager manages this guest's network; its DHCP reservation gives it the same address"
    else
        note "static address $s_cidr not written: this guest does not run systemd-networkd; its DHCP reservation gives it the same address"
    fi
fi

# grow_root: the root partition takes the space after it (the clone's disk is larger than its
# template's), then its filesystem grows into it, online. With growpart (cloud-guest-utils, as
# cloud images have) or else sfdisk (fdisk, as installed systems have); partx tells the kernel.
# A failure is logged, never fatal: the clone is still itself, only smaller than asked.
grow_root() {
    mountinfo=$ROOT/proc/self/mountinfo
    # The last mount on / is the one in use; fields: 3 MAJ:MIN, 5 mount point, then after "-" the
    # type and the source.
    root_mount=$(awk '$5 == "/" { m = $3; for (i = 7; i < NF; i++) if ($i == "-") { t = $(i + 1); s = $(i + 2); break } }
        END { if (m != "") print m, t, s }' "$mountinfo" 2>/dev/null) || root_mount=
    majmin='' fstype='' src=''
    if [ -n "$root_mount" ]; then
        read -r majmin fstype src <<EOF
$root_mount
EOF
    fi
    part=$SYSFS/dev/block/$majmin
    # Btrfs shows an anonymous device (0:NN) there: its source names the partition.
    if [ ! -f "$part/partition" ] && [ -n "$src" ]; then
        part=$SYSFS/class/block/${src##*/}
    fi
    if [ -z "$majmin" ] || [ ! -f "$part/partition" ]; then
        note "root filesystem not grown: it is not on a disk partition"
        return 0
    fi
    num=$(cat "$part/partition")
    real=$(readlink -f "$part")
    partdev=/dev/${real##*/}
    disk_dir=${real%/*}
    disk=/dev/${disk_dir##*/}
    before=$(cat "$part/size" 2>/dev/null) || before=
    if command -v growpart >/dev/null 2>&1; then
        # Exit status 1 is growpart's "NOCHANGE": the partition cannot grow.
        rc=0
        growpart "$disk" "$num" >/dev/null 2>&1 || rc=$?
        if [ "$rc" -gt 1 ]; then
            note "root filesystem not grown: growpart $disk $num failed"
            return 0
        fi
    elif command -v sfdisk >/dev/null 2>&1; then
        if ! printf ',+\n' | sfdisk --quiet --no-reread --no-tell-kernel -N "$num" "$disk" >/dev/null 2>&1 ||
            ! partx --update --nr "$num" "$disk" >/dev/null 2>&1; then
            note "root filesystem not grown: sfdisk or partx on $disk partition $num failed"
            return 0
        fi
    else
        note "root filesystem not grown: neither growpart nor sfdisk is installed"
        return 0
    fi
    after=$(cat "$part/size" 2>/dev/null) || after=
    if [ -z "$after" ] || [ "$after" = "$before" ]; then
        # Another partition after it (swap in an extended one, say), or no room in the table.
        note "root filesystem not grown: no free space right after $partdev"
        return 0
    fi
    case $fstype in
        ext2 | ext3 | ext4) resize2fs "$partdev" >/dev/null 2>&1 ;;
        xfs) xfs_growfs / >/dev/null 2>&1 ;;
        btrfs) btrfs filesystem resize max / >/dev/null 2>&1 ;;
        *) false ;;
    esac || {
        note "root partition $partdev grown, but not its $fstype filesystem"
        return 0
    }
    log "root partition $partdev and its $fstype filesystem grown"
}

if [ "$(value grow-root)" = yes ] && [ -z "$OFFLINE" ]; then
    grow_root
fi

# data_disk SERIAL: the device of the data disk virtup gave SERIAL: udev's by-id link (virtio-blk:
# virtio-SERIAL; virtio-scsi: scsi-0QEMU_QEMU_HARDDISK_SERIAL), else /sys/block/*/serial (virtio-blk).
data_disk() {
    for link in "$ROOT/dev/disk/by-id/virtio-$1" "$ROOT"/dev/disk/by-id/*_"$1"; do
        if [ -b "$link" ]; then
            readlink -f "$link"
            return 0
        fi
    done
    if block=$(device_with "$SYSFS/block" serial "$1"); then
        printf '%s/dev/%s\n' "$ROOT" "$block"
        return 0
    fi
    return 1
}

# usable_mount_point SERIAL MOUNT DEV: whether the data disk may be mounted at MOUNT (logging why
# not): an empty directory or none yet, reached without a link (/var/run is /run), not a mount point
# already, and not in /etc/fstab for anything but this disk.
usable_mount_point() {
    target=$ROOT$2
    if [ -e "$target" ] && { [ ! -d "$target" ] || [ -n "$(ls -A "$target" 2>/dev/null)" ]; }; then
        note "data disk $1 ($3): $2 is in use (not an empty directory): nothing made, not mounted"
        return 1
    fi
    # The deepest part that exists must be itself, not a link to elsewhere.
    d=$target
    while [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ]; do
        up=${d%/*}
        [ "$up" != "$d" ] || break
        d=$up
    done
    base=$(readlink -f "${ROOT:-/}") || base=
    if [ -n "$d" ] && [ "$(readlink -f "$d")" != "${base%/}${d#"$ROOT"}" ]; then
        note "data disk $1 ($3): $2 is reached through a link: nothing made, not mounted"
        return 1
    fi
    if [ -d "$target" ] && command -v mountpoint >/dev/null 2>&1 && mountpoint -q "$target"; then
        note "data disk $1 ($3): $2 is a mount point already: nothing made, not mounted"
        return 1
    fi
    # A line of the image's own (an NFS share mounted later, say) is not replaced; one for this
    # disk (a first boot cut short) is.
    own=$(blkid -s UUID -o value "$3" 2>/dev/null) || own=
    if [ -f "$ROOT/etc/fstab" ] && awk -v mp="$2" -v own="UUID=$own" '
        $1 !~ /^#/ && $2 == mp && (own == "UUID=" || $1 != own) { found = 1 }
        END { exit !found }' "$ROOT/etc/fstab"; then
        note "data disk $1 ($3): /etc/fstab lists $2 for something else already: nothing made, not mounted"
        return 1
    fi
    return 0
}

# make_filesystems < FILE: for each `SERIAL FSTYPE MOUNT` line (MOUNT `-` for none), makes the
# filesystem on the whole data disk when it is blank, lists it in /etc/fstab by UUID (nofail: a boot
# without the disk still comes up) and mounts it. Like grow_root, a failure is logged, never fatal.
make_filesystems() {
    # The by-id links are udev's, which may still be at work this early in the boot.
    if command -v udevadm >/dev/null 2>&1; then
        udevadm settle --timeout=60 2>/dev/null || :
    fi
    while read -r serial fstype mount_point; do
        case $serial in
            '' | *[!A-Za-z0-9._-]*)
                note "filesystems: invalid serial '$serial'"
                continue
                ;;
        esac
        case $fstype in
            ext4 | xfs) ;;
            *)
                note "filesystems: unknown filesystem '$fstype' for $serial"
                continue
                ;;
        esac
        case $mount_point in
            -) mount_point= ;;
            *[!A-Za-z0-9/._-]* | */../* | */.. | [!/]*)
                note "filesystems: invalid mount point for $serial"
                continue
                ;;
        esac
        if ! dev=$(data_disk "$serial"); then
            note "data disk $serial not found: no $fstype made"
            continue
        fi
        # blkid exits 2 too for a device it cannot open: one that cannot be read is left alone.
        if ! dd if="$dev" of=/dev/null bs=512 count=1 2>/dev/null; then
            note "data disk $serial ($dev) cannot be read: left as it is"
            continue
        fi
        # What is on the disk: `blkid -p` exits 2 when it finds nothing (blank), 0 with what it
        # found; anything else (an error, an ambiguous probe) leaves the disk alone.
        found=$(blkid -p -s TYPE -o value "$dev" 2>/dev/null) && probe=0 || probe=$?
        case $probe in
            2) found= ;;
            0)
                # A disk with the filesystem asked for is a first boot cut short after its mkfs.
                if [ "$found" != "$fstype" ]; then
                    note "data disk $serial ($dev) is not blank (${found:-unknown content}): left as it is, no $fstype made, not mounted"
                    continue
                fi
                ;;
            *)
                note "data disk $serial ($dev): blkid could not tell what is on it (status $probe): left as it is"
                continue
                ;;
        esac
        # The mount point is checked before anything is made: a place in use is left alone.
        if [ -n "$mount_point" ] && ! usable_mount_point "$serial" "$mount_point" "$dev"; then
            continue
        fi
        if [ -n "$found" ]; then
            log "data disk $serial ($dev) already holds $fstype: kept as it is"
        elif ! command -v "mkfs.$fstype" >/dev/null 2>&1; then
            note "data disk $serial ($dev): no $fstype made: mkfs.$fstype is not installed"
            continue
        elif ! "mkfs.$fstype" -q "$dev" </dev/null >/dev/null 2>&1; then
            note "data disk $serial ($dev): mkfs.$fstype failed"
            continue
        else
            log "data disk $serial ($dev): $fstype made"
        fi
        [ -n "$mount_point" ] || continue
        uuid=$(blkid -s UUID -o value "$dev" 2>/dev/null) || uuid=
        case $uuid in
            '' | *[!0-9A-Fa-f-]*)
                note "data disk $serial ($dev) has no plain filesystem UUID: not mounted"
                continue
                ;;
        esac
        target=$ROOT$mount_point
        # Made readable by all: the disk's users (a database, a web server) reach it through it.
        if ! (umask 022 && mkdir -p "$target"); then
            note "data disk $serial: cannot make $mount_point: not mounted"
            continue
        fi
        # /etc/fstab is replaced whole, and only when the new one holds the line: a half-written
        # fstab would fail the next boot.
        fstab=$ROOT/etc/fstab
        [ -f "$fstab" ] || : >>"$fstab"
        line=$(printf 'UUID=%s\t%s\t%s\tdefaults,nofail\t0\t2' "$uuid" "$mount_point" "$fstype")
        if ! new=$(mktemp "$fstab.virtup.XXXXXX"); then
            note "data disk $serial ($dev): cannot update /etc/fstab: not mounted"
            continue
        fi
        if awk -v mp="$mount_point" -v line="$line" '
            $1 !~ /^#/ && $2 == mp { if (!done) print line; done = 1; next }
            { print }
            END { if (!done) print line }
        ' "$fstab" >"$new" && grep -q "^UUID=${uuid}[[:space:]]" "$new" &&
            chmod 0644 "$new" && mv -f "$new" "$fstab"; then
            :
        else
            rm -f "$new"
            note "data disk $serial ($dev): cannot update /etc/fstab: not mounted"
            continue
        fi
        if mount -t "$fstype" "UUID=$uuid" "$target" </dev/null 2>/dev/null; then
            log "data disk $serial ($dev) mounted on $mount_point"
        else
            note "data disk $serial ($dev): cannot mount it on $mount_point (listed in /etc/fstab)"
        fi
    done
}

if [ -f "$cfg/filesystems" ] && [ -z "$OFFLINE" ]; then
    make_filesystems <"$cfg/filesystems"
fi

if [ -n "$seed" ] && [ -z "$OFFLINE" ]; then
    # journald still writes under the seed's transient machine-id, where a clone's `journalctl`
    # does not look (it found nothing in a lab clone); restarted, it opens the clone's own journal.
    # Waited for (within a bound: this unit has 120 s in all), so that what follows, "done"
    # included, is in that journal: a restart left running raced the last lines into the old one.
    timeout 30 systemctl restart systemd-journald.service || log "journald not restarted"
fi

release_disk
(umask 022 && mkdir -p "${DONE%/*}")
date -u '+%Y-%m-%dT%H:%M:%SZ' | put_file "$DONE" 0644
log "done"
