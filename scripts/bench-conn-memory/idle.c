/* Idle HTTP keep-alive connections to pricebeast on 127.0.0.1, for scripts/bench-conn-memory.sh:
 * opens N connections, has each one make REQUESTS keep-alive requests in turn, checks every
 * answer, then holds them all open and idle until told to close.
 *
 *   idle -p PORT -k KEY [-n CONNECTIONS] [-r REQUESTS] [-u PATH] [-c IN_FLIGHT] [-d DEADLINE_S]
 *        [-t LIFETIME_S] [-q]
 *
 * One thread, non-blocking sockets and epoll. At most IN_FLIGHT connections (default 500) are
 * connecting or waiting for an answer at a time; a new one starts as soon as one has its last
 * answer, so the server's listen backlog never overflows. Each connection sends
 * "GET PATH HTTP/1.1" with Host and X-API-Key headers (PATH defaults to
 * /v1/price?symbol=BTC-USD) and reads the whole answer, framed by its Content-Length; an answer
 * whose status line is not "HTTP/1.1 200 " is a failure. Nothing is retried: every connection
 * that failed to connect, got another status, or was closed before its answer is counted.
 * The target is always 127.0.0.1: there is no host option.
 *
 * When every connection has its answers (or failed), prints one line:
 *   established ok=N failed=F connect_errors=.. bad_status=.. closed_early=.. ms=..
 * and exits 1 if any failed. With -q it then closes everything and exits 0. Without -q it holds
 * the connections, watching each one (an idle keep-alive connection gets nothing; anything read,
 * or the server's close, counts as dropped), until its standard input (a pipe or FIFO) reaches
 * end of file or gets a line; then it closes every connection normally (close(2): a FIN, as no
 * unread data is left), prints
 *   closed closed=N dropped=D held_ms=..
 * and exits 1 if any was dropped, 0 otherwise.
 *
 * Bounded in time: everything must be established within DEADLINE_S (default 120) and the whole
 * run ends within LIFETIME_S (default 900) whatever standard input does; past either it reports
 * what it reached (deadline=1) and exits 1. It raises its own RLIMIT_NOFILE soft limit to the hard
 * limit, and refuses to start when N connections would not fit under it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTIONS_MAX 100000
#define IN_FLIGHT_MAX 4096
#define ANSWER_MAX 4096
#define REQUEST_MAX 1024
#define STDIN_TOKEN UINT64_MAX
#define EVENTS 256

enum state { IDLE_NONE, CONNECTING, SENDING, READING, HELD, GONE };

struct conn {
    int fd;
    int slot;           /* index into slots while in flight, -1 otherwise */
    unsigned char state;
    unsigned responses; /* answers received so far */
};

/* The buffers of a connection in flight: at most IN_FLIGHT of them exist, whatever N is. */
struct slot {
    size_t sent, len;
    char buf[ANSWER_MAX];
};

static struct conn *conns;
static struct slot *slots;
static int *free_slots, nfree;
static int epfd;
static char request[REQUEST_MAX];
static size_t request_len;
static unsigned requests_per_conn = 1;
static struct sockaddr_in server;
static long ok, connect_errors, bad_status, closed_early, dropped, in_flight, held;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -p PORT -k KEY [-n CONNECTIONS] [-r REQUESTS] [-u PATH] [-c IN_FLIGHT]"
            " [-d DEADLINE_S] [-t LIFETIME_S] [-q]\n",
            argv0);
    exit(2);
}

/* Ends a connection's life: its descriptor closed, its slot back in the pool. */
static void finish(struct conn *c, unsigned char state)
{
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    if (c->slot >= 0) {
        free_slots[nfree++] = c->slot;
        c->slot = -1;
        in_flight--;
    }
    c->state = state;
}

static void fail(struct conn *c, long *counter)
{
    (*counter)++;
    finish(c, GONE);
}

/* Starts connection i: a non-blocking connect(2) to 127.0.0.1, waited for with EPOLLOUT. */
static void start(long i)
{
    struct conn *c = &conns[i];
    c->slot = free_slots[--nfree];
    in_flight++;
    slots[c->slot].sent = slots[c->slot].len = 0;
    c->responses = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        fail(c, &connect_errors);
        return;
    }
    int on = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    c->state = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        if (connect_errors == 0)
            perror("connect");
        fail(c, &connect_errors);
        return;
    }
    struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = (uint64_t)i };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        perror("epoll_ctl");
        fail(c, &connect_errors);
    }
}

