/*
 * luod-run's LD_PRELOAD interposer: a thin transport from a program's /dev/liveupdate calls
 * to luod. It owns no uAPI rule: struct sizes, errnos and state are decided by the daemon
 * (luod/daemon/devliveupdate), which answers each call on a SOCK_SEQPACKET socket.
 *
 * luod-run hands the program a "gateway" socket (fd number in $LUOD_RUN_FD). Opening
 * /dev/liveupdate asks the gateway for a new socket: that socket is the device fd. Session
 * fds are sockets too, so close(), dup(), fork() and exit have the kernel's meaning: luod
 * sees the last reference go. An fd is ours when it is a SEQPACKET socket whose peer is the
 * luod process (SO_PEERCRED); every other fd and path goes straight to libc.
 *
 * What the transport needs to know of the uAPI, and no more: the size-first argument
 * (the first u32 says how many bytes to send), that PRESERVE_FD names an fd at offset 4
 * (passed with SCM_RIGHTS), and that a reply may carry one new fd and the offset where its
 * number goes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEVICE "/dev/liveupdate"
#define PAYLOAD_MAX 4096
#define REBOOT_CMD_KEXEC 0x45584543
#define PRESERVE_FD_CMD ((0xBAu << 8) | 0x40u)

enum { OP_HELLO = 1, OP_OPEN = 2, OP_IOCTL = 3, OP_REBOOT = 4, OP_RESIZE = 5 };
enum { F_TAIL = 1, F_FD = 2, F_BADFD = 4, F_FAULT = 8 };

struct request { uint32_t op, cmd, size, flags; };
struct reply { int32_t err; uint32_t len; int32_t fd_at; uint32_t reserved; };

static int gateway = -1;
static pid_t luod_pid;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define REAL(name) static __typeof__(name) *real_##name; \
	if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static int is_ours(int fd)
{
	struct stat st;
	struct ucred cred;
	int type;
	socklen_t len = sizeof type;

	if (gateway < 0 || fstat(fd, &st) || !S_ISSOCK(st.st_mode))
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) || type != SOCK_SEQPACKET)
		return 0;
	len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return 0;
	return cred.pid == luod_pid;
}

/* One request, one reply; a reply's fd is installed O_CLOEXEC when `cloexec`. Returns -1
 * with errno EIO when luod is gone (the machine went down under the program). Every
 * process under luod-run shares the gateway, so a gateway request carries its own reply
 * socket: two processes asking at once cannot take each other's answer. */
static int transact(int fd, struct request *rq, const void *payload, size_t plen, int send_fd,
		    void *out, size_t outcap, struct reply *rp, int *recv_fd, int cloexec)
{
	char ctl[CMSG_SPACE(sizeof(int))] __attribute__((aligned(8)));
	struct iovec iov[2] = { { rq, sizeof *rq }, { (void *)payload, plen } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = plen ? 2 : 1 };
	struct cmsghdr *cm;
	int pair[2] = { fd, -1 };
	ssize_t n;

	if (fd == gateway) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair)) {
			errno = EIO;
			return -1;
		}
		send_fd = pair[1];
	}
	memset(ctl, 0, sizeof ctl);
	if (send_fd >= 0) {
		msg.msg_control = ctl;
		msg.msg_controllen = sizeof ctl;
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &send_fd, sizeof(int));
	}
	pthread_mutex_lock(&lock);
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (pair[1] >= 0)
		close(pair[1]);
	iov[0] = (struct iovec){ rp, sizeof *rp };
	iov[1] = (struct iovec){ out, outcap };
	msg = (struct msghdr){ .msg_iov = iov, .msg_iovlen = outcap ? 2 : 1,
			       .msg_control = ctl, .msg_controllen = sizeof ctl };
	if (n >= 0)
		do
			n = recvmsg(pair[0], &msg, cloexec ? MSG_CMSG_CLOEXEC : 0);
		while (n < 0 && errno == EINTR);
	pthread_mutex_unlock(&lock);
	if (pair[0] != fd)
		close(pair[0]);
	if (n < (ssize_t)sizeof *rp) {
		errno = EIO;
		return -1;
	}
	*recv_fd = -1;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(recv_fd, CMSG_DATA(cm), sizeof(int));
	return 0;
}

static int call(int fd, struct request *rq, const void *payload, size_t plen, int send_fd,
		void *out, size_t outcap, struct reply *rp, int *recv_fd, int cloexec)
{
	if (transact(fd, rq, payload, plen, send_fd, out, outcap, rp, recv_fd, cloexec))
		return -1;
	if (rp->err) {
		if (*recv_fd >= 0)
			close(*recv_fd);
		errno = rp->err;
		return -1;
	}
	return 0;
}

