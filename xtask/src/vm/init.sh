#!/bin/sh
# PID 1 of the test guest. The host's root arrives read-only over virtio-fs;
# a tmpfs overlay on top makes it writable for the guest alone (target/tmp,
# $HOME caches, /tmp), and nothing the guest does reaches the host.
# The command's output goes to ttyS1, its exit status to ttyS2 (parameters
# come from the kernel command line: xtask_run, xtask_modules).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "xtask-vm: $*" > /dev/ttyS1
	echo "exit=125" > /dev/ttyS2
	poweroff -f
}

for m in $(cat /modules.load); do
	insmod "/modules/$m" || echo "xtask-vm: insmod $m failed"
done

mkdir -p /lower /upper /newroot
mount -t virtiofs -o ro hostroot /lower || fail "cannot mount the host's root (virtiofs)"
mount -t tmpfs -o mode=755 upper /upper
mkdir /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
	fail "cannot mount the overlay on the host's root"

R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
# /tmp stays the overlay's: a target directory there must remain visible.
# /run starts empty, as at boot (no stale netns names from the host).
mount -t tmpfs -o mode=755 run $R/run
# The tracer finds cgroup v2 wherever /proc/self/mounts says it is.
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t bpf bpf $R/sys/fs/bpf
# modprobe in the guest finds this kernel's modules, not the host's.
K=$(uname -r)
mkdir -p "$R/lib/modules/$K"
mount --bind "$R$xtask_modules" "$R/lib/modules/$K"
ip link set lo up
echo up > /dev/ttyS2
hostname "vm-$K"

# A pipe, not the tty, as the command's output: no CR/LF translation, and
# programs behave as they do under CI.
{
	chroot $R /bin/sh "$xtask_run" < /dev/null 2>&1
	echo $? > /status
} | cat > /dev/ttyS1
echo "exit=$(cat /status)" > /dev/ttyS2
poweroff -f
