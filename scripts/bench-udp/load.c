/* Open-loop UDP load for pricebeast's partner protocol (docs/protocol.md, UDP): sends 64-byte price
 * queries at a fixed rate whatever the server does, and counts the answers.
 *
 *   load -p PORT -k KEY [-y SYMBOL] [-q RATE] [-d SECONDS] [-c SOCKETS] [-b BATCH] [-t TICK_US]
 *        [-w DRAIN_MS] [-l LATE_US]
 *
 * Query i (request id i) is due at start + i/RATE. Every TICK_US the thread wakes, sends everything
 * due with sendmmsg(2) (at most BATCH per call, the calls rotating over SOCKETS connected sockets,
 * i.e. that many client ports), then reads every answer waiting with recvmmsg(2). After SECONDS it
 * stops sending and waits up to DRAIN_MS for the last answers; a query unanswered by then is lost.
 * The server so sees bursts of RATE x TICK_US / 1e6 queries (15 at 150,000/s), not one at a time.
 *
 * One thread on purpose: the load gets one core, and two threads on one core only add context
 * switches. It wakes on the clock, not on answers, so its cost per query falls as the rate rises
 * and it does not spin on the answers of a fast server. Whether it kept up is printed, never
 * assumed: rate_kept=0 when it sent less than 99% of the queries due (the load, not the server,
 * set the pace), "late" counts queries sent more than LATE_US after they were due (a stall of the
 * thread: the server then gets a bigger burst), cpu_pct is the thread's CPU over the sending phase
 * (cpu_total_ms: the whole process, drain included, for whoever accounts for the machine's CPU).
 *
 * Prints one line of key=value pairs:
 *   sent answered lost bad dup not_ok late max_lag_us load_drops send_errors send_rate cpu_pct
 *   cpu_total_ms rate_kept
 * bad: datagrams that are not a well-formed answer to a query we sent; dup: a second answer to
 * one query; not_ok: answers whose status is not 0 (they are counted in answered); load_drops:
 * answers the kernel dropped because our own sockets were full (part of lost, and not the server's
 * fault; a lower bound, as the kernel reports a socket's count on the next datagram it queues).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 256
#define RECV_BATCH 64
#define SOCKETS_MAX 64
#define QUERY_BYTES 64
#define ANSWER_MAX 128

static unsigned char queries[BATCH_MAX][QUERY_BYTES];
static unsigned char answers[RECV_BATCH][ANSWER_MAX];
static struct iovec send_iov[BATCH_MAX], recv_iov[RECV_BATCH];
static struct mmsghdr send_msgs[BATCH_MAX], recv_msgs[RECV_BATCH];
/* Room for the SO_RXQ_OVFL drop counter the kernel attaches to each datagram. */
static union {
    char buf[CMSG_SPACE(sizeof(uint32_t))];
    struct cmsghdr align;
} controls[RECV_BATCH];

