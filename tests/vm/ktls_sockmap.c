/* kTLS and sockmap on one socket: can a socket that is in a SOCKMAP/SOCKHASH
 * also carry kernel TLS, in either order? Every cell of
 *   {sockhash, sockmap} x {map first, ULP first, map then removed} x
 *   {no program, sk_msg, stream parser + verdict, verdict only} x {client, server end}
 * prints one VMTEST line with the errno of each step. A cell is an
 * observation, so it passes when the probe could run it ("removed": the
 * socket is inserted and deleted again before kTLS, i.e. can a socket leave
 * the sockmap plane and become a kTLS one); it fails only when
 * its own setup (pair, map, programs) fails. When every step succeeds, data
 * is pushed through the socket and its kTLS peer to show it really works,
 * and the summary line says "possible=yes" - the day a kernel allows this,
 * the matrix says so.
 *
 * Programs are a few raw instructions, not CO-RE objects, so one binary
 * loads on every kernel of the matrix. */
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vm_probe.h"

enum progs { P_NONE, P_SKMSG, P_PARSER_VERDICT, P_VERDICT, P__MAX };
static const char *const prog_names[P__MAX] = { "none", "skmsg", "parser_verdict", "verdict" };

#define INSN_MOV0(v) ((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = (v) })
#define INSN_LDX_W(d, s, o) \
	((struct bpf_insn){ .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = (d), .src_reg = (s), .off = (o) })
#define INSN_EXIT ((struct bpf_insn){ .code = BPF_JMP | BPF_EXIT })

static int load_prog(enum bpf_prog_type type, bool parser)
{
	/* verdicts pass everything to the owner; the parser takes the whole skb */
	const struct bpf_insn pass[] = { INSN_MOV0(SK_PASS), INSN_EXIT };
	const struct bpf_insn len[] = { INSN_LDX_W(0, 1, offsetof(struct __sk_buff, len)), INSN_EXIT };
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	int fd;

	fd = bpf_prog_load(type, NULL, "GPL", parser ? len : pass, 2, &opts);
	return fd < 0 ? -errno : fd;
}

struct attach {
	int fd;
	enum bpf_attach_type type;
};

/* Loads and attaches the programs of set p to map; returns how many. */
static int attach_progs(int map, enum progs p, struct attach at[2], const char **step)
{
	int n = 0, fd;

	switch (p) {
	case P_NONE:
		return 0;
	case P_SKMSG:
		*step = "load sk_msg";
		if ((fd = load_prog(BPF_PROG_TYPE_SK_MSG, false)) < 0)
			return fd;
		at[n++] = (struct attach){ fd, BPF_SK_MSG_VERDICT };
		break;
	case P_PARSER_VERDICT:
		*step = "load parser";
		if ((fd = load_prog(BPF_PROG_TYPE_SK_SKB, true)) < 0)
			return fd;
		at[n++] = (struct attach){ fd, BPF_SK_SKB_STREAM_PARSER };
		*step = "load verdict";
		if ((fd = load_prog(BPF_PROG_TYPE_SK_SKB, false)) < 0)
			goto undo;
		at[n++] = (struct attach){ fd, BPF_SK_SKB_STREAM_VERDICT };
		break;
	case P_VERDICT:
		*step = "load verdict";
		if ((fd = load_prog(BPF_PROG_TYPE_SK_SKB, false)) < 0)
			return fd;
		at[n++] = (struct attach){ fd, BPF_SK_SKB_VERDICT };
		break;
	default:
		return -EINVAL;
	}
	*step = "attach";
	for (int i = 0; i < n; i++)
		if (bpf_prog_attach(at[i].fd, map, at[i].type, 0)) {
			fd = -errno;
			goto undo;
		}
	return n;
undo:
	while (n--)
		close(at[n].fd);
	return fd;
}

struct cell {
	bool hash, server_end;
	enum order { MAP_FIRST, ULP_FIRST, MAP_REMOVED, ORDER__MAX } order;
	enum progs progs;
};

static const char *const order_names[ORDER__MAX] = { "map_first", "ulp_first", "map_removed" };
/* possible: one socket in a map and under kTLS at once; after_removal: a
 * socket taken out of its map can still become a kTLS socket */
static bool possible, after_removal;

/* "works" or "fails: <first failing step> <errno>", in the order tried */
static const char *outcome(bool ulp_first, int ins, int del, int ulp, int tx, int rx, int data)
{
	static char buf[64];
	const char *step = NULL;
	int err = 0;

	if (!ulp_first && ins)
		step = "insert", err = ins;
	else if (del > 0)
		step = "delete", err = del;
	else if (ulp)
		step = "TCP_ULP", err = ulp;
	else if (tx)
		step = "TLS_TX", err = tx;
	else if (rx)
		step = "TLS_RX", err = rx;
	else if (ins)
		step = "insert", err = ins;
	else if (data)
		step = "data", err = data;
	if (!step)
		return "works";
	snprintf(buf, sizeof(buf), "fails: %s %s", step, vm_errname(err));
	return buf;
}

