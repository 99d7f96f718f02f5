/* pack — turns a bundle directory into a tar.gz with libarchive so
 * `bursarctl submit DIR` works without the user running tar. Follows no
 * symlinks (they are skipped with a warning: the server would reject them). */
#include "ctl.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int pack_file(struct archive *a, const char *path, const char *name, struct stat *st)
{
	struct archive_entry *e = archive_entry_new();
	char buf[65536];
	ssize_t n;
	int fd, r = 0;

	if (!e)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = -errno;
		goto out_free;
	}
	archive_entry_set_pathname(e, name);
	archive_entry_set_size(e, st->st_size);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_mtime(e, st->st_mtime, 0);
	if (archive_write_header(a, e) != ARCHIVE_OK) {
		r = -EIO;
		goto out_close;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (archive_write_data(a, buf, n) != n) {
			r = -EIO;
			goto out_close;
		}
	if (n < 0)
		r = -errno;
out_close:
	close(fd);
out_free:
	archive_entry_free(e);
	return r;
}

static int pack_tree(struct archive *a, const char *root, const char *rel, int depth)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (depth > 16)
		return -ELOOP;
	snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);
	d = opendir(path);
	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d))) {
		char sub[PATH_MAX], name[PATH_MAX];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(name, sizeof(name), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		snprintf(sub, sizeof(sub), "%s/%s", root, name);
		if (lstat(sub, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			r = pack_tree(a, root, name, depth + 1);
		else if (S_ISREG(st.st_mode))
			r = pack_file(a, sub, name, &st);
		else
			fprintf(stderr, "bursarctl: skipping '%s': not a regular file\n", name);
	}
	closedir(d);
	return r;
}

int ctl_pack_dir(const char *dir, const char *dest)
{
	struct archive *a = archive_write_new();
	int r;

	if (!a)
		return -ENOMEM;
	archive_write_set_format_pax_restricted(a);
	archive_write_add_filter_gzip(a);
	if (archive_write_open_filename(a, dest) != ARCHIVE_OK) {
		r = -EIO;
		goto out_free;
	}
	r = pack_tree(a, dir, "", 0);
	if (archive_write_close(a) != ARCHIVE_OK && r == 0)
		r = -EIO;
out_free:
	archive_write_free(a);
	return r;
}
