#!/usr/bin/env python3
"""tests/real_guest/make_dumps_test.py — make-dumps.py falls back to TCG whenever KVM fails.

Without arguments (seconds, no QEMU): each forced KVM failure of
$PTWALK_REAL_GUEST_KVM_FAULT makes boot() raise with its reason, quickly,
and make_variant() then makes the variant on TCG and stops trying KVM.

With --boot (what .ci/run runs, about a minute of TCG): make-dumps.py itself,
one variant into a temporary cache, with KVM forced to exit like the MSR
assertion nested KVM hits; the dumps must still appear, made on TCG, and the
log must say why. The kernel package already unpacked in the default cache
is linked in, so nothing is downloaded twice; the default cache is never
written.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "make-dumps.py"


def load_make_dumps():
    spec = importlib.util.spec_from_file_location("make_dumps", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_dumps = load_make_dumps()


class ForcedKvmFailures(unittest.TestCase):
    def boot_with_fault(self, fault):
        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.dict(os.environ, {make_dumps.KVM_FAULT_VARIABLE: fault}), \
                mock.patch.object(make_dumps, "KVM_SILENCE_S", 1), \
                mock.patch.object(make_dumps, "KVM_READY_S", 3):
            started = time.monotonic()
            with self.assertRaises(RuntimeError) as raised:
                make_dumps.boot(Path(tmp), "kvm", "host", 1, "", "vmlinuz", "initramfs")
            self.assertLess(time.monotonic() - started, 20)
            return str(raised.exception)

    def test_qemu_exiting_like_the_msr_assertion_is_a_failure_with_its_message(self):
        reason = self.boot_with_fault("exit")
        self.assertIn("QEMU exited with status", reason)
        self.assertIn("failed to set MSR 0x10a", reason)
        self.assertIn("kvm_buf_set_msrs", reason)

    def test_a_silent_guest_is_a_failure(self):
        self.assertIn("guest silent", self.boot_with_fault("silent"))

    def test_a_guest_that_never_gets_ready_is_a_failure(self):
        self.assertIn("not ready after 3 s", self.boot_with_fault("no-ready"))

    def test_no_device_means_kvm_is_not_tried(self):
        with mock.patch.dict(os.environ, {make_dumps.KVM_FAULT_VARIABLE: "no-device"}):
            self.assertIn("/dev/kvm", make_dumps.kvm_unusable_reason())
        with mock.patch.dict(os.environ, {make_dumps.KVM_FAULT_VARIABLE: "exit"}):
            self.assertIsNone(make_dumps.kvm_unusable_reason())  # the stand-in fails the start

    def test_an_unknown_fault_is_refused(self):
        with mock.patch.dict(os.environ, {make_dumps.KVM_FAULT_VARIABLE: "bogus"}):
            with self.assertRaises(SystemExit):
                make_dumps.kvm_fault()


class FallbackDecision(unittest.TestCase):
    """make_variant on top of a dump_variant that fails on KVM the given way."""

    def run_variant(self, kvm_error, try_kvm=True, name="default"):
        calls = []

        def fake_dump(variant, out, accel, cpu, kernel, initramfs):
            calls.append(accel)
            out.mkdir(parents=True)
            (out / "partial").write_text("left by the failed start")
            if accel == "kvm" and kvm_error is not None:
                raise kvm_error

        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(make_dumps, "dump_variant", fake_dump), \
                mock.patch.object(make_dumps, "log"):
            out = Path(tmp) / name
            still = make_dumps.make_variant(name, out, "vmlinuz", "initramfs", try_kvm)
            self.assertTrue((out / "partial").exists())
        return still, calls

    def test_any_kvm_error_falls_back_to_tcg_and_gives_kvm_up(self):
        for error in [RuntimeError("QEMU exited with status -6"), RuntimeError("QMP stop: error"),
                      OSError("connection refused"), subprocess.TimeoutExpired("qemu", 60)]:
            with self.subTest(error=repr(error)):
                still, calls = self.run_variant(error)
                self.assertFalse(still)
                self.assertEqual(calls, ["kvm", "tcg,thread=single"])

    def test_working_kvm_is_used_alone_and_kept(self):
        still, calls = self.run_variant(None)
        self.assertTrue(still)
        self.assertEqual(calls, ["kvm"])

    def test_kvm_given_up_is_not_tried_again(self):
        still, calls = self.run_variant(RuntimeError("never raised"), try_kvm=False)
        self.assertFalse(still)
        self.assertEqual(calls, ["tcg,thread=single"])


class DumpsAppearWhenKvmFails(unittest.TestCase):
    """make-dumps.py end to end, one variant, KVM forced to exit at once."""

    def test_dumps_are_made_on_tcg(self):
        default_cache = Path(os.environ.get("PTWALK_REAL_GUEST_CACHE",
                                            Path.home() / ".cache" / "ptwalk-real-guest"))
        with tempfile.TemporaryDirectory(prefix="make-dumps-test-") as tmp:
            cache = Path(tmp)
            # Unpacked kernels are read only: linked, not copied or downloaded again.
            if (default_cache / "kernels").is_dir():
                (cache / "kernels").mkdir()
                for kernel in (default_cache / "kernels").iterdir():
                    (cache / "kernels" / kernel.name).symlink_to(kernel.resolve())
            env = {**os.environ, "PTWALK_REAL_GUEST_CACHE": str(cache),
                   make_dumps.KVM_FAULT_VARIABLE: "exit"}
            result = subprocess.run([sys.executable, str(SCRIPT), "--variants", "default"], env=env,
                                    text=True, capture_output=True, timeout=900)
            sys.stderr.write(result.stderr)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("default: KVM failed (QEMU exited", result.stderr)
            self.assertIn("failed to set MSR 0x10a", result.stderr)
            folder = Path(result.stdout.strip())
            self.assertEqual(folder.parent, cache)
            self.assertTrue((folder / "complete").exists())
            variant = json.loads((folder / "default" / "variant.json").read_text())
            self.assertTrue(variant["accel"].startswith("tcg"), variant)
            elf = folder / "default" / "default.elf"
            self.assertGreater(elf.stat().st_size, 256 << 20)  # 384 MiB of guest memory
            self.assertEqual(elf.read_bytes()[:4], b"\x7fELF")
            for kdump in variant["kdump"]:
                self.assertGreater((folder / "default" / kdump).stat().st_size, 0)
            self.assertIn("PTWALK-READY", (folder / "default" / "console.log").read_text())
            self.assertEqual((cache / "current").resolve(), folder.resolve())


if __name__ == "__main__":
    boot = "--boot" in sys.argv
    argv = [a for a in sys.argv if a != "--boot"]
    if not boot:
        argv += ["ForcedKvmFailures", "FallbackDecision"]
    unittest.main(argv=argv, verbosity=2)