static void run_cell(const struct cell *c)
{
	char name[96];
	struct attach at[2];
	int cli = -1, srv = -1, map = -1, nprog = 0, err, target, peer;
	int ins = -1, del = -1, ulp = -1, tx = -1, rx = -1, pulp, ptx, prx, data = -1;
	const char *step = "pair";
	__u32 key = 0;

	snprintf(name, sizeof(name), "sockmap_ktls.%s.%s.%s.%s", c->hash ? "sockhash" : "sockmap",
		 order_names[c->order], prog_names[c->progs],
		 c->server_end ? "server" : "client");
	if (!vm_selected(name))
		return;
	err = vm_tcp_pair(&cli, &srv);
	if (err)
		goto setup_failed;
	step = "map create";
	map = bpf_map_create(c->hash ? BPF_MAP_TYPE_SOCKHASH : BPF_MAP_TYPE_SOCKMAP, NULL,
			     sizeof(__u32), sizeof(__u32), 2, NULL);
	if (map < 0) {
		err = -errno;
		goto setup_failed;
	}
	nprog = attach_progs(map, c->progs, at, &step);
	if (nprog < 0) {
		err = nprog;
		nprog = 0;
		goto setup_failed;
	}
	target = c->server_end ? srv : cli;
	peer = c->server_end ? cli : srv;
	if (c->order == ULP_FIRST) {
		vm_ktls_fixed(target, false, &ulp, &tx, &rx);
		ins = bpf_map_update_elem(map, &key, &target, BPF_ANY) ? errno : 0;
	} else {
		ins = bpf_map_update_elem(map, &key, &target, BPF_ANY) ? errno : 0;
		if (ins == 0 && c->order == MAP_REMOVED)
			del = bpf_map_delete_elem(map, &key) ? errno : 0;
		if (ins == 0 && del <= 0)
			vm_ktls_fixed(target, false, &ulp, &tx, &rx);
	}
	if (ins == 0 && ulp == 0 && tx == 0 && rx == 0) {
		/* everything took: prove it by talking to a plain kTLS peer */
		vm_ktls_fixed(peer, true, &pulp, &ptx, &prx);
		data = (pulp || ptx || prx) ? EPROTO : vm_ping(target, peer);
		if (c->order == MAP_REMOVED)
			after_removal |= data == 0;
		else
			possible |= data == 0;
	}
	vm_report(name, VM_PASS, "%s; insert=%s%s%s ulp=%s tls_tx=%s tls_rx=%s data=%s",
		  outcome(c->order == ULP_FIRST, ins, del, ulp, tx, rx, data), vm_errname(ins),
		  c->order == MAP_REMOVED ? " delete=" : "", c->order == MAP_REMOVED ? vm_errname(del) : "",
		  vm_errname(ulp), vm_errname(tx), vm_errname(rx), vm_errname(data));
	goto out;
setup_failed:
	if (err == -EPERM)
		vm_report(name, VM_SKIP, "setup: %s: EPERM (needs CAP_BPF and CAP_NET_ADMIN)", step);
	else
		vm_report(name, VM_FAIL, "setup: %s: %s", step, vm_errname(-err));
out:
	while (nprog--)
		close(at[nprog].fd);
	if (map >= 0)
		close(map);
	if (cli >= 0)
		close(cli);
	if (srv >= 0)
		close(srv);
}

int vm_sockmap_ktls_run(void)
{
	int err;
	bool any = false;

	if (!vm_group_selected("sockmap_ktls."))
		return 0;
	if (!vm_kernel_has_ktls(&err)) {
		vm_report("sockmap_ktls", VM_SKIP, "kernel has no kTLS (TCP_ULP tls: %s)", vm_errname(err));
		return 0;
	}
	possible = after_removal = false;
	for (int h = 0; h < 2; h++)
		for (int o = 0; o < ORDER__MAX; o++)
			for (int p = 0; p < P__MAX; p++)
				for (int e = 0; e < 2; e++) {
					struct cell c = { .hash = !h, .order = o, .server_end = e, .progs = p };

					run_cell(&c);
					any = true;
				}
	if (any)
		vm_report("sockmap_ktls.summary", VM_PASS, "possible=%s ktls_after_removal=%s",
			  possible ? "yes" : "no", after_removal ? "yes" : "no");
	return 0;
}
