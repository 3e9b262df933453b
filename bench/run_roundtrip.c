/* bench/run.py's ioctl loop: N GET_NAME round trips on a session fd (under luod-run) and
 * N bare ioctls on /dev/null, same process; prints nanoseconds per call for each. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct session { uint32_t size; int32_t fd; uint8_t name[64]; };
struct name { uint32_t size, reserved; uint8_t name[64]; };

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10000, dev = open("/dev/liveupdate", O_RDWR), null, i;
	struct session s = { .size = sizeof s, .name = "bench-roundtrip" };
	struct name get = { .size = sizeof get };
	double t0, luo, bare;

	if (dev < 0 || ioctl(dev, _IO(0xBA, 0x00), &s) < 0) {
		perror("bench session");
		return 1;
	}
	null = open("/dev/null", O_RDWR);
	t0 = now();
	for (i = 0; i < n; i++)
		if (ioctl(s.fd, _IO(0xBA, 0x43), &get) < 0)
			return 1;
	luo = (now() - t0) / n;
	t0 = now();
	for (i = 0; i < n; i++)
		ioctl(null, _IO(0xBA, 0x43), &get);
	bare = (now() - t0) / n;
	printf("%.0f %.0f\n", luo, bare);
	return 0;
}
