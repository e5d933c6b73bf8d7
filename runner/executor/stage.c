/* strata-exec: the exec stage, the one process of ``runner exec`` that joins a running container, and the
 * command it forks there (runner/container/exec.py says why; runner/executor/stage.py writes its job and reads
 * what it reports). A program of its own, not a second Python interpreter: it starts in about a millisecond
 * where an interpreter took ~80 ms of imports, and it maps no host library (static), so the process the
 * container sees before its exec holds nothing of the host's: no interpreter, no library, no environment.
 *
 * Built by scripts/setup (gcc -static). The runner copies it into a sealed memfd and execs that, with an empty
 * environment and these fds: stdio, the job (a sealed memfd, argv[1]), the runner's channel end, a pidfd of the
 * runner, a pidfd of the container's PID 1, the write end of the record pipe, and the memfd itself. It
 *
 *   1. closes any other fd it finds (one the runner inherited without close-on-exec), makes itself non-dumpable
 *      and dies with the runner; closes the job and the memfd of itself;
 *   2. waits for the runner's Go: the runner has put it in the container's cgroups meanwhile;
 *   3. joins every namespace of PID 1 at once through the pidfd (setns of a pid namespace applies to children);
 *   4. with -t, opens a pty in the container's devpts and sends the master to the runner (SCM_RIGHTS);
 *   5. becomes what the command will be, in :func:`runner.executor.process.become`'s order: working directory,
 *      a session keyring of its own, rlimits, bounding set, seccomp filter, groups, gid, uid, capabilities,
 *      no_new_privs; every value computed by the runner (the user from the container's /etc/passwd);
 *   6. closes every fd but stdio, the record pipe and the pty's slave (the channel among them), and forks the
 *      command: the only process of ours in the container's pid namespace, which takes its terminal, resets
 *      every signal and execs (PATH searched in the command's environment, as os.execvpe); if it cannot, it
 *      writes one 8-byte record (step, errno) and exits with Docker's code (125, 126 or 127);
 *   7. waits for the command and exits with its status (128+N for signal N).
 *
 * A failure before the fork goes to the runner as {"type": "setup-failed", "step": S, "errno": E, "at": N}: numbers
 * only; the runner's table (stage.py) says it in words, so no text of ours or the container's is ever parsed.
 * Step and tag numbers are shared with stage.py; tests/unit/test_stage_job.py checks that they agree. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* The job's fields: TAG (u32), LENGTH (u32), LENGTH bytes; numbers are u64, native byte order. */
enum tag {
    TAG_RUNNER = 1,        /* pidfd of the runner: we die with it */
    TAG_PIDFD = 2,         /* pidfd of the container's PID 1 */
    TAG_CHANNEL = 3,       /* our end of the runner's SOCK_SEQPACKET channel */
    TAG_EXE = 4,           /* the memfd we were exec'd from */
    TAG_RECORD = 5,        /* write end of the record pipe */
    TAG_NAMESPACES = 6,    /* setns(2) flags */
    TAG_CWD = 7,           /* bytes */
    TAG_RLIMIT = 8,        /* resource, soft, hard (repeated) */
    TAG_CAPABILITIES = 9,  /* mask of the container's: the bounding set keeps them; root holds them */
    TAG_LAST_CAP = 10,     /* the kernel's highest capability */
    TAG_NO_NEW_PRIVS = 11, /* present: set it */
    TAG_SECCOMP_FLAGS = 12,
    TAG_SECCOMP_FILTER = 13, /* present: install this BPF program (struct sock_filter[]) */
    TAG_UID = 14,
    TAG_GID = 15,
    TAG_GROUP = 16,        /* a supplementary group (repeated, in order) */
    TAG_ENV = 17,          /* KEY=VALUE (repeated, in order) */
    TAG_ARGV = 18,         /* the command (repeated, in order) */
    TAG_TTY = 19,          /* present: give the command a pty */
    TAG_CAP_SETS = 20,     /* effective, permitted, inheritable, ambient masks (runner-oci: as config.json says) */
    TAG_DETACH = 21,       /* present: say the command's pid on the channel and exit; it is not ours to wait for */
};

