// SPDX-License-Identifier: MIT
/* The webhook client's parsers: the HTTP response reader (and the verdict
 * drawn from what it read) and the URL parser. First byte even: the rest is
 * a response, fed whole and again in pieces whose size the first byte picks;
 * both must agree. First byte odd: the rest is a URL; one that parses must
 * parse to the same thing again from its Host header form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kd_http_resp whole, split;

static void check_response(const char *in, size_t len, unsigned step)
{
	static const uint8_t key[32] = { 1, 2, 3 };
	struct kd_admission_result res;
	ssize_t a, b = 0;
	size_t used = 0;

	kd_http_resp_init(&whole);
	kd_http_resp_init(&split);
	a = kd_http_resp_feed(&whole, in, len);
	while (used < len && split.state != KD_HTTP_RESP_DONE && split.state != KD_HTTP_RESP_ERROR) {
		size_t n = len - used < step ? len - used : step;
		b = kd_http_resp_feed(&split, in + used, n);
		if (b < 0)
			break;
		used += (size_t)b;
	}
	if (whole.state != split.state)
		abort();
	if (whole.state == KD_HTTP_RESP_ERROR) {
		if (a >= 0 || b >= 0)
			abort();
		return;
	}
	if (a < 0 || (size_t)a != used || whole.status != split.status ||
	    whole.head_done != split.head_done || whole.body_len != split.body_len ||
	    whole.body_truncated != split.body_truncated ||
	    memcmp(whole.body, split.body, whole.body_len) || strcmp(whole.reason, split.reason))
		abort();
	if (whole.body_len > KD_HTTP_RESP_BODY_MAX)
		abort();
	if (whole.state == KD_HTTP_RESP_DONE && whole.mode == KD_HTTP_BODY_LENGTH &&
	    !whole.body_truncated && whole.body_len != whole.content_length)
		abort();
	if (kd_http_resp_eof(&whole) == 0 && whole.state != KD_HTTP_RESP_DONE)
		abort();

	for (int fo = 0; fo < 2; fo++) {
		enum kd_http_err err = whole.state == KD_HTTP_RESP_DONE ? KD_HTTP_OK : KD_HTTP_ERR_TIMEOUT;

		kd_admission_judge(&whole, err, NULL, key, "192.0.2.1", fo, &res);
		if (!memchr(res.reason, '\0', sizeof(res.reason)))
			abort();
		if (res.allow && res.outcome != KD_ADM_ALLOWED &&
		    !(res.outcome == KD_ADM_TRANSPORT && fo))
			abort();
		if (whole.head_done && whole.status != 200 && res.allow)
			abort();
	}
}

static void check_url(const char *in, size_t len)
{
	struct kd_url u, again;
	char buf[4200], host[KD_URL_HOST_MAX + 16];

	if (len >= 4096 || memchr(in, '\0', len))
		return;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (kd_url_parse(buf, &u))
		return;
	if (kd_url_host_header(&u, host, sizeof(host)) < 0)
		abort();
	snprintf(buf, sizeof(buf), "%s://%s%s", u.https ? "https" : "http", host, u.path);
	if (kd_url_parse(buf, &again) || again.https != u.https || again.port != u.port ||
	    strcmp(again.host, u.host) || strcmp(again.path, u.path))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		check_url((const char *)data + 1, size - 1);
	else
		check_response((const char *)data + 1, size - 1, (data[0] >> 1) + 1);
	return 0;
}
