/* test-upload — unit tests of consoled's archive path checks and extraction:
 * a table of entry paths (got/want), then real tar archives written with
 * libarchive into a temp dir and extracted, checking that hostile entries
 * are refused with a sentence that names them and nothing lands outside the
 * destination. Also the constant-time token comparison. */
#include "consoled.h"
#include "t.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

struct path_case {
	const char *in;
	int want_r;	  /* 0 or < 0 */
	const char *want; /* cleaned path, or a substring of the error */
};

static void test_clean_path(void)
{
	static char deep[64], longc[300], longp[1100];
	const struct path_case cases[] = {
		{"config.json", 0, "config.json"},
		{"./config.json", 0, "config.json"},
		{"a//b/./c/", 0, "a/b/c"},
		{"./", 0, ""},
		{"/etc/passwd", -EPERM, "absolute"},
		{"../x", -EPERM, "'..'"},
		{"a/../../x", -EPERM, "'..'"},
		{"a/..", -EPERM, "'..'"},
		{"a/..b/c", 0, "a/..b/c"},
		{"a/\nb", -EINVAL, "control"},
		{deep, -ENAMETOOLONG, "deeper than 16"},
		{longc, -ENAMETOOLONG, "component is longer than 255"},
		{longp, -ENAMETOOLONG, "longer than 1024"},
	};
	char out[UPLOAD_MAX_PATH + 1], err[512];

	for (int i = 0; i < 17; i++)
		memcpy(deep + 2 * i, "d/", 2);
	deep[34] = 'f';
	memset(longc, 'x', 256);
	memset(longp, 'y', 1030);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct path_case *c = &cases[i];
		int got_r;

		err[0] = 0;
		got_r = upload_clean_path(c->in, out, sizeof(out), err, sizeof(err));
		T_CHECK(got_r == c->want_r, "case %zu '%.40s': got %d, want %d (%s)", i, c->in,
			got_r, c->want_r, err);
		if (got_r == 0 && c->want_r == 0)
			T_CHECK(!strcmp(out, c->want), "case %zu: got '%s', want '%s'", i, out,
				c->want);
		if (got_r < 0 && c->want_r < 0)
			T_CHECK(strstr(err, c->want), "case %zu: error '%s' lacks '%s'", i, err,
				c->want);
	}
}

/* One entry of a test archive. */
struct ent {
	const char *path;
	int type; /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFIFO, or 1 = hard link */
	const char *data_or_target;
};

static int make_tar(const char *path, const struct ent *e, size_t n)
{
	struct archive *a = archive_write_new();
	int r = 0;

	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -EIO;
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		size_t len = e[i].data_or_target ? strlen(e[i].data_or_target) : 0;

		archive_entry_set_pathname(ae, e[i].path);
		archive_entry_set_perm(ae, 0644);
		if (e[i].type == 1) {
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_hardlink(ae, e[i].data_or_target);
		} else {
			archive_entry_set_filetype(ae, e[i].type);
			if (e[i].type == AE_IFLNK)
				archive_entry_set_symlink(ae, e[i].data_or_target);
			if (e[i].type == AE_IFREG)
				archive_entry_set_size(ae, len);
		}
		if (archive_write_header(a, ae) != ARCHIVE_OK)
			r = -EIO;
		if (e[i].type == AE_IFREG && len)
			archive_write_data(a, e[i].data_or_target, len);
		archive_entry_free(ae);
	}
	archive_write_close(a);
	archive_write_free(a);
	return r;
}

struct x_case {
	const char *name;
	struct ent ents[4];
	size_t n;
	uint64_t max_files, max_bytes;
	int want_r;
	const char *want; /* substring of the error, or a path that must exist */
};

static int exists(const char *p)
{
	struct stat st;

	return lstat(p, &st) == 0;
}