/* What failed before the command's fork (reported on the channel), or in the command (its record). */
enum step {
    STEP_SETUP = 1, /* record only: the command failed before its exec (not an exec error) */
    STEP_EXEC = 2,  /* record only: execve failed */
    STEP_JOB = 3,
    STEP_PDEATHSIG = 4,
    STEP_DUMPABLE = 5,
    STEP_NAME = 6,
    STEP_SETNS = 7,
    STEP_PTY = 8,
    STEP_SEND_PTY = 9,
    STEP_MKDIR = 10,
    STEP_CHDIR = 11,
    STEP_GETCWD = 12,
    STEP_CWD_OUTSIDE = 13,
    STEP_KEYRING = 14,
    STEP_RLIMIT = 15,
    STEP_CAPBSET = 16,
    STEP_AMBIENT = 17,
    STEP_SECCOMP_SIZE = 18,
    STEP_SECCOMP = 19,
    STEP_SETGROUPS_FILE = 20,
    STEP_SETGROUPS = 21,
    STEP_SETGID = 22,
    STEP_SETUID = 23,
    STEP_CAPSET = 24,
    STEP_NO_NEW_PRIVS = 25,
};

#define EXIT_RUNNER_ERROR 125
#define EXIT_NOT_EXECUTABLE 126
#define EXIT_NOT_FOUND 127
#define BPF_MAXINSNS_ 4096
#define KEYCTL_JOIN_SESSION_KEYRING_ 1 /* linux/keyctl.h */
#define GO "{\"type\": \"go\"}"
#define PTY "{\"type\": \"pty\"}"

struct rlimit_ { uint64_t resource, soft, hard; };

static struct {
    int runner, pidfd, channel, exe, record;
    uint64_t namespaces, last_cap, capabilities, seccomp_flags, uid, gid;
    int no_new_privs, tty, seccomp, cap_sets, detach;
    uint64_t sets[4];
    char *cwd;
    struct rlimit_ *rlimits;
    size_t n_rlimits, n_groups, n_env, n_argv, filter_len;
    gid_t *groups;
    char **env, **argv;
    const unsigned char *filter;
} job = {.runner = -1, .pidfd = -1, .channel = -1, .exe = -1, .record = -1};

/* A failure before the command's fork: the numbers to the runner (best effort: it may be gone), then exit. */
_Noreturn static void fail(int step, int err, size_t at) {
    if (job.channel >= 0) {
        char msg[128];
        int n = snprintf(msg, sizeof msg, "{\"type\": \"setup-failed\", \"step\": %d, \"errno\": %d, \"at\": %zu}",
                         step, err, at);
        send(job.channel, msg, (size_t)n, MSG_NOSIGNAL);
    }
    _exit(EXIT_RUNNER_ERROR);
}

static void check(int result, int step) {
    if (result < 0) fail(step, errno, 0);
}

/* -- the job ---------------------------------------------------------------------------------------------------- */

static int read_all(int fd, unsigned char **out, size_t *size) {
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 0) return -1;
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    size_t done = 0;
    while (buf && done < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    *out = buf;
    *size = done;
    return buf ? 0 : -1;
}

static uint64_t number(const unsigned char *data, uint32_t len, int *ok) {
    uint64_t v = 0;
    if (len != sizeof v) *ok = 0;
    else memcpy(&v, data, sizeof v);
    return v;
}

/* A copy of DATA as a C string: it must hold no NUL (an exec argument or a path could not). */
static char *string(const unsigned char *data, uint32_t len, int *ok) {
    if (memchr(data, 0, len)) *ok = 0;
    char *s = strndup((const char *)data, len);
    if (!s) *ok = 0;
    return s;
}

