/* upload — turns an uploaded archive (tar, tar.gz, tar.zst) into a bundle
 * directory. It owns the one place where user-chosen paths meet the
 * filesystem, so it trusts nothing: every entry path is normalised and
 * checked, only regular files and directories are accepted, and files are
 * created with openat()/mkdirat() relative to the destination directory with
 * O_NOFOLLOW|O_EXCL, never with archive_write_disk. It must never write
 * outside dest, whatever the archive says; the caller removes dest on error. */
#include "consoled.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPLOAD_BLOCK 65536

int upload_clean_path(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
	size_t n = 0, depth = 0, total = strlen(path);
	const char *s = path;

	if (total > UPLOAD_MAX_PATH)
		return util_fail(err, errlen, -ENAMETOOLONG, "archive entry '%.80s...': path is longer "
			    "than %d characters", path, UPLOAD_MAX_PATH);
	if (path[0] == '/')
		return util_fail(err, errlen, -EPERM, "archive entry '%.200s': absolute paths are not "
			    "allowed", path);
	while (*s) {
		const char *e = strchr(s, '/');
		size_t len = e ? (size_t)(e - s) : strlen(s);

		if (len == 0 || (len == 1 && s[0] == '.')) {
			/* "a//b", "./a", "a/./b", "a/": no component */
		} else if (len == 2 && s[0] == '.' && s[1] == '.') {
			return util_fail(err, errlen, -EPERM, "archive entry '%.200s': '..' is not "
				    "allowed in a path", path);
		} else if (len > UPLOAD_MAX_COMPONENT) {
			return util_fail(err, errlen, -ENAMETOOLONG, "archive entry '%.80s...': a path "
				    "component is longer than %d characters", path,
				    UPLOAD_MAX_COMPONENT);
		} else {
			for (size_t i = 0; i < len; i++)
				if ((unsigned char)s[i] < ' ' || s[i] == 0x7f)
					return util_fail(err, errlen, -EINVAL, "archive entry '%.200s': "
						    "control characters are not allowed in a path",
						    path);
			if (++depth > UPLOAD_MAX_DEPTH)
				return util_fail(err, errlen, -ENAMETOOLONG, "archive entry '%.200s': "
					    "path is deeper than %d levels", path,
					    UPLOAD_MAX_DEPTH);
			if (n + (n ? 1 : 0) + len + 1 > outlen)
				return util_fail(err, errlen, -ENAMETOOLONG, "archive entry '%.80s...': "
					    "path too long", path);
			if (n)
				out[n++] = '/';
			memcpy(out + n, s, len);
			n += len;
		}
		s += len;
		if (*s == '/')
			s++;
	}
	out[n] = 0;
	return 0;
}

/* Opens (creating when missing) the directory rel below dirfd, one component
 * at a time without following symlinks. Returns the new fd or a negative errno. */
static int open_dirs(int dirfd, char *rel, int create_last)
{
	int fd = dup(dirfd), r;
	char *s = rel, *e = NULL;

	if (fd < 0)
		return -errno;
	while (*s) {
		int nfd;

		e = strchr(s, '/');
		if (e)
			*e = 0;
		if ((e || create_last) && mkdirat(fd, s, 0750) < 0 && errno != EEXIST)
			goto out_errno;
		nfd = openat(fd, s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0)
			goto out_errno;
		close(fd);
		fd = nfd;
		if (!e)
			break;
		*e = '/';
		s = e + 1;
	}
	return fd;
out_errno:
	r = -errno;
	if (e)
		*e = '/';
	close(fd);
	return r;
}

