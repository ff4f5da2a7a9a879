/* SPDX-License-Identifier: MIT */
/* Logins through the project's own client library (user/client.h). */
#ifndef KD_TEST_CLIENTS_H
#define KD_TEST_CLIENTS_H

#include "client.h"
#include "harness.h"

/* Logs in with kp (generated when zero) over plain HTTP; NULL on failure. */
struct kd_client *tc_login(struct ts_server *ts, struct kd_keypair *kp, const uint8_t *mesh_key);
/* Receives until a frame of the type arrives; 0 or -ETIMEDOUT/-EPIPE. */
int tc_recv_type(struct kd_client *c, uint8_t type, struct kd_client_msg *m, int timeout_ms);
/* Ping round trip: the connection is open and served. */
bool tc_alive(struct kd_client *c);

#endif