/* Append to a NULL-terminated array of strings, growing it. */
static char **append(char **list, size_t *n, char *item, int *ok) {
    char **grown = realloc(list, (*n + 2) * sizeof *list);
    if (!grown) {
        *ok = 0;
        return list;
    }
    grown[(*n)++] = item;
    grown[*n] = NULL;
    return grown;
}

static void field(uint32_t tag, const unsigned char *data, uint32_t len, int *ok) {
    switch (tag) {
    case TAG_RUNNER: job.runner = (int)number(data, len, ok); break;
    case TAG_PIDFD: job.pidfd = (int)number(data, len, ok); break;
    case TAG_CHANNEL: job.channel = (int)number(data, len, ok); break;
    case TAG_EXE: job.exe = (int)number(data, len, ok); break;
    case TAG_RECORD: job.record = (int)number(data, len, ok); break;
    case TAG_NAMESPACES: job.namespaces = number(data, len, ok); break;
    case TAG_CWD: job.cwd = string(data, len, ok); break;
    case TAG_RLIMIT: {
        struct rlimit_ *grown = realloc(job.rlimits, (job.n_rlimits + 1) * sizeof *grown);
        if (!grown || len != sizeof *grown) {
            *ok = 0;
            break;
        }
        memcpy(&grown[job.n_rlimits++], data, sizeof *grown);
        job.rlimits = grown;
        break;
    }
    case TAG_LAST_CAP: job.last_cap = number(data, len, ok); break;
    case TAG_CAPABILITIES: job.capabilities = number(data, len, ok); break;
    case TAG_NO_NEW_PRIVS: job.no_new_privs = 1; break;
    case TAG_SECCOMP_FLAGS: job.seccomp_flags = number(data, len, ok); break;
    case TAG_SECCOMP_FILTER: job.seccomp = 1; job.filter = data; job.filter_len = len; break;
    case TAG_UID: job.uid = number(data, len, ok); break;
    case TAG_GID: job.gid = number(data, len, ok); break;
    case TAG_GROUP: {
        gid_t *grown = realloc(job.groups, (job.n_groups + 1) * sizeof *grown);
        if (!grown) {
            *ok = 0;
            break;
        }
        grown[job.n_groups++] = (gid_t)number(data, len, ok);
        job.groups = grown;
        break;
    }
    case TAG_ENV: job.env = append(job.env, &job.n_env, string(data, len, ok), ok); break;
    case TAG_ARGV: job.argv = append(job.argv, &job.n_argv, string(data, len, ok), ok); break;
    case TAG_TTY: job.tty = 1; break;
    case TAG_CAP_SETS:
        if (len != sizeof job.sets) *ok = 0;
        else memcpy(job.sets, data, sizeof job.sets), job.cap_sets = 1;
        break;
    case TAG_DETACH: job.detach = 1; break;
    default: *ok = 0;
    }
}

/* The job, whole, or STEP_JOB: it is ours (the runner's), so anything amiss is a bug, never a guess. */
static void read_job(int fd) {
    unsigned char *buf;
    size_t size, at = 0;
    int ok = read_all(fd, &buf, &size) == 0;
    while (ok && at < size) {
        uint32_t head[2];
        if (size - at < sizeof head) {
            ok = 0;
            break;
        }
        memcpy(head, buf + at, sizeof head);
        at += sizeof head;
        if (head[1] > size - at) {
            ok = 0;
            break;
        }
        field(head[0], buf + at, head[1], &ok);
        at += head[1];
    }
    if (!job.env && !(job.env = calloc(1, sizeof *job.env))) ok = 0;
    if (!ok || job.runner < 0 || job.pidfd < 0 || job.exe < 0 || job.record < 0 || !job.cwd || job.n_argv == 0 ||
        job.last_cap > 63)
        fail(STEP_JOB, 0, 0);
}

/* -- the stage -------------------------------------------------------------------------------------------------- */

