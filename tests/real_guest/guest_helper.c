/* tests/real_guest/guest_helper.c — a static helper that runs inside the fixture guest.
 *
 * Two jobs the guest's busybox cannot do:
 *   guest_helper touch MIB  — maps MIB MiB of anonymous memory at a 2 MiB
 *     boundary, asks for transparent huge pages, touches every page and sleeps
 *     forever in a detached child (the command returns once it holds the
 *     memory): the dump then has 2 MiB leaves in user space.
 *   guest_helper procs      — prints one line per user process (those with
 *     an executable; kernel threads have none):
 *       PTWALK-PROC pid=N stack_va=0x.. pfn=0x..
 *     the lowest present page of its [stack] and the frame /proc/N/pagemap
 *     says backs it. The test finds that translation in a discovered root:
 *     the oracle that ties roots to processes without kernel symbols.
 *     Ends with "PTWALK-PROCS count=N".
 *   guest_helper cow PAGES CHILDREN — a detached parent writes PAGES anonymous
 *     pages and forks CHILDREN children that share them copy-on-write; the
 *     last child writes every other page (its own copies), all then sleep.
 *   guest_helper spin       — a detached SCHED_IDLE busy loop over 64 pages it
 *     wrote: it runs only when nothing else does, so the paused vCPUs sit in
 *     known processes.
 *   guest_helper pagemap DEV — the guest kernel's own view of every user
 *     process (except itself), as text written to the block device DEV:
 *       process PID COMM
 *       vma START END PERMS NAME       (each line of /proc/PID/maps)
 *       page VA ENTRY                  (each present page, its raw pagemap entry)
 *       kva VA                         (sampled kernel addresses: symbols,
 *                                       module and vmalloc areas)
 *       end PROCESSES PAGES
 *     then a NUL; prints PTWALK-PAGEMAP and PTWALK-READY and sleeps, so the
 *     shell that waits for it changes nothing before the host pauses the VM.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const size_t huge = 2u << 20;

/* Runs `job` in a detached child; returns once the child said it is ready
 * (failure when it exits without saying so). */
static int detached(int (*job)(int ready_fd, long a, long b), long a, long b) {
  int ready[2];
  if (pipe(ready) != 0) return 1;
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) {
    close(ready[1]);
    char byte = 0;
    return read(ready[0], &byte, 1) == 1 ? 0 : 1;
  }
  close(ready[0]);
  setsid();
  job(ready[1], a, b);
  _exit(1);
}

/* The detached child maps and touches: memory touched before a fork would be
 * copy-on-write shared, and writing a shared huge page splits it. */
static int touch(int ready_fd, long mib, long unused) {
  (void)unused;
  const size_t len = (size_t)mib << 20;
  /* Over-allocate so a 2 MiB-aligned window of len bytes fits. */
  char *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *base = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
  madvise(base, len, MADV_HUGEPAGE);
  for (size_t off = 0; off < len; off += 4096) base[off] = (char)(1 + (off >> 12));
  if (write(ready_fd, "", 1) != 1) return 1;
  for (;;) pause();
}

/* Lowest present page of [stack] of process `pid` and its frame number. */
static int stack_page(int pid, uint64_t *va, uint64_t *pfn) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *maps = fopen(path, "r");
  if (!maps) return -1;
  char line[512];
  uint64_t lo = 0, hi = 0;
  int found = 0;
  while (fgets(line, sizeof line, maps))
    if (strstr(line, "[stack]") && sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
      found = 1;
      break;
    }
  fclose(maps);
  if (!found) return -1;
  snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  int result = -1;
  for (uint64_t page = lo; page < hi; page += 4096) {
    uint64_t entry = 0;
    if (pread(fd, &entry, 8, (off_t)(page / 4096 * 8)) != 8) break;
    if ((entry >> 63) & 1) { /* present in RAM */
      *va = page;
      *pfn = entry & ((UINT64_C(1) << 55) - 1);
      result = 0;
      break;
    }
  }
  close(fd);
  return result;
}

static int procs(void) {
  DIR *proc = opendir("/proc");
  if (!proc) return 1;
  const pid_t self = getpid();
  int count = 0;
  struct dirent *d;
  while ((d = readdir(proc))) {
    const int pid = atoi(d->d_name);
    if (pid <= 0 || pid == self) continue;
    char exe[64];
    struct stat st;
    snprintf(exe, sizeof exe, "/proc/%d/exe", pid);
    if (stat(exe, &st) != 0) continue; /* kernel thread: no mm of its own */
    uint64_t va = 0, pfn = 0;
    if (stack_page(pid, &va, &pfn) != 0) continue;
    printf("PTWALK-PROC pid=%d stack_va=0x%lx pfn=0x%lx\n", pid, va, pfn);
    ++count;
  }
  closedir(proc);
  printf("PTWALK-PROCS count=%d\n", count);
  return 0;
}

static int cow_family(int ready_fd, long pages, long children) {
  char *mem = mmap(NULL, (size_t)pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  madvise(mem, (size_t)pages * 4096, MADV_NOHUGEPAGE);
  for (long page = 0; page < pages; ++page) mem[page * 4096] = (char)(page + 1);
  for (long c = 0; c < children; ++c) {
    const pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
      if (c == children - 1)
        for (long page = 0; page < pages; page += 2) mem[page * 4096] = (char)-page;
      for (;;) pause();
    }
  }
  sleep(1); /* the last child has written its pages */
  if (write(ready_fd, "", 1) != 1) return 1;
  for (;;) pause();
}