/* Sends what is left of the request; once it is all out, waits for the answer. */
static void send_request(long i)
{
    struct conn *c = &conns[i];
    struct slot *s = &slots[c->slot];
    while (s->sent < request_len) {
        ssize_t n = send(c->fd, request + s->sent, request_len - s->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            return; /* EPOLLOUT is still asked for */
        if (n <= 0) {
            fail(c, &closed_early);
            return;
        }
        s->sent += (size_t)n;
    }
    c->state = READING;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* The length of a complete answer at the start of buf (head + Content-Length bytes), 0 when more
 * is needed, -1 when it can never be complete (no Content-Length, a head too large). */
static long answer_length(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= ANSWER_MAX ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    long body = -1;
    for (const char *line = memchr(buf, '\n', head); line && line + 1 < end;
         line = memchr(line + 1, '\n', (size_t)(end - line))) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0) {
            body = strtol(line + 16, NULL, 10);
            break;
        }
    }
    if (body < 0 || head + (size_t)body > ANSWER_MAX)
        return -1;
    return head + (size_t)body <= len ? (long)(head + (size_t)body) : 0;
}

static void read_answer(long i)
{
    struct conn *c = &conns[i];
    struct slot *s = &slots[c->slot];
    for (;;) {
        ssize_t n = recv(c->fd, s->buf + s->len, ANSWER_MAX - s->len, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            fail(c, &closed_early);
            return;
        }
        s->len += (size_t)n;
        long whole = answer_length(s->buf, s->len);
        if (whole == 0)
            continue;
        if (whole < 0 || strncmp(s->buf, "HTTP/1.1 200 ", 13) != 0) {
            if (bad_status < 3)
                fprintf(stderr, "bad answer on connection %ld: %.*s\n", i,
                        (int)strcspn(s->buf, "\r\n"), s->buf);
            fail(c, &bad_status);
            return;
        }
        if ((size_t)whole != s->len) {
            /* Bytes beyond the answer we asked for: not a clean keep-alive exchange. */
            fail(c, &bad_status);
            return;
        }
        c->responses++;
        if (c->responses < requests_per_conn) {
            s->sent = s->len = 0;
            c->state = SENDING;
            struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = (uint64_t)i };
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            send_request(i);
            return;
        }
        /* Done: held open and idle, watched for the server's close. */
        free_slots[nfree++] = c->slot;
        c->slot = -1;
        in_flight--;
        c->state = HELD;
        ok++;
        held++;
        return;
    }
}

/* A held connection became readable: an idle keep-alive connection should get nothing. */
static void watch_held(long i)
{
    dropped++;
    held--;
    finish(&conns[i], GONE);
}

static void handle(uint64_t token, uint32_t events)
{
    long i = (long)token;
    struct conn *c = &conns[i];
    switch (c->state) {
    case CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0 || (events & EPOLLERR)) {
            if (connect_errors == 0)
                fprintf(stderr, "connect: %s\n", strerror(err ? err : errno));
            fail(c, &connect_errors);
            return;
        }
        c->state = SENDING;
        send_request(i);
        return;
    }
    case SENDING:
        send_request(i);
        return;
    case READING:
        read_answer(i);
        return;
    case HELD:
        watch_held(i);
        return;
    default:
        return;
    }
}

/* Waits for events for at most timeout_ms; returns 1 when standard input became readable. */
static int poll_once(int timeout_ms)
{
    struct epoll_event evs[EVENTS];
    int n = epoll_wait(epfd, evs, EVENTS, timeout_ms);
    int input = 0;
    for (int k = 0; k < n; k++) {
        if (evs[k].data.u64 == STDIN_TOKEN)
            input = 1;
        else
            handle(evs[k].data.u64, evs[k].events);
    }
    return input;
}

static void close_all(long n)
{
    for (long i = 0; i < n; i++)
        if (conns[i].fd >= 0)
            finish(&conns[i], GONE);
}