/* SIGKILL when the runner dies; if it died before we asked, nothing would fire: its pidfd is readable then. The
 * kernel clears the setting when credentials change: set again after. */
static void die_with_runner(void) {
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), STEP_PDEATHSIG);
    struct pollfd p = {.fd = job.runner, .events = POLLIN};
    if (poll(&p, 1, 0) > 0) _exit(128 + SIGKILL);
}

/* Until the runner says Go (it has put us in the container's cgroups); its end closed first: it gave up. */
static void wait_for_go(void) {
    char buf[64];
    ssize_t n;
    do n = recv(job.channel, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)strlen(GO) || memcmp(buf, GO, (size_t)n) != 0) _exit(EXIT_RUNNER_ERROR);
}

/* In the container's mount namespace: a pty of its devpts; the master to the runner; the slave is returned. */
static int open_terminal(void) {
    int master, slave;
    check(openpty(&master, &slave, NULL, NULL, NULL), STEP_PTY);
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = PTY, .iov_len = strlen(PTY)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof master);
    check((int)sendmsg(job.channel, &msg, MSG_NOSIGNAL), STEP_SEND_PTY);
    close(master);
    return slave;
}

/* os.makedirs(cwd, exist_ok=True): every missing directory on the way, inside the container's root. */
static void make_dirs(const char *path) {
    size_t len = strlen(path);
    char *prefix = strdup(path);
    if (!prefix) fail(STEP_MKDIR, ENOMEM, len);
    for (size_t end = 1; end <= len; end++) {
        if (end < len && path[end] != '/') continue;
        if (path[end - 1] == '/') continue;
        prefix[end] = 0;
        if (mkdir(prefix, 0777) < 0) {
            struct stat st;
            int err = errno;
            if (err != EEXIST || (end == len && (stat(prefix, &st) < 0 || !S_ISDIR(st.st_mode))))
                fail(STEP_MKDIR, err, end);
        }
        prefix[end] = path[end];
    }
    free(prefix);
}

/* The working directory: made, entered, and inside the container (runc CVE-2024-21626: a directory fd leaked
 * from outside would leave getcwd without its leading slash). */
static void enter_cwd(void) {
    make_dirs(job.cwd);
    if (chdir(job.cwd) < 0) fail(STEP_CHDIR, errno, 0);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) fail(STEP_GETCWD, errno, 0);
    if (cwd[0] != '/') fail(STEP_CWD_OUTSIDE, 0, 0);
    free(cwd);
}

static void limit_bounding_set(void) {
    for (uint64_t cap = 0; cap <= job.last_cap; cap++)
        if (!(job.capabilities >> cap & 1)) check(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), STEP_CAPBSET);
    check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), STEP_AMBIENT);
}

/* As seccomp_load: seccomp(2) with the profile's flags, or prctl where the kernel has no seccomp(2) and no flag is
 * asked for. We still hold CAP_SYS_ADMIN: no_new_privs is not needed. */
static void install_filter(void) {
    if (job.filter_len == 0 || job.filter_len % sizeof(struct sock_filter) ||
        job.filter_len / sizeof(struct sock_filter) > BPF_MAXINSNS_)
        fail(STEP_SECCOMP_SIZE, 0, job.filter_len);
    struct sock_fprog prog = {.len = (unsigned short)(job.filter_len / sizeof(struct sock_filter)),
                              .filter = (struct sock_filter *)job.filter};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, job.seccomp_flags, &prog) == 0) return;
    int err = errno;
    if (err == ENOSYS && !job.seccomp_flags) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0) return;
        err = errno;
    }
    fail(STEP_SECCOMP, err, 0);
}

/* A user namespace that maps one id had setgroups(2) denied: the process keeps the group it has. */
static int groups_denied(void) {
    int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        fail(STEP_SETGROUPS_FILE, errno, 0);
    }
    char buf[16] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n < 0) fail(STEP_SETGROUPS_FILE, err, 0);
    return strncmp(buf, "deny", 4) == 0 && strspn(buf + 4, " \t\n\r\v\f") == strlen(buf + 4);
}

