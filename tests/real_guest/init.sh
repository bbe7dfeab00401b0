#!/bin/busybox sh
# tests/real_guest/init.sh — PID 1 of the fixture guest (busybox, from the initramfs).
#
# Brings up a small but real Linux process population for the dump: a few
# hundred sleeping processes (each its own address space sharing the kernel
# half), a few processes holding transparent huge pages, then lists every
# user process with a stack translation the test can find (guest_helper
# procs) and prints PTWALK-READY on the serial console. The host pauses the
# VM on that line, so nothing below runs any more before the dump.
# Settings come from the kernel command line as environment variables.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

echo always > /sys/kernel/mm/transparent_hugepage/enabled
# khugepaged would collapse pages (and change frames) between the process
# listing and the dump; the huge pages we want come from faults instead.
echo 4294967295 > /sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs

# QEMU's fw_cfg driver hands the kernel's VMCOREINFO to the vmcoreinfo
# device, so dump-guest-memory writes it as a note.
[ -f /qemu_fw_cfg.ko ] && insmod /qemu_fw_cfg.ko

i=0
while [ "$i" -lt "${ptwalk_sleepers:-300}" ]; do
  sleep 100000000 &
  i=$((i + 1))
done
i=0
while [ "$i" -lt "${ptwalk_touchers:-6}" ]; do
  /guest_helper touch "${ptwalk_touch_mib:-8}"
  i=$((i + 1))
done
sleep 1

echo "PTWALK-THP $(grep AnonHugePages /proc/meminfo)"
/guest_helper procs
echo PTWALK-READY
wait