int main(int argc, char **argv)
{
    int port = 0, opt, quit = 0;
    long n = 10000, batch = 500, deadline_s = 120, lifetime_s = 900;
    const char *key = NULL, *path = "/v1/price?symbol=BTC-USD";
    while ((opt = getopt(argc, argv, "p:k:n:r:u:c:d:t:q")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'k': key = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'r': requests_per_conn = (unsigned)atol(optarg); break;
        case 'u': path = optarg; break;
        case 'c': batch = atol(optarg); break;
        case 'd': deadline_s = atol(optarg); break;
        case 't': lifetime_s = atol(optarg); break;
        case 'q': quit = 1; break;
        default: usage(argv[0]);
        }
    }
    if (port < 1 || port > 65535 || !key || strlen(key) > 128 || strpbrk(key, "\r\n") || path[0] != '/' ||
        strlen(path) > 512 || strpbrk(path, "\r\n ") || n < 1 || n > CONNECTIONS_MAX ||
        requests_per_conn < 1 || requests_per_conn > 100000 || batch < 1 || batch > IN_FLIGHT_MAX ||
        deadline_s < 1 || deadline_s > 3600 || lifetime_s < deadline_s || lifetime_s > 7200)
        usage(argv[0]);
    if (batch > n)
        batch = n;

    /* Room for N descriptors, standard streams and epoll: the soft limit up to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)n + 16 > rl.rlim_cur) {
        fprintf(stderr, "%ld connections do not fit under the open-file limit (%llu)\n", n,
                (unsigned long long)rl.rlim_cur);
        return 1;
    }

    int len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-API-Key: %s\r\n\r\n",
                       path, port, key);
    if (len < 0 || (size_t)len >= sizeof request)
        usage(argv[0]);
    request_len = (size_t)len;
    server = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    conns = calloc((size_t)n, sizeof *conns);
    slots = calloc((size_t)batch, sizeof *slots);
    free_slots = calloc((size_t)batch, sizeof *free_slots);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !slots || !free_slots || epfd < 0) {
        perror("setup");
        return 1;
    }
    for (long i = 0; i < n; i++)
        conns[i] = (struct conn){ .fd = -1, .slot = -1, .state = IDLE_NONE };
    for (int s = 0; s < batch; s++)
        free_slots[nfree++] = (int)batch - 1 - s;
    if (!quit) {
        /* The holder's signal to close: standard input must be something epoll can watch. */
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = STDIN_TOKEN };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0) {
            perror("standard input must be a pipe or FIFO (epoll_ctl)");
            return 1;
        }
    }

    /* --- establish ------------------------------------------------------------------------- */
    int64_t t0 = now_ms(), deadline = t0 + deadline_s * 1000, end_of_life = t0 + lifetime_s * 1000;
    long started = 0, stdin_closed = 0;
    while ((started < n || in_flight > 0) && now_ms() < deadline) {
        while (started < n && in_flight < batch)
            start(started++);
        int64_t left = deadline - now_ms();
        if (poll_once(left < 100 ? (int)(left > 0 ? left : 0) : 100)) {
            stdin_closed = 1; /* whoever holds us is gone or impatient: stop */
            break;
        }
    }
    long failed = connect_errors + bad_status + closed_early;
    int timed_out = started < n || in_flight > 0;
    printf("established ok=%ld failed=%ld connect_errors=%ld bad_status=%ld closed_early=%ld pending=%ld"
           " dropped=%ld ms=%lld%s%s\n",
           ok, failed, connect_errors, bad_status, closed_early, (n - started) + in_flight, dropped,
           (long long)(now_ms() - t0), timed_out && !stdin_closed ? " deadline=1" : "",
           stdin_closed ? " interrupted=1" : "");
    fflush(stdout);
    if (timed_out || failed > 0 || dropped > 0) {
        close_all(n);
        return 1;
    }
    if (quit) {
        close_all(n);
        return 0;
    }

    /* --- hold ------------------------------------------------------------------------------ */
    int64_t held_from = now_ms();
    int told = 0;
    while (now_ms() < end_of_life) {
        int64_t left = end_of_life - now_ms();
        if (poll_once(left < 1000 ? (int)left : 1000)) {
            told = 1;
            break;
        }
    }
    long closing = held;
    close_all(n);
    printf("closed closed=%ld dropped=%ld held_ms=%lld%s\n", closing, dropped, (long long)(now_ms() - held_from),
           told ? "" : " deadline=1");
    fflush(stdout);
    return told && dropped == 0 ? 0 : 1;
}
