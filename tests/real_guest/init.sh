#!/bin/busybox sh
# tests/real_guest/init.sh — PID 1 of the fixture guests (busybox, from the initramfs).
#
# Brings up a small but real Linux process population for the dump: a few
# hundred sleeping processes (each its own address space sharing the kernel
# half), a few processes holding transparent huge pages, optionally
# copy-on-write families and idle spinners, then lists every user process
# with a stack translation the test can find (guest_helper procs) and says
# PTWALK-READY on the serial console. The host pauses the VM on that line,
# so nothing below runs any more before the dump. With ptwalk_pagemap set
# (a block device) the helper first writes every process's pagemap there
# and says PTWALK-READY itself while this shell still waits for it.
# Settings come from the kernel command line as environment variables.
# A setup step that fails says PTWALK-FAIL and why: the host stops at once.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
  echo "PTWALK-FAIL $*"
  exec sleep 100000000
}

echo always > /sys/kernel/mm/transparent_hugepage/enabled
# khugepaged would collapse pages (and change frames) between the process
# listing and the dump; the huge pages we want come from faults instead.
echo 4294967295 > /sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs
# Nor may proactive compaction move pages after the listing.
[ -f /proc/sys/vm/compaction_proactiveness ] && echo 0 > /proc/sys/vm/compaction_proactiveness

# Kernel modules, dependencies first: qemu_fw_cfg hands the kernel's
# VMCOREINFO to QEMU's vmcoreinfo device, so dump-guest-memory writes it as
# a note; virtio ones give the pagemap its disk.
for module in /modules/*.ko; do
  [ -f "$module" ] || continue
  insmod "$module" || fail "insmod $module"
done

i=0
while [ "$i" -lt "${ptwalk_sleepers:-300}" ]; do
  sleep 100000000 &
  i=$((i + 1))
done
i=0
while [ "$i" -lt "${ptwalk_touchers:-6}" ]; do
  /guest_helper touch "${ptwalk_touch_mib:-8}" || fail "guest_helper touch"
  i=$((i + 1))
done
if [ -n "$ptwalk_cow_children" ]; then
  /guest_helper cow 64 "$ptwalk_cow_children" || fail "guest_helper cow"
fi
i=0
while [ "$i" -lt "${ptwalk_spinners:-0}" ]; do
  /guest_helper spin || fail "guest_helper spin"
  i=$((i + 1))
done
sleep 1

echo "PTWALK-THP $(grep AnonHugePages /proc/meminfo)"
/guest_helper procs
if [ -n "$ptwalk_pagemap" ]; then
  [ -b "$ptwalk_pagemap" ] || fail "no block device $ptwalk_pagemap for the pagemap"
  echo 0 > /proc/sys/kernel/kptr_restrict
  /guest_helper pagemap "$ptwalk_pagemap" || fail "guest_helper pagemap"
else
  echo PTWALK-READY
fi
wait