static void set_capabilities(void) {
    uint64_t mask = job.uid == 0 ? job.capabilities : 0;
    uint64_t effective = job.cap_sets ? job.sets[0] : mask, permitted = job.cap_sets ? job.sets[1] : mask,
             inheritable = job.cap_sets ? job.sets[2] : 0;
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {{0}};
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(effective >> (32 * i));
        data[i].permitted = (uint32_t)(permitted >> (32 * i));
        data[i].inheritable = (uint32_t)(inheritable >> (32 * i));
    }
    check((int)syscall(SYS_capset, &header, data), STEP_CAPSET);
    if (job.cap_sets) {
        check(prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), STEP_CAPSET);
        for (uint64_t cap = 0; cap <= job.last_cap; cap++)
            if (job.sets[3] >> cap & 1) check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), STEP_AMBIENT);
    }
    if (job.no_new_privs) check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), STEP_NO_NEW_PRIVS);
}

/* runner.executor.process.become, with the values the runner resolved. */
static void become(void) {
    enter_cwd();
    /* a fresh session keyring, as runc gives every container process; no keyring at all (ENOSYS) is no failure */
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING_, NULL) < 0 && errno != ENOSYS) fail(STEP_KEYRING, errno, 0);
    for (size_t i = 0; i < job.n_rlimits; i++) {
        struct rlimit limit = {.rlim_cur = job.rlimits[i].soft, .rlim_max = job.rlimits[i].hard};
        check(setrlimit((__rlimit_resource_t)job.rlimits[i].resource, &limit), STEP_RLIMIT);
    }
    limit_bounding_set();
    if (job.seccomp) install_filter();
    if (job.cap_sets) check(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), STEP_CAPSET); /* the sets survive setuid */
    if (!groups_denied()) check(setgroups(job.n_groups, job.groups), STEP_SETGROUPS);
    check(setgid((gid_t)job.gid), STEP_SETGID);
    check(setuid((uid_t)job.uid), STEP_SETUID);
    set_capabilities();
}

/* Every fd above stdio but the N in KEEP (a negative one keeps nothing). */
static void close_all_but(int *keep, size_t n) {
    for (size_t i = 1; i < n; i++) /* a handful: insertion sort */
        for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned int low = 3;
    for (size_t i = 0; i < n; i++) {
        if (keep[i] < (int)low) continue;
        if (keep[i] > (int)low && syscall(SYS_close_range, low, keep[i] - 1, 0) < 0)
            for (int fd = (int)low; fd < keep[i]; fd++) close(fd);
        low = (unsigned int)keep[i] + 1;
    }
    if (syscall(SYS_close_range, low, ~0U, 0) < 0)
        for (int fd = (int)low; fd < 65536; fd++) close(fd);
}

/* -- the command ------------------------------------------------------------------------------------------------ */

_Noreturn static void record(int step, int err) {
    int rec[2] = {step, err};
    ssize_t unused = write(job.record, rec, sizeof rec);
    (void)unused;
    _exit(step == STEP_EXEC ? (err == ENOENT ? EXIT_NOT_FOUND : EXIT_NOT_EXECUTABLE) : EXIT_RUNNER_ERROR);
}

/* os.execvpe(argv[0], argv, env): a name with a slash as it is, else each PATH entry of env (os.defpath without
 * one) in turn; the first error that is not "no such file" (else the last) is the one reported. */
static int exec_path(char **argv, char **env) {
    const char *file = argv[0], *path = "/bin:/usr/bin";
    if (strchr(file, '/')) {
        execve(file, argv, env);
        return errno;
    }
    for (char **e = env; *e; e++)
        if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    int saved = 0, last = ENOENT;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t n = (size_t)(end - dir);
        char *full = malloc(n + strlen(file) + 2);
        if (!full) return ENOMEM;
        memcpy(full, dir, n);
        full[n] = 0;
        if (n && dir[n - 1] != '/') strcat(full, "/");
        strcat(full, file);
        execve(full, argv, env);
        last = errno;
        free(full);
        if (last != ENOENT && last != ENOTDIR && !saved) saved = last;
        if (!*end) break;
        dir = end;
    }
    return saved ? saved : last;
}