static void hello(void)
{
	struct request rq = { OP_HELLO, 0, 0, 0 };

	send(gateway, &rq, sizeof rq, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void after_fork(void)
{
	pthread_mutex_init(&lock, NULL);
	if (gateway >= 0)
		hello();
}

__attribute__((constructor)) static void setup(void)
{
	const char *env = getenv("LUOD_RUN_FD");
	struct ucred cred;
	socklen_t len = sizeof cred;
	int type;
	socklen_t tlen = sizeof type;

	if (!env)
		return;
	/* A program may have closed the inherited gateway (or reused its number): then there
	 * is no /dev/liveupdate here, as on a kernel without LUO. */
	gateway = atoi(env);
	if (getsockopt(gateway, SOL_SOCKET, SO_TYPE, &type, &tlen) || type != SOCK_SEQPACKET ||
	    getsockopt(gateway, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
		gateway = -1;
		return;
	}
	luod_pid = cred.pid;
	pthread_atfork(NULL, NULL, after_fork);
	hello();
}

static int open_device(int flags)
{
	struct request rq = { OP_OPEN, 0, 0, (uint32_t)flags };
	struct reply rp;
	int fd;

	if (gateway < 0) {
		errno = ENOENT;
		return -1;
	}
	if (call(gateway, &rq, NULL, 0, -1, NULL, 0, &rp, &fd, flags & O_CLOEXEC))
		return -1;
	return fd;
}

static int forward_ioctl(int fd, uint32_t cmd, unsigned char *arg)
{
	static __thread unsigned char in[PAYLOAD_MAX], out[PAYLOAD_MAX];
	struct request rq = { OP_IOCTL, cmd, 0, 0 };
	struct reply rp;
	uint32_t size = 0, n = 0, i;
	int32_t target = -1;
	int new_fd;

	if (!arg) {
		rq.flags |= F_FAULT;
	} else {
		memcpy(&size, arg, sizeof size);
		n = size < sizeof size ? sizeof size : size < PAYLOAD_MAX ? size : PAYLOAD_MAX;
		memcpy(in, arg, n);
		for (i = PAYLOAD_MAX; i < size; i++)
			if (arg[i]) {
				rq.flags |= F_TAIL;
				break;
			}
		if (cmd == PRESERVE_FD_CMD && n >= 8) {
			memcpy(&target, in + 4, sizeof target);
			rq.flags |= fcntl(target, F_GETFD) < 0 ? F_BADFD : F_FD;
		}
	}
	rq.size = size;
	if (call(fd, &rq, in, n, rq.flags & F_FD ? target : -1, out, sizeof out, &rp, &new_fd, 1))
		return -1;
	if (rp.len > n)
		rp.len = n;
	memcpy(arg, out, rp.len);
	if (new_fd >= 0 && rp.fd_at >= 0 && (uint32_t)rp.fd_at + sizeof(int) <= rp.len)
		memcpy(arg + rp.fd_at, &new_fd, sizeof(int));
	return 0;
}

static int resize_allowed(int fd)
{
	struct request rq = { OP_RESIZE, 0, 0, 0 };
	struct reply rp;
	struct stat st;
	uint64_t id[2];
	int ignored;

	if (gateway < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_nlink)
		return 1;
	id[0] = st.st_dev;
	id[1] = st.st_ino;
	rq.size = sizeof id;
	return !call(gateway, &rq, id, sizeof id, -1, NULL, 0, &rp, &ignored, 1);
}

static int do_reboot(int cmd)
{
	struct request rq = { OP_REBOOT, (uint32_t)cmd, 0, 0 };
	struct reply rp;
	int ignored;

	if (cmd != REBOOT_CMD_KEXEC || gateway < 0) {
		errno = EPERM;
		return -1;
	}
	if (transact(gateway, &rq, NULL, 0, -1, NULL, 0, &rp, &ignored, 1) == 0 && rp.err) {
		errno = rp.err;
		return -1;
	}
	/* The update went through (luod may close the gateway before it answers): the machine
	 * this process ran on is gone. */
	_exit(0);
}

static int is_device(const char *path)
{
	return path && strcmp(path, DEVICE) == 0;
}

#define OPEN_MODE(flags) ({ mode_t m = 0; if ((flags) & (O_CREAT | O_TMPFILE)) { \
	va_list ap; va_start(ap, flags); m = va_arg(ap, mode_t); va_end(ap); } m; })

int open(const char *path, int flags, ...)
{
	mode_t mode = OPEN_MODE(flags);
	REAL(open);
	return is_device(path) ? open_device(flags) : real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = OPEN_MODE(flags);
	REAL(open64);
	return is_device(path) ? open_device(flags) : real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = OPEN_MODE(flags);
	REAL(openat);
	return is_device(path) ? open_device(flags) : real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = OPEN_MODE(flags);
	REAL(openat64);
	return is_device(path) ? open_device(flags) : real_openat64(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	REAL(__open_2);
	return is_device(path) ? open_device(flags) : real___open_2(path, flags);
}

int __open64_2(const char *path, int flags)
{
	REAL(__open64_2);
	return is_device(path) ? open_device(flags) : real___open64_2(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	REAL(__openat_2);
	return is_device(path) ? open_device(flags) : real___openat_2(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	REAL(__openat64_2);
	return is_device(path) ? open_device(flags) : real___openat64_2(dirfd, path, flags);
}

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real_ioctl)(int, unsigned long, void *);
	va_list ap;
	void *arg;
	int saved = errno;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (is_ours(fd))
		return forward_ioctl(fd, (uint32_t)request, arg);
	errno = saved;
	if (!real_ioctl)
		real_ioctl = (int (*)(int, unsigned long, void *))dlsym(RTLD_NEXT, "ioctl");
	return real_ioctl(fd, request, arg);
}

int ftruncate(int fd, off_t length)
{
	REAL(ftruncate);
	return resize_allowed(fd) ? real_ftruncate(fd, length) : -1;
}

int ftruncate64(int fd, off64_t length)
{
	REAL(ftruncate64);
	return resize_allowed(fd) ? real_ftruncate64(fd, length) : -1;
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
	REAL(fallocate);
	return resize_allowed(fd) ? real_fallocate(fd, mode, offset, len) : -1;
}

int fallocate64(int fd, int mode, off64_t offset, off64_t len)
{
	REAL(fallocate64);
	return resize_allowed(fd) ? real_fallocate64(fd, mode, offset, len) : -1;
}

int reboot(int cmd)
{
	return do_reboot(cmd);
}

long syscall(long number, ...)
{
	static long (*real_syscall)(long, ...);
	long a[6];
	va_list ap;
	int i;

	va_start(ap, number);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (number == SYS_reboot)
		return do_reboot((int)a[2]);
	if (!real_syscall)
		real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
