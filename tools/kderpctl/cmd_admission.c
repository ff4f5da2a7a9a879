// SPDX-License-Identifier: MIT
/* `kderpctl admission URL NODEKEY [IP]`: asks an admission webhook about one
 * node key, with kderpd's own client, so an operator can try a webhook before
 * pointing -verify-client-url at it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "cmd_admission.h"
#include "json.h"
#include "key.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: kderpctl admission [--json] [--timeout MS] [--ca FILE] [--insecure] URL NODEKEY [SOURCE_IP]\n"
		"  POSTs {\"NodePublic\":NODEKEY,\"Source\":SOURCE_IP} to URL as kderpd does (spec 7.10b)\n"
		"  exit: 0 allowed, 1 denied, 2 usage, 3 webhook unreachable or timed out\n");
}

int do_admission(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "ca", required_argument, NULL, 'c' },
		{ "insecure", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kd_admission_opts o = { .threads = 1 };
	struct kd_admission_result res;
	struct kd_admission *a;
	uint8_t key[32];
	bool json = false;
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "jt:c:kh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 't':
			o.timeout_ms = (int)strtol(optarg, &end, 10);
			if (*end || o.timeout_ms <= 0) {
				fprintf(stderr, "kderpctl admission: bad --timeout %s\n", optarg);
				return KD_ADM_EXIT_USAGE;
			}
			break;
		case 'c':
			o.ca_file = optarg;
			break;
		case 'k':
			o.insecure = true;
			break;
		default:
			usage();
			return KD_ADM_EXIT_USAGE;
		}
	}
	if (argc - optind < 2 || argc - optind > 3) {
		usage();
		return KD_ADM_EXIT_USAGE;
	}
	o.url = argv[optind];
	if (kd_key_parse_public(key, argv[optind + 1])) {
		fprintf(stderr, "kderpctl admission: bad node key %s (want nodekey:<64 hex>)\n",
			argv[optind + 1]);
		return KD_ADM_EXIT_USAGE;
	}
	if (kd_admission_new(&a, &o))
		return KD_ADM_EXIT_USAGE; /* logged */
	c = kd_admission_check(a, key, argc - optind == 3 ? argv[optind + 2] : "", &res);
	kd_admission_free(a);
	if (c) {
		fprintf(stderr, "kderpctl admission: bad source address\n");
		return KD_ADM_EXIT_USAGE;
	}
	if (json) {
		char reason[3 * KD_ADMISSION_REASON_MAX];

		if (kd_json_escape(reason, sizeof(reason), res.reason, strlen(res.reason)) < 0)
			snprintf(reason, sizeof(reason), "\"\"");
		printf("{\"allow\":%s,\"outcome\":\"%s\",\"reason\":%s}\n", res.allow ? "true" : "false",
		       kd_admission_outcome_name(res.outcome), reason);
	} else {
		printf("%s: %s\n", res.allow ? "allowed" : "denied", res.reason);
	}
	if (res.outcome == KD_ADM_TRANSPORT)
		return KD_ADM_EXIT_UNREACHABLE;
	return res.allow ? KD_ADM_EXIT_ALLOWED : KD_ADM_EXIT_DENIED;
}
