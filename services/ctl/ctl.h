/* ctl — internals of bursarctl, the users' and operators' command line.
 * Talks only to consoled's public API (the same one the web page uses). */
#pragma once
#include <jansson.h>

struct ctl {
	const char *url;   /* consoled base, e.g. http://127.0.0.1:8080 */
	const char *token; /* bearer token */
	int timeout_ms;
};

/* Calls consoled; on transport errors or a non-2xx reply prints a sentence
 * to stderr and returns a negative errno. *resp is the JSON reply. */
int ctl_call(struct ctl *c, const char *method, const char *path, json_t *body, json_t **resp);

/* Adds --set KEY=VALUE to an overrides object (VALUE as JSON when it parses). */
int ctl_set_override(json_t *ov, const char *kv);

/* Packs a bundle directory into a gzip'd tar at dest. */
int ctl_pack_dir(const char *dir, const char *dest);

int cmd_submit(struct ctl *c, int argc, char **argv);
int cmd_jobs(struct ctl *c, int argc, char **argv);
int cmd_bundles(struct ctl *c, int argc, char **argv);
int cmd_watch(struct ctl *c, int argc, char **argv);
int cmd_cancel(struct ctl *c, int argc, char **argv);
int cmd_bill(struct ctl *c, int argc, char **argv);
int cmd_ledger(struct ctl *c, int argc, char **argv);
int cmd_estimate(struct ctl *c, int argc, char **argv);
int cmd_balance(struct ctl *c, int argc, char **argv);
int cmd_credit(struct ctl *c, int argc, char **argv);
int cmd_rates(struct ctl *c, int argc, char **argv);
int cmd_nodes(struct ctl *c, int argc, char **argv);

/* Formatting helpers shared by the commands. */
void ctl_fmt_duration(double s, char *buf, size_t len);
void ctl_fmt_money(double usd, char *buf, size_t len);
