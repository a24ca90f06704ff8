/*
 * rdmix_read: read a running rdmix mixer's state from C, with nothing but include/rdmix.h.
 *
 *   gcc -std=c11 -Wall -Wextra -Werror -pedantic -O2 -Iinclude examples/rdmix_read.c -o rdmix_read
 *   ./rdmix_read [rdmix/u1000/c0d0s0/k0]
 *
 * With no argument it takes the first listening rdmix socket in /proc/net/unix (a leading '@'
 * is accepted and ignored). It connects to the abstract SOCK_SEQPACKET socket, sends a Query,
 * receives the Status and the shared-state memfd (SCM_RIGHTS), maps it read-only, checks its
 * magic, version and struct sizes against the header it was compiled with (a mismatch is
 * refused with a message, exit status 3), and prints the mixer's geometry and every live client
 * slot, one "key value ..." line each:
 *
 *   mixer SOCKET server_pid N live_clients N
 *   layout version N header_size N slot_size N max_clients N total_size N slots_offset N ...
 *   geometry card N device N subdevice N slave_kind N format N rate N channels N ...
 *   device NAME                        (the rest of the line: /dev/snd/pcmC0D0p, virtual:...)
 *   slot I pid N state N frames_mixed N xruns N late N ...
 *
 * Exit status: 0 read, 1 usage or connection error, 2 the server refused or answered wrongly,
 * 3 the shared state's layout is not this header's.
 *
 * The slot fields (and the header's counters) are atomics that the mixer's clients update while
 * we read: every read of them is an __atomic_load_n.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "rdmix.h"

#define LOAD(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)

/* The first listening socket whose name starts with "@rdmix/" in /proc/net/unix. */
static int find_mixer(char *name, size_t size)
{
	FILE *f = fopen("/proc/net/unix", "r");
	char line[512];
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof line, f)) {
		char flags[32], path[256];
		/* Num RefCount Protocol Flags Type St Inode Path */
		if (sscanf(line, "%*s %*s %*s %31s %*s %*s %*s %255s", flags, path) == 2 &&
		    strcmp(flags, "00010000") == 0 && path[0] == '@' &&
		    strncmp(path + 1, RDMIX_SOCKET_PREFIX, strlen(RDMIX_SOCKET_PREFIX)) == 0 &&
		    strlen(path + 1) < size) {
			strcpy(name, path + 1);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

static int connect_mixer(const char *name)
{
	struct sockaddr_un a;
	size_t len = strlen(name);
	struct timeval tv = { 5, 0 };
	int s;

	if (len + 1 > sizeof a.sun_path) {
		fprintf(stderr, "rdmix_read: socket name too long: %s\n", name);
		return -1;
	}
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0) {
		perror("rdmix_read: socket");
		return -1;
	}
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	/* Abstract namespace: sun_path[0] = 0, then the name, no terminator. */
	memcpy(a.sun_path + 1, name, len);
	if (connect(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) < 0) {
		fprintf(stderr, "rdmix_read: connect to @%s: %s\n", name, strerror(errno));
		close(s);
		return -1;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return s;
}

static int send_query(int s)
{
	unsigned char pkt[sizeof(rdmix_msg_header) + sizeof(rdmix_query_body)];
	rdmix_msg_header h;
	rdmix_query_body q;

	/* Little-endian on the wire; the structs have no padding. */
	h.magic = htole32(RDMIX_PROTO_MAGIC);
	h.version = htole16(RDMIX_PROTO_VERSION);
	h.kind = htole16(RDMIX_KIND_QUERY);
	q.pid = htole32((uint32_t)getpid());
	q.reserved = 0;
	memcpy(pkt, &h, sizeof h);
	memcpy(pkt + sizeof h, &q, sizeof q);
	if (send(s, pkt, sizeof pkt, MSG_NOSIGNAL) != (ssize_t)sizeof pkt) {
		perror("rdmix_read: send Query");
		return -1;
	}
	return 0;
}

/*
 * Receive the answer to the Query. Returns the memfd (and the Status body) or -1 after saying
 * why; any other fd that came along is closed.
 */
static int recv_status(int s, rdmix_status_body *st)
{
	unsigned char buf[RDMIX_MAX_PACKET + 1];
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} ctl;
	struct iovec iov = { buf, sizeof buf };
	struct msghdr m;
	struct cmsghdr *c;
	rdmix_msg_header h;
	int fds[8], nfds = 0, i;
	ssize_t n;

	memset(&m, 0, sizeof m);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = ctl.b;
	m.msg_controllen = sizeof ctl.b;
	do
		n = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		perror("rdmix_read: receive the Status");
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (i = 0; i < k && nfds < 8; i++)
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
		}
	}
	if (n < (ssize_t)sizeof h || n > RDMIX_MAX_PACKET || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		fprintf(stderr, "rdmix_read: malformed answer (%zd bytes)\n", n);
		goto fail;
	}
	memcpy(&h, buf, sizeof h);
	if (le32toh(h.magic) != RDMIX_PROTO_MAGIC || le16toh(h.version) != RDMIX_PROTO_VERSION) {
		fprintf(stderr, "rdmix_read: the server speaks protocol magic %#x version %u, this "
			"header %#x version %u\n", le32toh(h.magic), le16toh(h.version),
			(unsigned)RDMIX_PROTO_MAGIC, (unsigned)RDMIX_PROTO_VERSION);
		goto fail;
	}
	if (le16toh(h.kind) == RDMIX_KIND_REFUSE && n >= (ssize_t)(sizeof h + sizeof(rdmix_refuse_body))) {
		rdmix_refuse_body r;
		size_t len;

		memcpy(&r, buf + sizeof h, sizeof r);
		len = le32toh(r.len);
		if (len > (size_t)n - sizeof h - sizeof r)
			len = (size_t)n - sizeof h - sizeof r;
		fprintf(stderr, "rdmix_read: the server refused the Query: %s (%.*s)\n",
			strerror((int)le32toh((uint32_t)r.error)), (int)len, (const char *)buf + sizeof h + sizeof r);
		goto fail;
	}
	if (le16toh(h.kind) != RDMIX_KIND_STATUS || n != (ssize_t)(sizeof h + sizeof *st) || nfds != 1) {
		fprintf(stderr, "rdmix_read: the server answered the Query with kind %u, %zd bytes and "
			"%d fds (expected a Status of %zu bytes with 1 fd)\n", le16toh(h.kind), n, nfds,
			sizeof h + sizeof *st);
		goto fail;
	}
	memcpy(st, buf + sizeof h, sizeof *st);
	st->server_pid = le32toh(st->server_pid);
	st->clients = le32toh(st->clients);
	return fds[0];