/* Writes the data of the current entry into a new file rel below dirfd. */
static int write_entry(struct archive *a, int dirfd, char *rel, int64_t declared,
		       uint64_t *total, const struct upload_limits *lim, const char *name,
		       char *err, size_t errlen)
{
	char *slash = strrchr(rel, '/');
	const char *base = rel;
	uint64_t written = 0;
	int pfd = dirfd, fd, r = 0;

	if (slash) {
		*slash = 0;
		pfd = open_dirs(dirfd, rel, 1);
		*slash = '/';
		if (pfd < 0)
			return util_fail(err, errlen, pfd, "archive entry '%.200s': cannot create its "
				    "directory: %s", name, strerror(-pfd));
		base = slash + 1;
	}
	fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0) {
		r = -errno;
		util_fail(err, errlen, r, "archive entry '%.200s': %s", name,
		     r == -EEXIST ? "appears twice in the archive" : strerror(-r));
		goto out_close_parent;
	}
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int k = archive_read_data_block(a, &buf, &size, &off);

		if (k == ARCHIVE_EOF)
			break;
		if (k < ARCHIVE_WARN) {
			r = util_fail(err, errlen, -EBADMSG, "corrupt or truncated archive at entry "
				 "'%.200s': %s", name, archive_error_string(a));
			goto out_close;
		}
		if (off < 0 || (declared >= 0 && (int64_t)(off + size) > declared)) {
			r = util_fail(err, errlen, -EBADMSG, "archive entry '%.200s': data beyond its "
				 "declared size", name);
			goto out_close;
		}
		*total += size;
		written += size;
		if (*total > lim->max_bytes) {
			r = util_fail(err, errlen, -EFBIG, "bundle too large when extracted at entry "
				 "'%.200s' (more than %llu bytes)", name,
				 (unsigned long long)lim->max_bytes);
			goto out_close;
		}
		for (size_t done = 0; done < size;) {
			ssize_t w = pwrite(fd, (const char *)buf + done, size - done, off + done);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				r = util_fail(err, errlen, -errno, "cannot write '%.200s': %s", name,
					 strerror(errno));
				goto out_close;
			}
			done += w;
		}
	}
	/* A sparse entry's holes count too: the file is declared bytes long. */
	if (declared > 0 && (uint64_t)declared > written) {
		*total += declared - written;
		if (*total > lim->max_bytes) {
			r = util_fail(err, errlen, -EFBIG, "bundle too large when extracted at entry "
				      "'%.200s' (more than %llu bytes)", name,
				      (unsigned long long)lim->max_bytes);
			goto out_close;
		}
	}
	if (declared > 0 && ftruncate(fd, declared) < 0)
		r = util_fail(err, errlen, -errno, "cannot write '%.200s': %s", name, strerror(errno));
out_close:
	close(fd);
out_close_parent:
	if (pfd != dirfd)
		close(pfd);
	return r;
}

/* Says why an entry type is refused, or NULL for files and directories. */
static const char *refused_type(struct archive_entry *e)
{
	if (archive_entry_hardlink(e))
		return "hard links are not allowed";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
	case AE_IFDIR:
		return NULL;
	case AE_IFLNK:
		return "symbolic links are not allowed";
	case AE_IFCHR:
	case AE_IFBLK:
		return "device files are not allowed";
	case AE_IFIFO:
		return "FIFOs are not allowed";
	default:
		return "only regular files and directories are allowed";
	}
}

/* When dest holds exactly one directory and nothing else, moves that
 * directory's contents up one level (a tarball of "mybundle/..."). */
static int strip_top(const char *dest)
{
	char only[256] = "", tmp[32];
	struct dirent *de;
	int dfd, sfd, n = 0, r = 0;
	DIR *d;

	dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	d = fdopendir(dup(dfd));
	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		n++;
		snprintf(only, sizeof(only), "%s", de->d_name);
	}
	closedir(d);
	if (n != 1 || !strcmp(only, "config.json") || !strcmp(only, "data"))
		goto out_close;
	{
		struct stat st;

		if (fstatat(dfd, only, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			goto out_close;
	}
	/* a temporary name none of the directory's own entries has (a fixed
	 * ".strip" failed on a bundle holding one) */
	{
		char probe[sizeof(only) + sizeof(tmp) + 1], hex[17];
		struct stat st;

		do {
			if (util_random_hex(hex, 8) < 0) {
				r = -EIO;
				goto out_close;
			}
			snprintf(tmp, sizeof(tmp), ".strip-%s", hex);
			snprintf(probe, sizeof(probe), "%s/%s", only, tmp);
		} while (fstatat(dfd, probe, &st, AT_SYMLINK_NOFOLLOW) == 0);
	}
	if (renameat(dfd, only, dfd, tmp) < 0) {
		r = -errno;
		goto out_close;
	}
	sfd = openat(dfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0) {
		r = -errno;
		goto out_close;
	}
	d = fdopendir(dup(sfd));
	while (d && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (renameat(sfd, de->d_name, dfd, de->d_name) < 0 && !r)
			r = -errno;
	}
	if (d)
		closedir(d);
	close(sfd);
	if (!r && unlinkat(dfd, tmp, AT_REMOVEDIR) < 0)
		r = -errno;
out_close:
	close(dfd);
	return r;
}

/* Extracts one entry (already path-checked) below dirfd. */
static int extract_entry(struct archive *a, struct archive_entry *e, int dirfd, char *rel,
			 uint64_t *total, const struct upload_limits *lim, char *err, size_t errlen)
{
	const char *name = archive_entry_pathname(e);
	int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;

	if (archive_entry_filetype(e) == AE_IFDIR) {
		int fd = open_dirs(dirfd, rel, 1);

		if (fd < 0)
			return util_fail(err, errlen, fd, "archive entry '%.200s': cannot create the "
				    "directory: %s", name, strerror(-fd));
		close(fd);
		return 0;
	}
	if (declared > 0 && *total + (uint64_t)declared > lim->max_bytes)
		return util_fail(err, errlen, -EFBIG, "bundle too large when extracted at entry "
			    "'%.200s' (more than %llu bytes)", name,
			    (unsigned long long)lim->max_bytes);
	return write_entry(a, dirfd, rel, declared, total, lim, name, err, errlen);
}

/* 1 when path starts like a gzip or zstd stream: its damage is a corrupt
 * upload (400), not an unsupported format (415) */
static int compressed(const char *path)
{
	unsigned char m[4] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC), n;

	if (fd < 0)
		return 0;
	n = (int)read(fd, m, sizeof(m));
	close(fd);
	return (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) ||
	       (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd);
}

