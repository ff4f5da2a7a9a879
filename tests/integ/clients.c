// SPDX-License-Identifier: MIT
#include "clients.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

struct kd_client *tc_login(struct ts_server *ts, struct kd_keypair *kp, const uint8_t *mesh_key)
{
	struct kd_client_opts o = {0};
	char url[64];
	struct kd_client *c = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/derp", ts->port);
	o.url = url;
	if (kd_key_is_zero(kp->priv))
		kd_keypair_generate(kp);
	o.key = *kp;
	o.mesh_key = mesh_key;
	o.can_ack_pings = true;
	o.timeout_ms = 5000;
	int err = kd_client_connect(&c, &o);
	if (err) {
		pr_err("test login: %s", strerror(-err));
		return NULL;
	}
	return c;
}

int tc_recv_type(struct kd_client *c, uint8_t type, struct kd_client_msg *m, int timeout_ms)
{
	for (;;) {
		int err = kd_client_recv(c, m, timeout_ms);
		if (err)
			return err;
		if (m->type == type)
			return 0;
		/* keepalives, health and the like are not what the test waits for */
	}
}

bool tc_alive(struct kd_client *c)
{
	static const uint8_t ping[8] = {'a', 'l', 'i', 'v', 'e', '?', '?', '!'};
	struct kd_client_msg m;

	if (kd_client_send_ping(c, ping) != 0)
		return false;
	if (tc_recv_type(c, DERP_FRAME_PONG, &m, 3000) != 0)
		return false;
	return m.data_len == 8 && !memcmp(m.data, ping, 8);
}
