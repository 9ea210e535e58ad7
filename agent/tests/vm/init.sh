#!/bin/sh
# /init of the cgroup v2 test VM (see run-cgroup-v2.sh): busybox sh, everything in the initramfs.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The initramfs root cannot be pivot_root'ed away from, which an OCI runtime does for every
# container: move everything onto a tmpfs and switch to it first (what a distribution's
# initramfs does before handing over to its real root).
if [ ! -e /.switched ]; then
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    for d in $(ls -A /); do
        case "$d" in
            # /init stays too: switch_root checks it is there before it empties the old root.
            newroot|proc|sys|dev|usr|bin|sbin|lib|lib64|init) ;;
            *) mv "/$d" /newroot/ ;;
        esac
    done
    /usr/bin/busybox mv /usr /bin /sbin /lib /lib64 /newroot/
    bb=/newroot/usr/bin/busybox
    $bb mkdir -p /newroot/proc /newroot/sys /newroot/dev
    : >/newroot/.switched
    $bb cp /init /newroot/init
    exec $bb switch_root /newroot /init
fi
export HOME=/root RUST_BACKTRACE=1 TMPDIR=/tmp

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# /tmp stays the initramfs' own (already in RAM): the test binaries may live under it, at the
# same paths as on the host (a checkout in /tmp), and a tmpfs mounted here would hide them.
mkdir -p /tmp && chmod 1777 /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 none /sys/fs/cgroup
hostname drove-vm
ip link set lo up
dmesg -n 1
# What task networks need of the kernel (nothing autoloads them: busybox's modprobe is the
# kernel's helper but the image keeps only the modules below).
for m in veth nf_tables nft_compat nft_chain_nat nft_masq nft_reject_ipv4 nft_reject_inet \
    nf_conntrack xt_conntrack xt_comment xt_MASQUERADE xt_addrtype xt_multiport xt_mark xt_nat \
    xt_tcpudp ipt_REJECT iptable_nat iptable_filter; do
    modprobe "$m" 2>/dev/null || echo "DROVE-VM-MODULE $m not loaded"
done

echo "DROVE-VM-KERNEL $(uname -r) $(nproc) cpus $(awk '/MemTotal/{print $2 " kB"}' /proc/meminfo)"
# 63677270 = CGROUP2_SUPER_MAGIC
[ "$(stat -f -c %t /sys/fs/cgroup)" = 63677270 ] && echo "DROVE-VM-CGROUP cgroup2fs" || echo "DROVE-VM-CGROUP not-cgroup2"
grep cgroup /proc/mounts
echo "DROVE-VM-ROOT controllers='$(cat /sys/fs/cgroup/cgroup.controllers)' subtree_control(before)='$(cat /sys/fs/cgroup/cgroup.subtree_control)'"

# The tests must enable the controllers themselves (the agent's prepare_v2): nothing is enabled here.
pre=$(cat /drove-tests/pre)
[ -z "$pre" ] || sh -c "$pre"
filter=$(cat /drove-tests/filter)
echo "DROVE-VM-ARGS --test-threads=1 $filter"
failed=0
# Plan entries: NAME runs /drove-tests/NAME in the root cgroup (like an agent on a systemd host,
# where <root> hangs off the real root); ns:NAME runs it as the only process of a fresh cgroup
# namespace whose root is the non-root cgroup /ctr-NAME, with cgroup2 remounted in a private
# mount namespace (like an agent in a container with a private cgroupns): there the "no internal
# processes" rule applies to the visible root and the agent must move itself into a leaf.
for entry in $(cat /drove-tests/plan); do
    echo "DROVE-VM-RUN $entry"
    start=$(date +%s)
    case "$entry" in
        ns:*)
            t=${entry#ns:}
            # The "container runtime" delegates the controllers to its containers (the plain
            # entries, run first, left them enabled already: the agent did it).
            echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control
            mkdir -p "/sys/fs/cgroup/ctr-$t"
            # shellcheck disable=SC2016
            sh -c 'echo $$ > "$1/cgroup.procs" && cd /tmp && exec unshare --cgroup --mount sh -c "umount /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec /drove-tests/$2 --test-threads=1 $3"' \
                ns "/sys/fs/cgroup/ctr-$t" "$t" "$filter"
            rc=$?
            echo "DROVE-VM-NS ctr-$t after: $(cd /sys/fs/cgroup/ctr-$t && find . -mindepth 1 -type d | head -5 | tr '\n' ' ')"
            find "/sys/fs/cgroup/ctr-$t" -depth -type d -exec rmdir {} \; 2>/dev/null
            ;;
        *)
            args=$(cat "/drove-tests/$entry.args" 2>/dev/null)
            # shellcheck disable=SC2086
            (cd /tmp && /drove-tests/"$entry" --test-threads=1 $filter $args)
            rc=$?
            ;;
    esac
    echo "DROVE-VM-RESULT $entry $(( $(date +%s) - start ))s rc=$rc"
    [ "$rc" = 0 ] || failed=$((failed + 1))
done

echo "DROVE-VM-ROOT subtree_control(after)='$(cat /sys/fs/cgroup/cgroup.subtree_control)'"
leftover=$(find /sys/fs/cgroup -mindepth 1 -type d | head -20)
[ -z "$leftover" ] || echo "DROVE-VM-LEFTOVER cgroups: $leftover"
if [ "$failed" = 0 ]; then echo "DROVE-VM-SUMMARY PASS"; else echo "DROVE-VM-SUMMARY FAIL ($failed test binaries failed)"; fi
echo "DROVE-VM-DONE failed=$failed"
sync
poweroff -f
