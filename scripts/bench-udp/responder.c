/* The floor for pricebeast's UDP path: the least a server can do and still answer every price
 * query with a datagram of the right size. One thread, one socket, one recvmmsg(2) and one
 * sendmmsg(2) per batch; no key lookup, no symbol lookup, no book read, no counters.
 *
 *   responder [-p PORT] [-b BATCH] [-s SOCKET_BUFFER_BYTES]
 *
 * Binds 127.0.0.1:PORT (0: any free port), prints "listening 127.0.0.1:PORT" and answers until
 * killed. BATCH should be pricebeast's udp.batch_max and the buffer size its
 * udp.socket_buffer_bytes, so the two differ only in what happens between the two calls.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH_MAX 1024
/* pricebeast reads at most this much of a datagram (udp::codec::REQUEST_BYTES_READ_MAX). */
#define READ_MAX 2048
/* 29 bytes of head + a symbol of at most 32 bytes. */
#define RESPONSE_MAX 61

static unsigned char requests[BATCH_MAX][READ_MAX];
static unsigned char responses[BATCH_MAX][RESPONSE_MAX];
static struct sockaddr_in peers[BATCH_MAX];
static struct iovec recv_iov[BATCH_MAX], send_iov[BATCH_MAX];
static struct mmsghdr recv_msgs[BATCH_MAX], send_msgs[BATCH_MAX];

/* Writes the answer pricebeast would give to a well-framed query (status ok, a fixed price) and
 * returns its length, or 0 for a datagram pricebeast would not answer because of its framing. */
static size_t respond(const unsigned char *q, size_t len, unsigned char *out)
{
    /* The framing checks pricebeast makes before it looks at the key: cheap, and without them the
     * symbol echo below could read past the datagram. */
    if (len < 64 || q[0] != 'P' || q[1] != 'B' || q[2] != 1 || q[3] != 1)
        return 0;
    size_t key_len = q[8];
    if (key_len < 16 || key_len > 64 || 10 + key_len > len)
        return 0;
    size_t sym_len = q[9 + key_len];
    if (sym_len < 1 || sym_len > 32 || 10 + key_len + sym_len > len)
        return 0;

    /* 97123.45 from 3 venues at a fixed time: the bytes of docs/protocol.md's example. */
    static const unsigned char head[29] = {
        'P', 'B', 1, 0x81, 0, 0, 0, 0, /* request id, copied below */
        0, 0,                          /* status ok, flags */
        0, 0, 0, 0, 0, 0x94, 0x32, 0xd9, 0xfe, 3,
        0, 0, 0x01, 0x93, 0x53, 0xef, 0x1e, 0x7b, 0, /* ts, symbol length */
    };
    memcpy(out, head, sizeof head);
    memcpy(out + 4, q + 4, 4);
    out[28] = (unsigned char)sym_len;
    memcpy(out + 29, q + 10 + key_len, sym_len);
    return 29 + sym_len;
}

int main(int argc, char **argv)
{
    int port = 0, batch = 32, buffer_bytes = 4 << 20, opt;
    while ((opt = getopt(argc, argv, "p:b:s:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 's': buffer_bytes = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-p PORT] [-b BATCH] [-s SOCKET_BUFFER_BYTES]\n", argv[0]);
            return 2;
        }
    }
    if (port < 0 || port > 65535 || batch < 1 || batch > BATCH_MAX || buffer_bytes < 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    /* Same as pricebeast's socket; the kernel caps both at net.core.{r,w}mem_max. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t addr_len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) < 0) {
        perror("bind");
        return 1;
    }
    printf("listening 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    for (int i = 0; i < batch; i++) {
        recv_iov[i] = (struct iovec){ .iov_base = requests[i], .iov_len = READ_MAX };
        recv_msgs[i].msg_hdr.msg_iov = &recv_iov[i];
        recv_msgs[i].msg_hdr.msg_iovlen = 1;
        recv_msgs[i].msg_hdr.msg_name = &peers[i];
        send_msgs[i].msg_hdr.msg_iov = &send_iov[i];
        send_msgs[i].msg_hdr.msg_iovlen = 1;
    }

    for (;;) {
        for (int i = 0; i < batch; i++)
            recv_msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
        /* MSG_WAITFORONE: sleep until one datagram is there, then take whatever else is already
         * queued without waiting for the batch to fill (the same batches pricebeast sees after a
         * readiness wake-up, one system call fewer). */
        int n = recvmmsg(fd, recv_msgs, (unsigned)batch, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED)
                continue;
            perror("recvmmsg");
            return 1;
        }
        int queued = 0;
        for (int i = 0; i < n; i++) {
            size_t len = respond(requests[i], recv_msgs[i].msg_len, responses[queued]);
            if (len == 0)
                continue;
            send_iov[queued] = (struct iovec){ .iov_base = responses[queued], .iov_len = len };
            send_msgs[queued].msg_hdr.msg_name = &peers[i];
            send_msgs[queued].msg_hdr.msg_namelen = recv_msgs[i].msg_hdr.msg_namelen;
            queued++;
        }
        /* Like pricebeast: never wait for room; a reply the kernel cannot take is dropped. */
        for (int sent = 0; sent < queued;) {
            int m = sendmmsg(fd, send_msgs + sent, (unsigned)(queued - sent), MSG_DONTWAIT);
            if (m <= 0)
                break;
            sent += m;
        }
    }
}
