/* svc — daemon scaffolding: the sd-event loop, SIGTERM/SIGINT for a clean
 * stop, the systemd watchdog, sd_notify(READY=1), periodic timers. Works the
 * same without systemd as PID 1 (sd_notify is then a no-op). */
#pragma once
#include <stdint.h>
#include <systemd/sd-event.h>

struct svc {
	sd_event *ev;
	const char *name;
};

typedef void (*svc_periodic_fn)(void *userdata);

int svc_setup(struct svc *s, const char *name);
/* Also blocks SIGCHLD so children can be watched with sd_event_add_child. */
int svc_watch_children(struct svc *s);
/* Calls fn every period_us (first call after one period). */
int svc_periodic(struct svc *s, uint64_t period_us, svc_periodic_fn fn, void *userdata);
/* Announces READY=1 with a status line, runs the loop until a stop signal. */
int svc_run(struct svc *s, const char *status);
void svc_teardown(struct svc *s);