_Noreturn static void command(int slave) {
    if (job.detach) close(job.channel); /* the stage's, to say our pid */
    else if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) record(STEP_SETUP, errno);
    if (!job.detach && getppid() != 0) _exit(128 + SIGKILL); /* our parent is outside this pid namespace: 0 while it lives */
    if (setsid() < 0) record(STEP_SETUP, errno);
    if (slave >= 0) {
        if (ioctl(slave, TIOCSCTTY, 0) < 0) record(STEP_SETUP, errno);
        for (int fd = 0; fd < 3; fd++)
            if (dup2(slave, fd) < 0) record(STEP_SETUP, errno);
        close(slave);
    }
    /* every signal at its default, through the kernel's call: glibc refuses its own two (32, 33), which the
     * runner's posix_spawn leaves ignored and a static program's start never takes over. All zero is SIG_DFL, no
     * flags, an empty mask, whatever the architecture's struct sigaction holds besides. */
    unsigned long dfl[4] = {0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) syscall(SYS_rt_sigaction, sig, dfl, NULL, 64 / 8);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* what Python's execve refuses before trying: an empty program name, an environment name that is empty */
    if (!job.argv[0][0]) record(STEP_SETUP, 0);
    for (char **e = job.env; *e; e++)
        if ((*e)[0] == '=') record(STEP_SETUP, 0);
    record(STEP_EXEC, exec_path(job.argv, job.env));
}

int main(int argc, char **argv) {
    if (argc != 2) return EXIT_RUNNER_ERROR;
    int job_fd = atoi(argv[1]);
    read_job(job_fd);
    /* whatever the runner's spawn let through besides what the job names: never ours to hold */
    int given[] = {job_fd, job.runner, job.pidfd, job.channel, job.exe, job.record};
    close_all_but(given, sizeof given / sizeof *given);
    check(prctl(PR_SET_NAME, "strata-exec", 0, 0, 0), STEP_NAME);
    die_with_runner();
    check(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), STEP_DUMPABLE);
    close(job.exe); /* what the command must never hold, even for a moment */
    close(job_fd);
    if (fcntl(job.record, F_SETFD, FD_CLOEXEC) < 0) fail(STEP_JOB, errno, 0);
    wait_for_go();
    /* all at once, into the process the pidfd names, or none; its user namespace first, if it has its own */
    if (setns(job.pidfd, (int)job.namespaces) < 0) fail(STEP_SETNS, errno, 0);
    close(job.pidfd);
    int slave = job.tty ? open_terminal() : -1;
    become();
    check(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), STEP_DUMPABLE); /* a change of credentials reset it */
    die_with_runner();                                        /* and cleared this */
    int kept[] = {job.record, slave, job.detach ? job.channel : -1};
    close_all_but(kept, 3); /* every pidfd and (but to say a detached command's pid) the channel: the command holds none */
    pid_t child = fork();
    if (child < 0) _exit(EXIT_RUNNER_ERROR); /* the channel is closed: the exit code says it */
    if (child == 0) command(slave);
    close(job.record);
    if (slave >= 0) close(slave);
    if (job.detach) { /* the caller (a shim: a child subreaper) adopts it when we exit */
        char msg[64];
        int n = snprintf(msg, sizeof msg, "{\"type\": \"step\", \"name\": \"pid %d\"}", (int)child);
        ssize_t unused = send(job.channel, msg, (size_t)n, MSG_NOSIGNAL);
        (void)unused;
        _exit(0);
    }
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) _exit(EXIT_RUNNER_ERROR);
    _exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
}
