/* The kernel's two-stage kexec tests (reference/kernel.md §6.2), written from the uAPI
 * facts and run under luod-run:
 *
 *     luo_kexec simple|multi|stress_sessions|stress_files|reboot [--stage N]
 *
 * A state session holds a memfd with the next stage number. Stage 1 (no state session yet)
 * builds the test sessions, closes /dev/liveupdate and forks a holder that keeps the
 * session fds until the kexec; the operator then runs `luoctl update`. The `reboot` test
 * calls reboot(RB_KEXEC) itself instead. Stage 2 retrieves, verifies and finishes every
 * session, the state session last, and prints "TEST PASSED". */
#include "luo_util.h"

#include <linux/reboot.h>
#include <sys/reboot.h>

#define MANY_SESSIONS 2000
#define MANY_FILES 500

struct test {
	const char *name, *state;
	__u64 state_token;
	void (*stage1)(int dev);
	void (*stage2)(int dev);
};

static void die(const char *what, int err)
{
	fprintf(stderr, "FAIL: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static int must(int ret, const char *what)
{
	if (ret < 0)
		die(what, ret);
	return ret;
}

static void preserve_text(int session, __u64 token, const char *text)
{
	int fd = must(text_memfd(text), "memfd");

	must(preserve_fd(session, fd, token), "PRESERVE_FD");
	close(fd);
}

static void verify_text(int session, __u64 token, const char *text)
{
	int fd = must(retrieve_fd(session, token), "RETRIEVE_FD");
	char *map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);

	if (map == MAP_FAILED)
		die("mmap", errno);
	if (strcmp(map, text) != 0) {
		fprintf(stderr, "FAIL: token %#llx holds \"%.64s\", want \"%s\"\n",
			(unsigned long long)token, map, text);
		exit(1);
	}
	munmap(map, 4096);
	close(fd);
}

static void finish(int session)
{
	must(finish_session(session), "FINISH");
	close(session);
}

static void raise_fd_limit(void)
{
	struct rlimit lim = { MANY_SESSIONS + 64, MANY_SESSIONS + 64 };
	struct rlimit now;

	getrlimit(RLIMIT_NOFILE, &now);
	if (now.rlim_max > lim.rlim_max)
		lim.rlim_max = now.rlim_max;
	if (now.rlim_cur < lim.rlim_cur && setrlimit(RLIMIT_NOFILE, &lim))
		die("RLIMIT_NOFILE", errno);
}

/* simple: the memfd is written through its mapping after PRESERVE_FD (live preservation);
 * the holder keeps the mapping, the program closes its fd at once. */
static void simple_1(int dev)
{
	int s = must(create_session(dev, "test-session"), "CREATE_SESSION");
	int fd = must(text_memfd("written before preserve"), "memfd");
	char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	must(preserve_fd(s, fd, 0x1A), "PRESERVE_FD");
	close(fd);
	strcpy(map, "hello kexec world");
}

static void simple_2(int dev)
{
	int s = must(retrieve_session(dev, "test-session"), "RETRIEVE_SESSION");

	verify_text(s, 0x1A, "hello kexec world");
	finish(s);
}

static void multi_1(int dev)
{
	int f1, f2;

	must(create_session(dev, "multi-test-empty-1"), "CREATE_SESSION");
	must(create_session(dev, "multi-test-empty-2"), "CREATE_SESSION");
	f1 = must(create_session(dev, "multi-test-files-1"), "CREATE_SESSION");
	f2 = must(create_session(dev, "multi-test-files-2"), "CREATE_SESSION");
	preserve_text(f1, 0x1001, "multi file 1001");
	preserve_text(f2, 0x2002, "multi file 2002");
	preserve_text(f2, 0x3003, "multi file 3003");
}

static void multi_2(int dev)
{
	int e1 = must(retrieve_session(dev, "multi-test-empty-1"), "RETRIEVE_SESSION");
	int e2 = must(retrieve_session(dev, "multi-test-empty-2"), "RETRIEVE_SESSION");
	int f1 = must(retrieve_session(dev, "multi-test-files-1"), "RETRIEVE_SESSION");
	int f2 = must(retrieve_session(dev, "multi-test-files-2"), "RETRIEVE_SESSION");

	struct liveupdate_session_get_name name = { .size = sizeof name, .reserved = 1 };
	int again, retrieved;

	verify_text(f1, 0x1001, "multi file 1001");
	verify_text(f2, 0x3003, "multi file 3003");
	verify_text(f2, 0x2002, "multi file 2002");
	/* Incoming and outgoing lists are apart: the same name may be created again now; a
	 * retrieved file stays LUO's until its session finishes. */
	again = must(create_session(dev, "multi-test-files-1"), "CREATE_SESSION(incoming name)");
	retrieved = must(retrieve_fd(f2, 0x2002), "RETRIEVE_FD");
	if (preserve_fd(again, retrieved, 0x1) != -EBUSY)
		die("preserving a retrieved file before FINISH did not give EBUSY", 0);
	close(again);
	if (ioctl(f1, LIVEUPDATE_SESSION_GET_NAME, &name) == 0 || errno != EINVAL)
		die("GET_NAME with reserved set did not give EINVAL", errno);
	if (ioctl(f1, LIVEUPDATE_IOCTL_CREATE_SESSION, &name) == 0 || errno != EINVAL)
		die("a device ioctl on a session fd did not give EINVAL", errno);
	must(finish_session(f1), "FINISH");
	if (retrieve_fd(f1, 0x1001) != -ENOENT)
		die("RETRIEVE_FD after FINISH did not give ENOENT", 0);
	must(finish_session(f1), "a second FINISH");
	finish(e1);
	finish(e2);
	finish(f1);
	finish(f2);
	again = must(create_session(dev, "multi-represerve"), "CREATE_SESSION");
	must(preserve_fd(again, retrieved, 0x1), "PRESERVE_FD of a finished session's file");
	close(again);
	close(retrieved);
}

static void stress_sessions_1(int dev)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	int i;

	raise_fd_limit();
	for (i = 0; i < MANY_SESSIONS; i++) {
		snprintf(name, sizeof name, "many-test-%d", i);
		must(create_session(dev, name), "CREATE_SESSION");
	}
}

