#!/bin/sh
# /init of the cgroup v2 test VM (see run-cgroup-v2.sh): busybox sh, everything in the initramfs.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUST_BACKTRACE=1 TMPDIR=/tmp

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 none /sys/fs/cgroup
hostname drove-vm
ip link set lo up
dmesg -n 1

echo "DROVE-VM-KERNEL $(uname -r) $(nproc) cpus $(awk '/MemTotal/{print $2 " kB"}' /proc/meminfo)"
# 63677270 = CGROUP2_SUPER_MAGIC
[ "$(stat -f -c %t /sys/fs/cgroup)" = 63677270 ] && echo "DROVE-VM-CGROUP cgroup2fs" || echo "DROVE-VM-CGROUP not-cgroup2"
grep cgroup /proc/mounts
echo "DROVE-VM-ROOT controllers='$(cat /sys/fs/cgroup/cgroup.controllers)' subtree_control(before)='$(cat /sys/fs/cgroup/cgroup.subtree_control)'"

# The tests must enable the controllers themselves (the agent's prepare_v2): nothing is enabled here.
pre=$(cat /drove-tests/pre)
[ -z "$pre" ] || sh -c "$pre"
filter=$(cat /drove-tests/filter)
failed=0
for t in $(cat /drove-tests/plan); do
    echo "DROVE-VM-RUN $t"
    start=$(date +%s)
    # shellcheck disable=SC2086
    (cd /tmp && /drove-tests/"$t" --test-threads=1 $filter)
    rc=$?
    echo "DROVE-VM-RESULT $t $(( $(date +%s) - start ))s rc=$rc"
    [ "$rc" = 0 ] || failed=$((failed + 1))
done

echo "DROVE-VM-ROOT subtree_control(after)='$(cat /sys/fs/cgroup/cgroup.subtree_control)'"
leftover=$(find /sys/fs/cgroup -mindepth 1 -type d | head -20)
[ -z "$leftover" ] || echo "DROVE-VM-LEFTOVER cgroups: $leftover"
if [ "$failed" = 0 ]; then echo "DROVE-VM-SUMMARY PASS"; else echo "DROVE-VM-SUMMARY FAIL ($failed test binaries failed)"; fi
echo "DROVE-VM-DONE failed=$failed"
sync
poweroff -f