static int spin(int ready_fd, long unused_a, long unused_b) {
  (void)unused_a;
  (void)unused_b;
  const struct sched_param idle = {0};
  if (sched_setscheduler(0, SCHED_IDLE, &idle) != 0) return 1;
  /* Some data of its own for the host to translate while a vCPU holds it. */
  char *mem = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 1;
  for (int page = 0; page < 64; ++page) mem[page * 4096] = 1;
  if (write(ready_fd, "", 1) != 1) return 1;
  for (volatile unsigned long n = 0;; ++n) {
  }
}

/* A growing text buffer: the whole pagemap is gathered before it is written. */
struct text {
  char *data;
  size_t size, capacity;
};

static void put(struct text *t, const char *format, ...) {
  for (;;) {
    va_list args;
    va_start(args, format);
    const int n = vsnprintf(t->data + t->size, t->capacity - t->size, format, args);
    va_end(args);
    if (n >= 0 && (size_t)n < t->capacity - t->size) {
      t->size += (size_t)n;
      return;
    }
    t->capacity = t->capacity * 2 + 4096;
    t->data = realloc(t->data, t->capacity);
    if (!t->data) exit(1);
  }
}

/* Every VMA of `pid` and every present page in it; returns the page count. */
static long process_pagemap(struct text *t, int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *maps = fopen(path, "r");
  snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
  const int fd = open(path, O_RDONLY);
  long pages = 0;
  char line[512];
  while (maps && fd >= 0 && fgets(line, sizeof line, maps)) {
    uint64_t lo = 0, hi = 0;
    char perms[8] = "", name[256] = "";
    if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perms, name) < 3) continue;
    put(t, "vma 0x%lx 0x%lx %s %s\n", lo, hi, perms, name[0] ? name : "-");
    uint64_t entries[512];
    for (uint64_t va = lo; va < hi;) {
      const size_t n = (size_t)((hi - va) / 4096 < 512 ? (hi - va) / 4096 : 512);
      if (pread(fd, entries, n * 8, (off_t)(va / 4096 * 8)) != (ssize_t)(n * 8)) break;
      for (size_t i = 0; i < n; ++i, va += 4096)
        if ((entries[i] >> 63) & 1) {
          put(t, "page 0x%lx 0x%lx\n", va, entries[i]);
          ++pages;
        }
    }
  }
  if (maps) fclose(maps);
  if (fd >= 0) close(fd);
  return pages;
}

/* Kernel addresses worth asking QEMU about: every 400th symbol, module
 * bases, the first vmalloc areas and the guard page at the end of each. */
static void kernel_addresses(struct text *t) {
  char line[512];
  uint64_t va = 0;
  FILE *f = fopen("/proc/kallsyms", "r");
  for (long n = 0; f && fgets(line, sizeof line, f); ++n)
    if (n % 400 == 0 && sscanf(line, "%lx", &va) == 1 && va != 0) put(t, "kva 0x%lx\n", va);
  if (f) fclose(f);
  f = fopen("/proc/modules", "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "%*s %*s %*s %*s %*s %lx", &va) == 1 && va != 0) put(t, "kva 0x%lx\n", va);
  if (f) fclose(f);
  f = fopen("/proc/vmallocinfo", "r");
  uint64_t end = 0;
  for (int n = 0; f && n < 64 && fgets(line, sizeof line, f); ++n)
    if (sscanf(line, "%lx-%lx", &va, &end) == 2) put(t, "kva 0x%lx\nkva 0x%lx\n", va, end - 4096);
  if (f) fclose(f);
}

static int pagemap(const char *device) {
  struct text t = {0};
  const pid_t self = getpid();
  long processes = 0, pages = 0;
  DIR *proc = opendir("/proc");
  struct dirent *d;
  while (proc && (d = readdir(proc))) {
    const int pid = atoi(d->d_name);
    char path[64], comm[64] = "";
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    if (pid <= 0 || pid == self || stat(path, &st) != 0) continue; /* kernel threads have no exe */
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "r");
    if (f && fscanf(f, "%63s", comm) != 1) comm[0] = 0;
    if (f) fclose(f);
    put(&t, "process %d %s\n", pid, comm[0] ? comm : "-");
    pages += process_pagemap(&t, pid);
    ++processes;
  }
  if (proc) closedir(proc);
  kernel_addresses(&t);
  put(&t, "end %ld %ld\n", processes, pages);
  const int fd = open(device, O_WRONLY);
  if (fd < 0 || write(fd, t.data, t.size + 1) != (ssize_t)(t.size + 1) || fsync(fd) != 0) {
    printf("PTWALK-FAIL pagemap: cannot write %zu bytes to %s\n", t.size + 1, device);
    return 1;
  }
  printf("PTWALK-PAGEMAP processes=%ld pages=%ld bytes=%zu\nPTWALK-READY\n", processes, pages, t.size);
  fflush(stdout);
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "touch") == 0) return detached(touch, atol(argv[2]), 0);
  if (argc == 2 && strcmp(argv[1], "procs") == 0) return procs();
  if (argc == 4 && strcmp(argv[1], "cow") == 0) return detached(cow_family, atol(argv[2]), atol(argv[3]));
  if (argc == 2 && strcmp(argv[1], "spin") == 0) return detached(spin, 0, 0);
  if (argc == 3 && strcmp(argv[1], "pagemap") == 0) return pagemap(argv[2]);
  fprintf(stderr, "usage: guest_helper touch MIB | procs | cow PAGES CHILDREN | spin | pagemap DEVICE\n");
  return 2;
}
