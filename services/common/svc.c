/* svc — sd-event loop setup shared by every daemon. */
#include "svc.h"
#include "hclient.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

struct periodic {
	svc_periodic_fn fn;
	void *ud;
	uint64_t period;
};

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *ud)
{
	struct svc *svc = ud;

	log_info("received signal %u, stopping", si->ssi_signo);
	sd_notify(0, "STOPPING=1");
	return sd_event_exit(svc->ev, 0);
}

int svc_setup(struct svc *s, const char *name)
{
	sigset_t ss;
	int r;

	log_init(name);
	s->name = name;
	/* every daemon's peers answer GET /v1/health */
	hclient_gate_enable("/v1/health");
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
		return -errno;
	r = sd_event_default(&s->ev);
	if (r < 0)
		return r;
	r = sd_event_add_signal(s->ev, NULL, SIGTERM, on_stop_signal, s);
	if (r < 0)
		goto out_unref;
	r = sd_event_add_signal(s->ev, NULL, SIGINT, on_stop_signal, s);
	if (r < 0)
		goto out_unref;
	/* Sends WATCHDOG=1 at half of WATCHDOG_USEC when the unit sets one. */
	r = sd_event_set_watchdog(s->ev, 1);
	if (r < 0)
		goto out_unref;
	return 0;
out_unref:
	s->ev = sd_event_unref(s->ev);
	return r;
}

int svc_watch_children(struct svc *s)
{
	sigset_t ss;

	sigemptyset(&ss);
	sigaddset(&ss, SIGCHLD);
	return sigprocmask(SIG_BLOCK, &ss, NULL) < 0 ? -errno : 0;
}

static int on_periodic(sd_event_source *src, uint64_t usec, void *ud)
{
	struct periodic *p = ud;

	p->fn(p->ud);
	sd_event_source_set_time(src, usec + p->period);
	return 0;
}

static void periodic_destroy(void *ud)
{
	free(ud);
}

int svc_periodic(struct svc *s, uint64_t period_us, svc_periodic_fn fn, void *userdata)
{
	struct periodic *p = calloc(1, sizeof(*p));
	sd_event_source *src;
	uint64_t now;
	int r;

	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->ud = userdata;
	p->period = period_us;
	sd_event_now(s->ev, CLOCK_MONOTONIC, &now);
	r = sd_event_add_time(s->ev, &src, CLOCK_MONOTONIC, now + period_us, period_us / 20,
			      on_periodic, p);
	if (r < 0) {
		free(p);
		return r;
	}
	sd_event_source_set_destroy_callback(src, periodic_destroy);
	sd_event_source_set_enabled(src, SD_EVENT_ON);
	sd_event_source_set_floating(src, 1);
	sd_event_source_unref(src);
	return 0;
}

int svc_run(struct svc *s, const char *status)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status ? status : "running");
	sd_notify(0, msg);
	log_info("%s", status ? status : "running");
	return sd_event_loop(s->ev);
}

void svc_teardown(struct svc *s)
{
	s->ev = sd_event_unref(s->ev);
}
