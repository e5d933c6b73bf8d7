"""Docker's default seccomp profile, as data.

Read from moby/profiles ``seccomp/default_linux.go`` (``DefaultProfile``), commit
02e898b137aed1024e232d59bcb05e6179b72177; the ``seccomp/default.json`` generated from it at the same commit
says the same. That module is what moby/moby vendors as ``github.com/moby/profiles/seccomp`` (formerly
``profiles/seccomp/default.go`` in moby/moby itself). Written out again here rather than copied as JSON, so
that it reads as the policy it is: one allow list, then the rules that depend on the arch, the kernel or a
capability. Default action: EPERM. When updating, compare rule by rule with that file: the order of the
rules does not matter to the filter, their contents do.

What it refuses that a container most often meets: namespaces and mounts (``unshare``, ``setns``, ``mount``,
``clone`` with namespace flags, ``clone3`` which answers ENOSYS so that libcs fall back to ``clone``) unless
CAP_SYS_ADMIN; the keyring (``keyctl``, ``add_key``, ``request_key``: not namespaced); ``personality`` except the
five harmless values; sockets of the families below that are blocked (AF_VSOCK and AF_ALG among them);
``ptrace`` and friends before kernel 4.8 or without CAP_SYS_PTRACE; and every syscall not named at all.
"""

from __future__ import annotations

from runner.isolation.seccomp import Arg, Filter, Profile, Rule

# Allowed unconditionally. Names this libseccomp does not know (newer syscalls, other arches' names) are skipped
# when the filter is built.
ALLOWED = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid",
    "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr",
    "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr",
    "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2", "restart_syscall",
    "riscv_hwprobe", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
    "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
    "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "setxattrat", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime",
    "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
)

# socket(2) domains allowed (linux/socket.h numbers). Missing, and so refused: AF_DECnet 12, AF_ECONET 19,
# AF_ATMSVC 20, AF_IRDA 23, AF_WANPIPE 25, AF_ISDN 34, AF_CAIF 37 (no longer in the kernel); AF_ALG 38 (the
# kernel's crypto API, no use to a container); AF_VSOCK 40 (host/guest sockets, not namespaced by default).
SOCKET_DOMAINS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,  # UNIX INET AX25 IPX APPLETALK NETROM BRIDGE ATMPVC X25 INET6 ROSE
    13, 14, 15, 16, 17, 18,  # NETBEUI SECURITY KEY NETLINK PACKET ASH
    21, 22, 24,  # RDS SNA PPPOX
    26, 27, 28, 29, 30, 31, 32, 33,  # LLC IB MPLS CAN TIPC BLUETOOTH IUCV RXRPC
    35, 36, 39,  # PHONET IEEE802154 NFC
    41, 42, 43, 44, 45,  # KCM QIPCRTR SMC XDP MCTP
)

# linux/sched.h: NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (0x7E020000)
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
ENOSYS = 38


def _socket_rules(domains: tuple[int, ...]) -> tuple[Rule, ...]:
    """moby's socketSyscallsForDomains: the run that starts at AF_UNIX becomes one LT rule (AF_UNSPEC cannot be
    created, so no lower bound is needed; runc could not AND two bounds on one argument anyway), every later
    domain an EQ rule of its own."""
    domains = tuple(sorted(domains))
    end = 0
    while end + 1 < len(domains) and domains[0] == 1 and domains[end + 1] == domains[end] + 1:
        end += 1
    rules = []
    if end:
        rules.append(Rule(("socket",), args=(Arg(0, domains[end] + 1, "SCMP_CMP_LT"),)))
        domains = domains[end + 1:]
    return (*rules, *(Rule(("socket",), args=(Arg(0, d, "SCMP_CMP_EQ"),)) for d in domains))


def _cap(*caps: str) -> Filter:
    return Filter(caps=caps)


def _arch(*arches: str) -> Filter:
    return Filter(arches=arches)


RULES = (
    Rule(ALLOWED),
    Rule(("process_vm_readv", "process_vm_writev", "ptrace"), includes=Filter(min_kernel=(4, 8))),
    *_socket_rules(SOCKET_DOMAINS),
    # personality(2): PER_LINUX, PER_LINUX32 (0x8), UNAME26 (0x20000), both, and the query 0xffffffff
    *(Rule(("personality",), args=(Arg(0, v, "SCMP_CMP_EQ"),)) for v in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
    Rule(("sync_file_range2", "swapcontext"), includes=_arch("ppc64le")),
    Rule(("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"),
         includes=_arch("arm", "arm64")),
    Rule(("arch_prctl",), includes=_arch("amd64", "x32")),
    Rule(("modify_ldt",), includes=_arch("amd64", "x32", "x86")),
    Rule(("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"), includes=_arch("s390", "s390x")),
    Rule(("riscv_flush_icache",), includes=_arch("riscv64")),
    Rule(("open_by_handle_at",), includes=_cap("CAP_DAC_READ_SEARCH")),
    Rule(("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
          "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount", "mount_setattr", "move_mount",
          "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
          "syslog", "umount", "umount2", "unshare"), includes=_cap("CAP_SYS_ADMIN")),
    # without CAP_SYS_ADMIN: clone only without namespace flags (s390 has flags as the second argument) ...
    Rule(("clone",), args=(Arg(0, CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ", 0),),
         excludes=Filter(caps=("CAP_SYS_ADMIN",), arches=("s390", "s390x"))),
    Rule(("clone",), args=(Arg(1, CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ", 0),), includes=_arch("s390", "s390x"),
         excludes=_cap("CAP_SYS_ADMIN")),
    # ... and clone3, whose flags are behind a pointer seccomp cannot read, says ENOSYS so libcs use clone
    Rule(("clone3",), "SCMP_ACT_ERRNO", errno_ret=ENOSYS, excludes=_cap("CAP_SYS_ADMIN")),
    Rule(("reboot",), includes=_cap("CAP_SYS_BOOT")),
    Rule(("chroot",), includes=_cap("CAP_SYS_CHROOT")),
    Rule(("delete_module", "init_module", "finit_module"), includes=_cap("CAP_SYS_MODULE")),
    Rule(("acct",), includes=_cap("CAP_SYS_PACCT")),
    Rule(("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
         includes=_cap("CAP_SYS_PTRACE")),
    Rule(("iopl", "ioperm"), includes=_cap("CAP_SYS_RAWIO")),
    Rule(("settimeofday", "stime", "clock_settime", "clock_settime64"), includes=_cap("CAP_SYS_TIME")),
    Rule(("vhangup",), includes=_cap("CAP_SYS_TTY_CONFIG")),
    Rule(("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"), includes=_cap("CAP_SYS_NICE")),
    Rule(("syslog",), includes=_cap("CAP_SYSLOG")),
    Rule(("bpf",), includes=_cap("CAP_BPF")),
    Rule(("perf_event_open",), includes=_cap("CAP_PERFMON")),
)

# moby's arches(): each native arch with the compat arches its kernel also runs
ARCH_MAP = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
    ("SCMP_ARCH_LOONGARCH64", ()),
)

PROFILE = Profile(default_action="SCMP_ACT_ERRNO", default_errno_ret=1, arch_map=ARCH_MAP, syscalls=RULES)
