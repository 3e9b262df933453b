/* The scenarios of the kernel's liveupdate selftest (reference/kernel.md §6.1), written
 * from the uAPI facts, plus the uAPI's generic rules; run under luod-run. Prints one line
 * per test; exits 1 if any check failed. */
#include "luo_util.h"

#define MANY_SESSIONS 2000
#define MANY_FILES 500

static int open_device(void)
{
	int dev = open(DEVICE, O_RDWR);

	CHECK(dev >= 0, "open %s: %s", DEVICE, strerror(errno));
	return dev;
}

static void basic_open_close(void)
{
	int dev = open_device();

	CHECK(close(dev) == 0, "close: %s", strerror(errno));
}

static void exclusive_open(void)
{
	int dev = open_device();

	CHECK(open(DEVICE, O_RDWR) < 0 && errno == EBUSY, "second open did not give EBUSY");
	close(dev);
	dev = open_device();
	close(dev);
}

static void create_duplicate_session(void)
{
	int dev = open_device(), s = create_session(dev, "dup-session");

	CHECK_OK(s);
	CHECK_ERR(create_session(dev, "dup-session"), EEXIST);
	close(s);
	close(dev);
}

static void create_distinct_sessions(void)
{
	int dev = open_device(), a = create_session(dev, "session-a"), b = create_session(dev, "session-b");

	CHECK_OK(a);
	CHECK_OK(b);
	close(a);
	close(b);
	close(dev);
}

static void preserve_memfd(void)
{
	int dev = open_device(), s = create_session(dev, "memfd-session");
	int m = text_memfd("hello liveupdate");

	CHECK_OK(preserve_fd(s, m, 0x1234));
	close(s);
	CHECK(memfd_holds(m, "hello liveupdate"), "memfd content changed");
	close(m);
	close(dev);
}

static void preserve_multiple_memfds(void)
{
	int dev = open_device(), s = create_session(dev, "multi-memfd");
	int a = text_memfd("memfd A"), b = text_memfd("memfd B");

	CHECK_OK(preserve_fd(s, a, 0xAAAA));
	CHECK_OK(preserve_fd(s, b, 0xBBBB));
	CHECK_ERR(preserve_fd(s, text_memfd("other"), 0xAAAA), EEXIST);
	close(s);
	CHECK(memfd_holds(a, "memfd A") && memfd_holds(b, "memfd B"), "contents mixed up");
	close(a);
	close(b);
	close(dev);
}

static void preserve_complex_scenario(void)
{
	int dev = open_device(), s1 = create_session(dev, "complex-1"), s2 = create_session(dev, "complex-2");
	int d1 = text_memfd("data one"), d2 = text_memfd("data two");
	int e1 = memfd_create("empty", 0), e2 = memfd_create("empty", 0);
	char c;

	CHECK_OK(preserve_fd(s1, d1, 0x1111));
	CHECK_OK(preserve_fd(s1, e1, 0x2222));
	CHECK_OK(preserve_fd(s2, d2, 0x3333));
	CHECK_OK(preserve_fd(s2, e2, 0x4444));
	close(s1);
	close(s2);
	CHECK(memfd_holds(d1, "data one") && memfd_holds(d2, "data two"), "data lost");
	CHECK(read(e1, &c, 1) == 0 && read(e2, &c, 1) == 0, "empty memfds are not empty");
	close(d1);
	close(d2);
	close(e1);
	close(e2);
	close(dev);
}

static void preserve_unsupported_fd(void)
{
	int dev = open_device(), s = create_session(dev, "unsupported"), null = open("/dev/null", O_RDWR);

	CHECK_ERR(preserve_fd(s, null, 0x1), ENOENT);
	CHECK_ERR(preserve_fd(s, 9999, 0x2), EBADF);
	close(null);
	close(s);
	close(dev);
}