/* libarchive could not go on after n entries: nothing read as tar and not a
 * gzip or zstd stream is another format (415); else a damaged upload, a
 * stream or tar that breaks off (400) */
static int read_failed(struct archive *a, const char *archive, uint64_t n, char *err,
		       size_t errlen)
{
	if (n == 0 && archive_format(a) == 0 && !compressed(archive))
		return util_fail(err, errlen, -EPROTONOSUPPORT, "not a tar archive (tar, tar.gz or "
				 "tar.zst): %s", archive_error_string(a));
	return util_fail(err, errlen, -EBADMSG, "corrupt or truncated archive after %llu "
			 "entries: %s", (unsigned long long)n, archive_error_string(a));
}

int upload_extract(const char *archive, const char *dest, const struct upload_limits *lim,
		   uint64_t *files, uint64_t *bytes, char *err, size_t errlen)
{
	struct archive_entry *e;
	struct archive *a;
	uint64_t n = 0, total = 0;
	char rel[UPLOAD_MAX_PATH + 1];
	int dirfd, r = 0, k;

	dirfd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return util_fail(err, errlen, -errno, "cannot open the bundle directory: %s",
			    strerror(errno));
	a = archive_read_new();
	if (!a) {
		r = util_fail(err, errlen, -ENOMEM, "out of memory");
		goto out_close;
	}
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (archive_read_open_filename(a, archive, UPLOAD_BLOCK) != ARCHIVE_OK) {
		r = read_failed(a, archive, 0, err, errlen);
		goto out_free;
	}
	while ((k = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
		const char *name, *why;

		if (k < ARCHIVE_WARN) {
			r = read_failed(a, archive, n, err, errlen);
			goto out_free;
		}
		if (++n > lim->max_files) {
			r = util_fail(err, errlen, -E2BIG, "too many files in the bundle (more than %llu)",
				 (unsigned long long)lim->max_files);
			goto out_free;
		}
		name = archive_entry_pathname(e);
		if (!name) {
			r = util_fail(err, errlen, -EINVAL, "archive entry %llu has no readable path",
				 (unsigned long long)n);
			goto out_free;
		}
		why = refused_type(e);
		if (why) {
			r = util_fail(err, errlen, -EPERM, "archive entry '%.200s': %s", name, why);
			goto out_free;
		}
		r = upload_clean_path(name, rel, sizeof(rel), err, errlen);
		if (r < 0)
			goto out_free;
		if (!rel[0])
			continue; /* "./" itself */
		r = extract_entry(a, e, dirfd, rel, &total, lim, err, errlen);
		if (r < 0)
			goto out_free;
	}
	r = strip_top(dest);
	if (r < 0) {
		util_fail(err, errlen, r, "cannot strip the top-level directory: %s", strerror(-r));
		goto out_free;
	}
	*files = n;
	*bytes = total;
out_free:
	archive_read_free(a);
out_close:
	close(dirfd);
	return r;
}
