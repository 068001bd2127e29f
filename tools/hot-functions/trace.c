/* Records where a program enters its code pages, in the order it first does.
 *
 * Preloaded (LD_PRELOAD) into every process of a run; acts only in processes whose executable
 * is $TRACE_EXE. It makes that executable's code inaccessible; on each fault it makes the one
 * faulting page executable again and appends the faulting instruction's file offset (8 bytes)
 * to $TRACE_OUT.<first argument>.<pid>, once per address. A thread takes the code away again
 * every $TRACE_RESET_MS (default 10) milliseconds, so that functions sharing a page with
 * code that ran before them are caught too, as long as they run again later; symbols.py maps
 * the offsets to functions. Rust's runtime leaves an installed SIGSEGV handler alone. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>

static unsigned long lo, hi, file_off;
static int out = -1;
static unsigned char *seen; /* one bit per byte of code: offsets already written */

static void on_fault(int sig, siginfo_t *si, void *ctx) {
  (void)sig; (void)ctx;
  unsigned long page = (unsigned long)si->si_addr & ~4095UL;
  if (page >= lo && page < hi) {
    mprotect((void *)page, 4096, PROT_READ | PROT_EXEC);
    unsigned long at = (unsigned long)si->si_addr - lo;
    unsigned char bit = 1u << (at & 7);
    if (!(__atomic_fetch_or(&seen[at >> 3], bit, __ATOMIC_RELAXED) & bit)) {
      unsigned long off = at + file_off;
      if (write(out, &off, sizeof off) < 0) { /* nothing to do in a signal handler */ }
    }
    return;
  }
  /* A real fault: let it kill the process as it would have. */
  signal(SIGSEGV, SIG_DFL);
}

static void *reset(void *arg) {
  long ms = (long)arg;
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  for (;;) {
    nanosleep(&t, NULL);
    mprotect((void *)lo, hi - lo, PROT_NONE);
  }
  return NULL;
}

__attribute__((constructor)) static void trace_init(void) {
  const char *want = getenv("TRACE_EXE"), *prefix = getenv("TRACE_OUT");
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (!want || !prefix || n <= 0) return;
  exe[n] = 0;
  if (strcmp(exe, want) != 0) return;

  FILE *maps = fopen("/proc/self/maps", "r");
  if (!maps) return;
  char line[8192];
  while (fgets(line, sizeof line, maps)) {
    unsigned long a, b, o;
    char perms[8];
    char *path = strchr(line, '/');
    if (!path || sscanf(line, "%lx-%lx %7s %lx", &a, &b, perms, &o) != 4) continue;
    path[strcspn(path, "\n")] = 0;
    if (perms[2] == 'x' && strcmp(path, exe) == 0) { lo = a; hi = b; file_off = o; }
  }
  fclose(maps);
  if (!lo) return;

  /* Name the record after the subcommand (server, agent, bench, ...). */
  char cmd[256] = "main";
  int c = open("/proc/self/cmdline", O_RDONLY);
  if (c >= 0) {
    char buf[512];
    ssize_t m = read(c, buf, sizeof buf - 1);
    close(c);
    if (m > 0) {
      buf[m] = 0;
      size_t first = strlen(buf) + 1;
      if ((ssize_t)first < m) snprintf(cmd, sizeof cmd, "%s", buf + first);
    }
  }
  char path[4400];
  snprintf(path, sizeof path, "%s.%s.%d", prefix, cmd, (int)getpid());
  out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return;
  seen = mmap(NULL, (hi - lo) / 8 + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (seen == MAP_FAILED) return;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
  sigaction(SIGSEGV, &sa, NULL);
  mprotect((void *)lo, hi - lo, PROT_NONE);
  const char *ms = getenv("TRACE_RESET_MS");
  long every = ms ? atol(ms) : 10;
  pthread_t t;
  if (every > 0) pthread_create(&t, NULL, reset, (void *)every);
}