static void prevent_double_preservation(void)
{
	int dev = open_device(), a = create_session(dev, "double-a"), b = create_session(dev, "double-b");
	int m = text_memfd("once"), again = dup(m);

	CHECK_OK(preserve_fd(a, m, 0x1));
	CHECK_ERR(preserve_fd(b, m, 0x1), EBUSY);
	CHECK_ERR(preserve_fd(a, again, 0x2), EBUSY);
	CHECK_ERR(ftruncate(m, 8192) < 0 ? -errno : 0, EPERM);
	close(a);
	CHECK_OK(ftruncate(m, 8192) < 0 ? -errno : 0);
	close(b);
	close(again);
	close(m);
	close(dev);
}

static void create_session_no_null_termination(void)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH + 1];
	struct liveupdate_ioctl_create_session arg = { .size = sizeof arg };
	int dev = open_device();

	memset(name, 'x', sizeof name);
	memcpy(arg.name, name, sizeof arg.name);
	CHECK_ERR(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg)), EINVAL);
	close(dev);
}

static void create_session_empty_name(void)
{
	int dev = open_device();

	CHECK_ERR(create_session(dev, ""), EINVAL);
	close(dev);
}

static void check_name(const char *name)
{
	struct liveupdate_session_get_name arg = { .size = sizeof arg };
	int dev = open_device(), s = create_session(dev, name);

	CHECK_OK(s);
	CHECK_OK(result(ioctl(s, LIVEUPDATE_SESSION_GET_NAME, &arg)));
	CHECK(strcmp((char *)arg.name, name) == 0, "GET_NAME gave %.64s, want %s", arg.name, name);
	close(s);
	close(dev);
}

static void get_session_name(void)
{
	check_name("get-name-session");
}

static void get_session_name_max_length(void)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = 0;
	check_name(name);
}

static int raise_fd_limit(rlim_t want)
{
	struct rlimit lim;

	getrlimit(RLIMIT_NOFILE, &lim);
	if (lim.rlim_cur >= want)
		return 0;
	lim.rlim_cur = want;
	if (lim.rlim_max < want)
		lim.rlim_max = want;
	return setrlimit(RLIMIT_NOFILE, &lim);
}

static void preserve_many_sessions(void)
{
	static int fds[MANY_SESSIONS];
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	int dev, i;

	if (raise_fd_limit(MANY_SESSIONS + 64)) {
		printf("# skip: RLIMIT_NOFILE: %s\n", strerror(errno));
		return;
	}
	dev = open_device();
	for (i = 0; i < MANY_SESSIONS; i++) {
		snprintf(name, sizeof name, "many-%d", i);
		fds[i] = create_session(dev, name);
		CHECK(fds[i] >= 0, "session %d: %s", i, strerror(-fds[i]));
	}
	for (i = 0; i < MANY_SESSIONS; i++)
		close(fds[i]);
	close(dev);
}

static void preserve_many_files(void)
{
	static int fds[MANY_FILES];
	int dev = open_device(), s = create_session(dev, "many-files"), i;

	for (i = 0; i < MANY_FILES; i++) {
		fds[i] = memfd_create("many", 0);
		CHECK_OK(preserve_fd(s, fds[i], i));
	}
	close(s);
	for (i = 0; i < MANY_FILES; i++)
		close(fds[i]);
	close(dev);
}