static int socks[SOCKETS_MAX];
static uint32_t socket_drops[SOCKETS_MAX]; /* datagrams the kernel dropped at our own sockets */
static int nsocks = 4;
static size_t sym_len;
static uint8_t *answered_bits; /* one bit per request id */
static uint64_t sent, answered, bad, dups, not_ok;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = { .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void check_answer(const unsigned char *a, size_t len, int truncated)
{
    if (truncated || len != 29 + sym_len || a[0] != 'P' || a[1] != 'B' || a[2] != 1 || a[3] != 0x81 ||
        a[28] != sym_len) {
        bad++;
        return;
    }
    uint32_t id = (uint32_t)a[4] << 24 | (uint32_t)a[5] << 16 | (uint32_t)a[6] << 8 | a[7];
    if (id >= sent) {
        bad++;
        return;
    }
    if (answered_bits[id >> 3] & (1u << (id & 7))) {
        dups++;
        return;
    }
    answered_bits[id >> 3] |= (uint8_t)(1u << (id & 7));
    answered++;
    if (a[8] != 0)
        not_ok++;
}

/* Reads every answer already queued on every socket, without waiting. */
static void receive_all(void)
{
    for (int s = 0; s < nsocks; s++) {
        for (;;) {
            for (int i = 0; i < RECV_BATCH; i++)
                recv_msgs[i].msg_hdr.msg_controllen = sizeof controls[i];
            int n = recvmmsg(socks[s], recv_msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break; /* EAGAIN; or ECONNREFUSED from a server not there: nothing to count */
            for (int i = 0; i < n; i++) {
                struct msghdr *h = &recv_msgs[i].msg_hdr;
                check_answer(answers[i], recv_msgs[i].msg_len, h->msg_flags & MSG_TRUNC);
                /* The socket's drop count so far, attached once it is non-zero: answers lost
                 * here are the load's fault, not the server's. */
                for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                    uint32_t drops;
                    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL)
                        continue;
                    memcpy(&drops, CMSG_DATA(c), sizeof drops);
                    if (drops > socket_drops[s])
                        socket_drops[s] = drops;
                }
            }
            if (n < RECV_BATCH)
                break; /* the queue is empty: spare the call that would say EAGAIN */
        }
    }
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -p PORT -k KEY [-y SYMBOL] [-q RATE] [-d SECONDS] [-c SOCKETS] [-b BATCH]"
            " [-t TICK_US] [-w DRAIN_MS] [-l LATE_US]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    int port = 0, batch = 32, opt;
    const char *key = NULL, *symbol = "BTC-USD";
    double rate = 150000, seconds = 8;
    long tick_us = 100, drain_ms = 300, late_us = 1000;
    while ((opt = getopt(argc, argv, "p:k:y:q:d:c:b:t:w:l:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'k': key = optarg; break;
        case 'y': symbol = optarg; break;
        case 'q': rate = atof(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'c': nsocks = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 't': tick_us = atol(optarg); break;
        case 'w': drain_ms = atol(optarg); break;
        case 'l': late_us = atol(optarg); break;
        default: usage(argv[0]);
        }
    }
    sym_len = strlen(symbol);
    size_t key_len = key ? strlen(key) : 0;
    if (port < 1 || port > 65535 || key_len < 16 || key_len > 64 || sym_len < 1 || sym_len > 32 ||
        10 + key_len + sym_len > QUERY_BYTES || rate < 1 || rate > 1e8 || seconds <= 0 || seconds > 3600 ||
        nsocks < 1 || nsocks > SOCKETS_MAX || batch < 1 || batch > BATCH_MAX || tick_us < 1 ||
        tick_us > 1000000 || drain_ms < 0 || drain_ms > 60000 || late_us < 1)
        usage(argv[0]);
    uint64_t planned = (uint64_t)(rate * seconds);
    if (planned >= UINT32_MAX)
        usage(argv[0]); /* request ids are 32 bits */
    answered_bits = calloc(planned / 8 + 1, 1);
    if (!answered_bits) {
        perror("calloc");
        return 1;
    }
    /* The default 50 us of timer slack would stretch every 100 us tick by half. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    struct sockaddr_in server = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int buffer_bytes = 4 << 20;
    for (int s = 0; s < nsocks; s++) {
        socks[s] = socket(AF_INET, SOCK_DGRAM, 0);
        if (socks[s] < 0) {
            perror("socket");
            return 1;
        }
        /* Answers pile up for a whole tick (longer when this thread is descheduled): a small
         * receive buffer would lose them here and blame the server. */
        setsockopt(socks[s], SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
        setsockopt(socks[s], SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
        int on = 1;
        setsockopt(socks[s], SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on);
        if (connect(socks[s], (struct sockaddr *)&server, sizeof server) < 0) {
            perror("connect");
            return 1;
        }
    }

    /* Every query is the same bytes but its request id (offset 4): the frame is written once. */
    for (int i = 0; i < batch; i++) {
        unsigned char *q = queries[i];
        memset(q, 0, QUERY_BYTES);
        q[0] = 'P', q[1] = 'B', q[2] = 1, q[3] = 1;
        q[8] = (unsigned char)key_len;
        memcpy(q + 9, key, key_len);
        q[9 + key_len] = (unsigned char)sym_len;
        memcpy(q + 10 + key_len, symbol, sym_len);
        send_iov[i] = (struct iovec){ .iov_base = q, .iov_len = QUERY_BYTES };
        send_msgs[i].msg_hdr.msg_iov = &send_iov[i];
        send_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (int i = 0; i < RECV_BATCH; i++) {
        recv_iov[i] = (struct iovec){ .iov_base = answers[i], .iov_len = ANSWER_MAX };
        recv_msgs[i].msg_hdr.msg_iov = &recv_iov[i];
        recv_msgs[i].msg_hdr.msg_iovlen = 1;
        recv_msgs[i].msg_hdr.msg_control = controls[i].buf;
    }

    uint64_t late = 0, send_errors = 0;
    int64_t max_lag = 0;
    int next_sock = 0;
    double cpu_start = cpu_seconds();
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9), wake = start;
    for (;;) {
        int64_t now = now_ns();
        if (now >= end)
            break;
        uint64_t due = (uint64_t)((double)(now - start) * rate / 1e9);
        if (due > planned)
            due = planned;
        while (sent < due) {
            int n = (int)(due - sent < (uint64_t)batch ? due - sent : (uint64_t)batch);
            int64_t lag = now - (start + (int64_t)((double)sent * 1e9 / rate));
            if (lag > max_lag)
                max_lag = lag;
            if (lag > late_us * 1000)
                late += (uint64_t)n;
            for (int i = 0; i < n; i++) {
                uint32_t id = (uint32_t)(sent + (uint64_t)i);
                queries[i][4] = (unsigned char)(id >> 24), queries[i][5] = (unsigned char)(id >> 16);
                queries[i][6] = (unsigned char)(id >> 8), queries[i][7] = (unsigned char)id;
            }
            int m = sendmmsg(socks[next_sock], send_msgs, (unsigned)n, MSG_DONTWAIT);
            next_sock = (next_sock + 1) % nsocks;
            if (m <= 0) {
                /* No room in the socket buffer: these queries go out on a later tick, late. */
                send_errors++;
                break;
            }
            sent += (uint64_t)m;
        }
        receive_all();
        /* A fixed cadence; after a stall, resume from now rather than firing the missed ticks. */
        wake += tick_us * 1000;
        if (wake < now)
            wake = now;
        sleep_until(wake);
    }
    double cpu = cpu_seconds() - cpu_start;
    double send_wall = (double)(now_ns() - start) / 1e9;

    /* Drain: answers already on their way, stopping as soon as every query is answered. */
    int64_t drain_end = now_ns() + drain_ms * 1000000;
    for (;;) {
        receive_all();
        if (answered >= sent || now_ns() >= drain_end)
            break;
        sleep_until(now_ns() + 1000000);
    }

    int rate_kept = sent >= planned * 99 / 100;
    uint64_t load_drops = 0;
    for (int s = 0; s < nsocks; s++)
        load_drops += socket_drops[s];
    printf("sent=%llu answered=%llu lost=%llu bad=%llu dup=%llu not_ok=%llu late=%llu max_lag_us=%lld"
           " load_drops=%llu send_errors=%llu send_rate=%.0f cpu_pct=%.1f cpu_total_ms=%.0f rate_kept=%d\n",
           (unsigned long long)sent, (unsigned long long)answered, (unsigned long long)(sent - answered),
           (unsigned long long)bad, (unsigned long long)dups, (unsigned long long)not_ok,
           (unsigned long long)late, (long long)(max_lag / 1000), (unsigned long long)load_drops,
           (unsigned long long)send_errors,
           (double)sent / send_wall, 100 * cpu / send_wall, 1000 * cpu_seconds(), rate_kept);
    return 0;
}
