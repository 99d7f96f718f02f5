/* rdv_dir — the built-in rendezvous through a shared directory, for tests
 * and for `bursar-train --ranks N` on one machine. Each rank publishes its
 * address as dir/rank-N (temp file + rename, so readers never see half a
 * file) and polls until all size files exist or the default timeout passes.
 * It never removes files: the directory belongs to the caller.
 */
#include "bcoll.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int write_addr(const char *dir, int rank, const char *addr)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	size_t len = strlen(addr);
	int fd, r = 0;

	snprintf(tmp, sizeof(tmp), "%s/.rank-%d.tmp", dir, rank);
	snprintf(path, sizeof(path), "%s/rank-%d", dir, rank);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, addr, len) != (ssize_t)len)
		r = -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	return r;
}

/* Reads dir/rank-i into addr; -ENOENT while that rank has not published. */
static int read_addr(const char *dir, int rank, char addr[BCOLL_ADDR_LEN])
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/rank-%d", dir, rank);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, addr, BCOLL_ADDR_LEN - 1);
	close(fd);
	if (n <= 0)
		return -EINVAL;
	addr[n] = 0;
	return 0;
}

static int dir_exchange(void *ctx, int rank, int size, const char *my_addr,
			char (*addrs)[BCOLL_ADDR_LEN])
{
	const char *dir = ctx;
	struct timespec t0, t;
	int r, have = 0;

	r = write_addr(dir, rank, my_addr);
	if (r < 0)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < size; i++)
		addrs[i][0] = 0;
	for (;;) {
		for (int i = 0; i < size; i++) {
			if (addrs[i][0])
				continue;
			r = read_addr(dir, i, addrs[i]);
			if (r == 0)
				have++;
			else if (r != -ENOENT)
				return r;
		}
		if (have == size)
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
		    bcoll_default_timeout_ms())
			return -ETIMEDOUT;
		usleep(5000);
	}
}

struct bcoll_rendezvous bcoll_rendezvous_dir(const char *dir)
{
	return (struct bcoll_rendezvous){.exchange = dir_exchange, .ctx = (void *)dir};
}
