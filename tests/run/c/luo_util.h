/* Helpers shared by the project's live-update test programs: session and memfd calls that
 * return the ioctl's result (0 or -errno), and a reporter. */
#ifndef LUOD_TEST_LUO_UTIL_H
#define LUOD_TEST_LUO_UTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "liveupdate.h"

#define DEVICE "/dev/liveupdate"

static int failures __attribute__((unused));

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	fprintf(stderr, "FAIL %s:%d: ", __func__, __LINE__); fprintf(stderr, __VA_ARGS__); \
	fputc('\n', stderr); } } while (0)
#define CHECK_ERR(call, want) do { int got_ = (call); CHECK(got_ == -(want), \
	"%s gave %d (%s), want -%s", #call, got_, got_ < 0 ? strerror(-got_) : "ok", #want); \
	} while (0)
#define CHECK_OK(call) do { int got_ = (call); CHECK(got_ >= 0, "%s failed: %s", #call, \
	strerror(-got_)); } while (0)

static inline int result(int ret) { return ret < 0 ? -errno : ret; }

static inline int create_session(int dev, const char *name)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof arg, .fd = -1 };

	memcpy(arg.name, name, strnlen(name, sizeof arg.name));
	return ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg) < 0 ? -errno : arg.fd;
}

static inline int retrieve_session(int dev, const char *name)
{
	struct liveupdate_ioctl_retrieve_session arg = { .size = sizeof arg, .fd = -1 };

	memcpy(arg.name, name, strnlen(name, sizeof arg.name));
	return ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg) < 0 ? -errno : arg.fd;
}

static inline int preserve_fd(int session, int fd, __u64 token)
{
	struct liveupdate_session_preserve_fd arg = { .size = sizeof arg, .fd = fd, .token = token };

	return result(ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &arg));
}

static inline int retrieve_fd(int session, __u64 token)
{
	struct liveupdate_session_retrieve_fd arg = { .size = sizeof arg, .fd = -1, .token = token };

	return ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &arg) < 0 ? -errno : arg.fd;
}

static inline int finish_session(int session)
{
	struct liveupdate_session_finish arg = { .size = sizeof arg };

	return result(ioctl(session, LIVEUPDATE_SESSION_FINISH, &arg));
}

/* A one-page memfd holding `text` (written through a mapping); returns its fd. */
static inline int text_memfd(const char *text)
{
	int fd = memfd_create("luod-test", 0);
	char *map;

	if (fd < 0 || ftruncate(fd, 4096) < 0)
		return -errno;
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	strcpy(map, text);
	munmap(map, 4096);
	return fd;
}

/* 1 when the memfd `fd` starts with the NUL-terminated `text`. */
static inline int memfd_holds(int fd, const char *text)
{
	char buf[4096] = { 0 };

	if (pread(fd, buf, sizeof buf - 1, 0) < 0)
		return 0;
	return strcmp(buf, text) == 0;
}

#endif