/* The generic rules every ioctl shares, and the fd semantics. */
static void uapi_rules(void)
{
	struct { struct liveupdate_ioctl_create_session s; __u8 tail[8]; } big = { 0 };
	struct liveupdate_ioctl_create_session small = { .size = 8 };
	int dev = open_device(), s, flags, go[2];
	pid_t child;
	char c = 0;

	CHECK_ERR(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &small)), EINVAL);
	big.s.size = sizeof big;
	strcpy((char *)big.s.name, "tail");
	big.tail[3] = 1;
	CHECK_ERR(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &big)), E2BIG);
	big.tail[3] = 0;
	s = result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &big));
	CHECK(s == 0 && big.s.fd >= 0, "a larger struct with a zero tail was refused");
	close(big.s.fd);
	CHECK_ERR(result(ioctl(dev, _IOW(LIVEUPDATE_IOCTL_TYPE, 0x00, int), &big)), ENOTTY);
	CHECK_ERR(result(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x07), &big)), EINVAL);
	CHECK_ERR(result(ioctl(dev, LIVEUPDATE_SESSION_FINISH, &big)), EINVAL);
	CHECK_ERR(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, NULL)), EFAULT);
	CHECK_ERR(result(ioctl(dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x07), NULL)), EINVAL);
	{
		/* Far past what the kernel knows: every byte up to `size` must be zero. */
		static union { struct liveupdate_ioctl_create_session s; __u8 raw[3 * 4096]; } huge;

		huge.s.size = sizeof huge;
		strcpy((char *)huge.s.name, "huge");
		huge.raw[2 * 4096 + 7] = 1;
		CHECK_ERR(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &huge)), E2BIG);
		huge.raw[2 * 4096 + 7] = 0;
		CHECK_OK(result(ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &huge)));
		CHECK(huge.s.size == sizeof huge && huge.s.fd >= 0, "huge struct copied back wrong");
		close(huge.s.fd);
	}

	s = create_session(dev, "cloexec");
	flags = fcntl(s, F_GETFD);
	CHECK(flags >= 0 && (flags & FD_CLOEXEC), "session fd is not O_CLOEXEC");
	close(dev);
	CHECK_OK(preserve_fd(s, text_memfd("after close"), 0x5));
	/* A forked child's copy keeps the session: it goes with the last reference. */
	CHECK_OK(pipe(go) ? -errno : 0);
	child = fork();
	if (child == 0) {
		close(go[1]);
		_exit(read(go[0], &c, 1) == 0 ? 0 : 1);
	}
	close(go[0]);
	close(s);
	dev = open_device();
	CHECK_ERR(create_session(dev, "cloexec"), EEXIST);
	close(go[1]);
	waitpid(child, NULL, 0);
	CHECK_OK(s = create_session(dev, "cloexec"));
	close(s);
	close(dev);
}

/* Every libc entry point that opens a path reaches luod: open, open64, openat, openat64,
 * and (built with _FORTIFY_SOURCE, flags not known at compile time) their __*_2 forms. */
static int open_via(int how, int flags)
{
	switch (how) {
	case 0: return open(DEVICE, flags);
	case 1: return open64(DEVICE, flags);
	case 2: return openat(AT_FDCWD, DEVICE, flags);
	default: return openat64(AT_FDCWD, DEVICE, flags);
	}
}

static void libc_entry_points(void)
{
	volatile int flags = O_RDWR | O_CLOEXEC;
	int how, fd, got, s;

	for (how = 0; how < 4; how++) {
		fd = open_via(how, flags);
		CHECK(fd >= 0, "entry point %d: %s", how, strerror(errno));
		got = fcntl(fd, F_GETFD);
		CHECK(got >= 0 && (got & FD_CLOEXEC), "entry point %d lost O_CLOEXEC", how);
		s = create_session(fd, "entry-point");
		CHECK_OK(s);
		close(s);
		close(fd);
	}
}

int main(void)
{
	static const struct { const char *name; void (*run)(void); } tests[] = {
#define T(f) { #f, f }
		T(basic_open_close), T(exclusive_open), T(create_duplicate_session),
		T(create_distinct_sessions), T(preserve_memfd), T(preserve_multiple_memfds),
		T(preserve_complex_scenario), T(preserve_unsupported_fd),
		T(prevent_double_preservation), T(create_session_no_null_termination),
		T(create_session_empty_name), T(get_session_name), T(get_session_name_max_length),
		T(preserve_many_sessions), T(preserve_many_files), T(uapi_rules),
		T(libc_entry_points),
	};
	unsigned i;
	int before;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		before = failures;
		tests[i].run();
		printf("%s %u %s\n", failures == before ? "ok" : "not ok", i + 1, tests[i].name);
	}
	return failures ? 1 : 0;
}