fail:
	for (i = 0; i < nfds; i++)
		close(fds[i]);
	return -1;
}

int main(int argc, char **argv)
{
	char name[256];
	const rdmix_shm_header *hd;
	rdmix_status_body st;
	struct stat sb;
	const unsigned char *base;
	uint32_t i;
	int s, fd;

	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: rdmix_read [SOCKET_NAME]   (e.g. %su1000/c0d0s0/k0)\n",
			RDMIX_SOCKET_PREFIX);
		return 1;
	}
	if (argc == 2) {
		const char *a = argv[1][0] == '@' ? argv[1] + 1 : argv[1];
		if (strlen(a) >= sizeof name) {
			fprintf(stderr, "rdmix_read: socket name too long\n");
			return 1;
		}
		strcpy(name, a);
	} else if (!find_mixer(name, sizeof name)) {
		fprintf(stderr, "rdmix_read: no rdmix mixer is running (no @%s socket in /proc/net/unix)\n",
			RDMIX_SOCKET_PREFIX);
		return 1;
	}

	s = connect_mixer(name);
	if (s < 0)
		return 1;
	if (send_query(s) < 0) {
		close(s);
		return 1;
	}
	fd = recv_status(s, &st);
	close(s);
	if (fd < 0)
		return 2;

	if (fstat(fd, &sb) < 0) {
		perror("rdmix_read: fstat the shared state");
		return 2;
	}
	if ((uint64_t)sb.st_size < sizeof(rdmix_shm_header)) {
		fprintf(stderr, "rdmix_read: the shared state is %lld bytes, smaller than its header "
			"(%zu)\n", (long long)sb.st_size, sizeof(rdmix_shm_header));
		return 3;
	}
	base = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		perror("rdmix_read: mmap the shared state");
		return 2;
	}
	close(fd);
	hd = (const rdmix_shm_header *)base;
	if (hd->magic != RDMIX_SHM_MAGIC) {
		fprintf(stderr, "rdmix_read: the shared state has magic %#llx, not rdmix's %#llx\n",
			(unsigned long long)hd->magic, (unsigned long long)RDMIX_SHM_MAGIC);
		return 3;
	}
	if (hd->version != RDMIX_SHM_VERSION || hd->header_size != sizeof(rdmix_shm_header) ||
	    hd->slot_size != sizeof(rdmix_client_slot)) {
		fprintf(stderr, "rdmix_read: the mixer's shared state is layout v%u (header %u B, slot "
			"%u B); this program was built for v%u (%zu B, %zu B): rebuild it against the "
			"rdmix.h of the running rdmix-server\n", hd->version, hd->header_size,
			hd->slot_size, (unsigned)RDMIX_SHM_VERSION, sizeof(rdmix_shm_header),
			sizeof(rdmix_client_slot));
		return 3;
	}
	if (hd->total_size != (uint64_t)sb.st_size || hd->max_clients > RDMIX_MAX_CLIENTS ||
	    hd->slots_offset < sizeof(rdmix_shm_header) ||
	    hd->slots_offset % 8 != 0 ||
	    hd->slots_offset + (uint64_t)hd->max_clients * sizeof(rdmix_client_slot) > hd->total_size ||
	    hd->sum_offset + hd->sum_len > hd->total_size) {
		fprintf(stderr, "rdmix_read: the shared state is inconsistent: %lld bytes, header says "
			"%llu, %u slots at %llu, sum ring %llu bytes at %llu\n", (long long)sb.st_size,
			(unsigned long long)hd->total_size, hd->max_clients,
			(unsigned long long)hd->slots_offset, (unsigned long long)hd->sum_len,
			(unsigned long long)hd->sum_offset);
		return 3;
	}

	printf("mixer %s server_pid %u live_clients %u\n", name, st.server_pid, st.clients);
	printf("layout version %u header_size %u slot_size %u max_clients %u total_size %llu "
	       "slots_offset %llu sum_offset %llu sum_len %llu clients %u attaches %llu\n",
	       hd->version, hd->header_size, hd->slot_size, hd->max_clients,
	       (unsigned long long)hd->total_size, (unsigned long long)hd->slots_offset,
	       (unsigned long long)hd->sum_offset, (unsigned long long)hd->sum_len,
	       LOAD(hd->clients), (unsigned long long)LOAD(hd->attaches));
	printf("geometry card %u device %u subdevice %u slave_kind %u format %d rate %u channels %u "
	       "sample_bits %u period_size %llu buffer_size %llu boundary %llu interleaved %u "
	       "server_pid %u\n",
	       hd->card, hd->device, hd->subdevice, hd->slave_kind, hd->format, hd->rate,
	       hd->channels, hd->sample_bits, (unsigned long long)hd->period_size,
	       (unsigned long long)hd->buffer_size, (unsigned long long)hd->boundary,
	       hd->interleaved, LOAD(hd->server_pid));
	printf("device %.*s\n", (int)strnlen((const char *)hd->device_name, sizeof hd->device_name),
	       (const char *)hd->device_name);
	for (i = 0; i < hd->max_clients; i++) {
		const rdmix_client_slot *c = (const rdmix_client_slot *)(base + hd->slots_offset +
			(uint64_t)i * sizeof(rdmix_client_slot));
		uint32_t pid = LOAD(c->pid);

		if (pid == 0)
			continue;
		printf("slot %u pid %u state %u frames_mixed %llu mixed_to %llu start_pos %llu "
		       "xruns %u late %u wakeups %llu early_wakeups %llu volume %u muted %u peak %u "
		       "clips %u format %d channels %u rate %u period_size %llu buffer_size %llu "
		       "played %llu delay %llu\n",
		       i, pid, LOAD(c->state), (unsigned long long)LOAD(c->frames_mixed),
		       (unsigned long long)LOAD(c->mixed_to), (unsigned long long)LOAD(c->start_pos),
		       LOAD(c->xruns), LOAD(c->late), (unsigned long long)LOAD(c->wakeups),
		       (unsigned long long)LOAD(c->early_wakeups), LOAD(c->volume), LOAD(c->muted),
		       LOAD(c->peak), LOAD(c->clips), LOAD(c->format), LOAD(c->channels),
		       LOAD(c->rate), (unsigned long long)LOAD(c->period_size),
		       (unsigned long long)LOAD(c->buffer_size), (unsigned long long)LOAD(c->played),
		       (unsigned long long)LOAD(c->delay));
	}
	munmap((void *)base, (size_t)sb.st_size);
	return 0;
}