static void test_extract(void)
{
	const struct x_case cases[] = {
		{"plain", {{"config.json", AE_IFREG, "{}"}, {"data/a.txt", AE_IFREG, "hi"}}, 2,
		 100, 1000, 0, "data/a.txt"},
		{"strip top dir", {{"mb/", AE_IFDIR, NULL}, {"mb/config.json", AE_IFREG, "{}"},
				   {"mb/data/a.txt", AE_IFREG, "hi"}}, 3, 100, 1000, 0, "config.json"},
		{"dotdot", {{"config.json", AE_IFREG, "{}"}, {"../escape", AE_IFREG, "x"}}, 2,
		 100, 1000, -EPERM, "'../escape'"},
		{"absolute", {{"/tmp/escape", AE_IFREG, "x"}}, 1, 100, 1000, -EPERM,
		 "'/tmp/escape'"},
		{"symlink", {{"data", AE_IFLNK, "/etc"}}, 1, 100, 1000, -EPERM,
		 "'data': symbolic links"},
		{"hardlink", {{"x", AE_IFREG, "a"}, {"h", 1, "../escape"}}, 2, 100, 1000, -EPERM,
		 "'h': hard links"},
		{"fifo", {{"p", AE_IFIFO, NULL}}, 1, 100, 1000, -EPERM, "'p': FIFOs"},
		{"too many files", {{"a", AE_IFREG, "1"}, {"b", AE_IFREG, "2"},
				    {"c", AE_IFREG, "3"}}, 3, 2, 1000, -E2BIG, "more than 2"},
		{"too large", {{"a", AE_IFREG, "0123456789"}}, 1, 100, 5, -EFBIG,
		 "more than 5 bytes"},
		{"duplicate", {{"a", AE_IFREG, "1"}, {"a", AE_IFREG, "2"}}, 2, 100, 1000, -EEXIST,
		 "appears twice"},
		{"file then dir", {{"a", AE_IFREG, "1"}, {"a/b", AE_IFREG, "2"}}, 2, 100, 1000,
		 -ENOTDIR, "'a/b'"},
	};
	char arc[512], dest[512], marker[512], err[1024], p[600];

	snprintf(arc, sizeof(arc), "%s/t.tar", tmp);
	snprintf(marker, sizeof(marker), "%s/escape", tmp);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct x_case *c = &cases[i];
		struct upload_limits lim = {.max_files = c->max_files, .max_bytes = c->max_bytes};
		uint64_t files = 0, bytes = 0;
		int got_r;

		snprintf(dest, sizeof(dest), "%s/d%zu", tmp, i);
		mkdir(dest, 0750);
		T_CHECK(make_tar(arc, c->ents, c->n) == 0, "%s: cannot write the test tar", c->name);
		err[0] = 0;
		got_r = upload_extract(arc, dest, &lim, &files, &bytes, err, sizeof(err));
		T_CHECK(got_r == c->want_r, "%s: got %d, want %d (%s)", c->name, got_r, c->want_r,
			err);
		if (c->want_r < 0)
			T_CHECK(strstr(err, c->want), "%s: error '%s' lacks '%s'", c->name, err,
				c->want);
		snprintf(p, sizeof(p), "%s/%s", dest, c->want);
		if (c->want_r == 0)
			T_CHECK(exists(p), "%s: %s is missing", c->name, p);
		T_CHECK(!exists(marker), "%s: %s was written outside the bundle", c->name, marker);
	}
}

static void test_not_archive(void)
{
	struct upload_limits lim = {.max_files = 10, .max_bytes = 100};
	char arc[512], dest[512], err[512] = "";
	uint64_t f, b;
	int fd, r;

	snprintf(arc, sizeof(arc), "%s/plain.txt", tmp);
	snprintf(dest, sizeof(dest), "%s/dn", tmp);
	mkdir(dest, 0750);
	fd = open(arc, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	T_CHECK(fd >= 0 && write(fd, "just some text, not a tar\n", 26) == 26, "write");
	close(fd);
	r = upload_extract(arc, dest, &lim, &f, &b, err, sizeof(err));
	T_EQ_INT(r, -EPROTONOSUPPORT);
	T_CHECK(strstr(err, "not a tar archive"), "error '%s'", err);
}

static void test_equal(void)
{
	T_CHECK(auth_equal("abcdef", "abcdef", 6), "equal strings differ");
	T_CHECK(!auth_equal("abcdef", "abcdeg", 6), "different strings compare equal");
	T_CHECK(!auth_equal("xbcdef", "abcdef", 6), "first byte ignored");
}

int main(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/test-consoled-upload-XXXXXX");
	if (!mkdtemp(tmp)) {
		printf("FAIL setup: mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	t_run("consoled_clean_path", test_clean_path);
	t_run("consoled_extract", test_extract);
	t_run("consoled_not_archive", test_not_archive);
	t_run("consoled_auth_equal", test_equal);
	util_rm_rf(tmp);
	return t_done();
}
