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
 *
 * Devices and volumes (tests/test_devices_and_volumes.py; the block device is always a loop device over a file the
 * test made):
 *   probe blockdev PATH [MAJ MIN]  mknod PATH as that block device (if given), open it rw (else ro), read, overwrite
 *   probe create PATH              create PATH and write to it
 *   probe swap A B SECONDS         renameat2(RENAME_EXCHANGE) A and B in a loop until SECONDS pass or stop exists beside A
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

static int do_swap(const char *a, const char *b, int seconds) {
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

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "tty")) return do_tty();
    if (!strcmp(argv[1], "keyring")) return do_keyring();
    if (!strcmp(argv[1], "unshare-user")) return do_unshare_user();
    if (!strcmp(argv[1], "devices")) return do_devices(argc - 2, argv + 2);
    if (!strcmp(argv[1], "watch") && argc >= 4) return do_watch(atoi(argv[2]), argv[3]);
    if (!strcmp(argv[1], "blockdev") && argc >= 3) return do_blockdev(argc - 2, argv + 2);
    if (!strcmp(argv[1], "create") && argc == 3) return do_create(argv[2]);
    if (!strcmp(argv[1], "swap") && argc == 5) return do_swap(argv[2], argv[3], atoi(argv[4]));
    return 2;
}