static void stress_sessions_2(int dev)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	int i;

	for (i = 0; i < MANY_SESSIONS; i++) {
		snprintf(name, sizeof name, "many-test-%d", i);
		finish(must(retrieve_session(dev, name), "RETRIEVE_SESSION"));
	}
}

static void stress_files_1(int dev)
{
	int s = must(create_session(dev, "many_files_session"), "CREATE_SESSION"), i;
	char text[32];

	for (i = 0; i < MANY_FILES; i++) {
		snprintf(text, sizeof text, "file-data-%d", i);
		preserve_text(s, i, text);
	}
}

static void stress_files_2(int dev)
{
	int s = must(retrieve_session(dev, "many_files_session"), "RETRIEVE_SESSION"), i;
	char text[32];

	for (i = 0; i < MANY_FILES; i++) {
		snprintf(text, sizeof text, "file-data-%d", i);
		verify_text(s, i, text);
	}
	finish(s);
}

static const struct test tests[] = {
	{ "simple", "kexec_simple_state", 999, simple_1, simple_2 },
	{ "multi", "kexec_multi_state", 998, multi_1, multi_2 },
	{ "stress_sessions", "kexec_many_state", 999, stress_sessions_1, stress_sessions_2 },
	{ "stress_files", "kexec_many_files_state", 9999, stress_files_1, stress_files_2 },
	{ "reboot", "kexec_reboot_state", 997, simple_1, simple_2 },
};

static void hold_until_kexec(void)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork", errno);
	if (pid > 0)
		return;
	setsid();
	if (chdir("/")) {}
	close(0);
	close(1);
	close(2);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	const struct test *t = NULL;
	int dev, state, stage, want = 0;
	unsigned i;

	for (i = 0; argc > 1 && i < sizeof tests / sizeof tests[0]; i++)
		if (strcmp(argv[1], tests[i].name) == 0)
			t = &tests[i];
	if (!t) {
		fprintf(stderr, "usage: luo_kexec simple|multi|stress_sessions|stress_files|reboot [--stage N]\n");
		return 2;
	}
	if (argc > 3 && strcmp(argv[2], "--stage") == 0)
		want = atoi(argv[3]);
	dev = open(DEVICE, O_RDWR);
	if (dev < 0)
		die("open " DEVICE, errno);
	state = retrieve_session(dev, t->state);
	stage = state == -ENOENT ? 1 : 2;
	if (state < 0 && state != -ENOENT)
		die("RETRIEVE_SESSION(state)", state);
	if (want && want != stage) {
		fprintf(stderr, "FAIL: asked for stage %d, the state session says %d\n", want, stage);
		return 1;
	}
	if (stage == 1) {
		state = must(create_session(dev, t->state), "CREATE_SESSION(state)");
		preserve_text(state, t->state_token, "2");
		t->stage1(dev);
		if (strcmp(t->name, "reboot") == 0) {
			reboot(LINUX_REBOOT_CMD_KEXEC);
			die("reboot(RB_KEXEC)", errno);
		}
		close(dev);
		hold_until_kexec();
		printf("stage 1 done: run the kexec\n");
		return 0;
	}
	verify_text(state, t->state_token, "2");
	t->stage2(dev);
	finish(state);
	close(dev);
	printf("TEST PASSED\n");
	return 0;
}
