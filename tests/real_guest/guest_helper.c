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
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const size_t huge = 2u << 20;

static int touch(long mib) {
  /* The child maps and touches: memory touched before a fork would be
   * copy-on-write shared, and writing a shared huge page splits it. */
  int ready[2];
  if (pipe(ready) != 0) return 1;
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) {
    char byte = 0;
    return read(ready[0], &byte, 1) == 1 ? 0 : 1;
  }
  setsid();
  const size_t len = (size_t)mib << 20;
  /* Over-allocate so a 2 MiB-aligned window of len bytes fits. */
  char *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *base = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
  madvise(base, len, MADV_HUGEPAGE);
  for (size_t off = 0; off < len; off += 4096) base[off] = (char)(1 + (off >> 12));
  if (write(ready[1], "", 1) != 1) return 1;
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

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "touch") == 0) return touch(atol(argv[2]));
  if (argc == 2 && strcmp(argv[1], "procs") == 0) return procs();
  fprintf(stderr, "usage: guest_helper touch MIB | procs\n");
  return 2;
}
