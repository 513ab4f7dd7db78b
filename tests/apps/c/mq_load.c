/* mq_load -- a lean many-connection load generator for anp bench scale (one thread, epoll).
 *
 *   mq_load rr HOST PORT CONNS SIZE SECONDS WARMUP
 *       CONNS connections (TCP_NODELAY), each a closed loop: SIZE bytes out, SIZE bytes of
 *       echo back, next request. Requests finished after WARMUP seconds, within SECONDS
 *       more, are counted. Prints one JSON line: conns, requests, seconds, rate (requests
 *       per second, all connections), per-connection min/max, client CPU seconds.
 *   mq_load bulk HOST PORT CONNS SECONDS
 *       CONNS connections to a discard server, each writing 64 KiB chunks for SECONDS,
 *       then half-closing and waiting for the server to close (so every byte has been
 *       taken by the server). Prints one JSON line: bytes, seconds, MB/s, client CPU.
 *
 *   mq_load serve HOST ECHO_PORT SINK_PORT SECONDS
 *       The kernel's side of the comparison: one thread, epoll, echo on ECHO_PORT and
 *       discard (close after the peer's FIN) on SINK_PORT, for SECONDS, then exit.
 *
 * Every error exits 1 with one line on stderr. The echo is checked by length only (the
 * point is to cost the client little CPU; the stack's byte order is tested elsewhere).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define CHUNK (64 * 1024)

struct conn {
    int fd;
    size_t sent, got; /* of the current request */
    long done;        /* requests counted */
    int open;
};

static struct conn conns[MAX_CONNS];
static char buf[CHUNK];

static void die(const char *what)
{
    fprintf(stderr, "mq_load: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long num(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < 0) {
        fprintf(stderr, "mq_load: bad %s %s\n", what, s);
        exit(2);
    }
    return v;
}

/* Connect all (blocking connects, then non-blocking I/O), registered with epoll. */
static int open_all(const char *host, const char *port, long n, int ep, int events)
{
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)num(port, "port"))};
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fprintf(stderr, "mq_load: bad address %s\n", host);
        exit(2);
    }
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
            die("connect");
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        conns[i].open = 1;
        struct epoll_event ev = {.events = (uint32_t)events, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
    return 0;
}

static int rr(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: mq_load rr HOST PORT CONNS SIZE SECONDS WARMUP\n");
        return 2;
    }
    long n = num(argv[4], "conns"), size = num(argv[5], "size");
    double secs = (double)num(argv[6], "seconds"), warm = (double)num(argv[7], "warmup");
    if (n < 1 || n > MAX_CONNS || size < 1 || size > CHUNK) {
        fprintf(stderr, "mq_load: conns 1..%d, size 1..%d\n", MAX_CONNS, CHUNK);
        return 2;
    }
    int ep = epoll_create1(0);
    open_all(argv[2], argv[3], n, ep, EPOLLIN);
    memset(buf, 'x', sizeof buf);
    for (long i = 0; i < n; i++)
        if (write(conns[i].fd, buf, (size_t)size) != size)
            die("write");
    double t0 = now(), start = t0 + warm, end = start + secs, c0 = 0;
    int counting = 0;
    struct epoll_event evs[256];
    char rbuf[CHUNK];
    for (;;) {
        double t = now();
        if (!counting && t >= start) {
            counting = 1;
            c0 = cpu();
            for (long i = 0; i < n; i++)
                conns[i].done = 0;
        }
        if (t >= end)
            break;
        int k = epoll_wait(ep, evs, 256, 100);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int j = 0; j < k; j++) {
            struct conn *c = &conns[evs[j].data.u64];
            ssize_t r = read(c->fd, rbuf, sizeof rbuf);
            if (r == 0) {
                fprintf(stderr, "mq_load: connection closed by the server\n");
                return 1;
            }
            if (r < 0) {
                if (errno == EAGAIN)
                    continue;
                die("read");
            }
            c->got += (size_t)r;
            while (c->got >= (size_t)size) {
                c->got -= (size_t)size;
                c->done++;
                if (write(c->fd, buf, (size_t)size) != size)
                    die("write");
            }
        }
    }
    double c1 = cpu();
    long total = 0, mn = -1, mx = 0;
    for (long i = 0; i < n; i++) {
        total += conns[i].done;
        if (mn < 0 || conns[i].done < mn)
            mn = conns[i].done;
        if (conns[i].done > mx)
            mx = conns[i].done;
        close(conns[i].fd);
    }
    printf("{\"mode\":\"rr\",\"conns\":%ld,\"size\":%ld,\"requests\":%ld,\"seconds\":%.3f,"
           "\"rate\":%.1f,\"per_conn_min\":%ld,\"per_conn_max\":%ld,\"client_cpu\":%.3f}\n",
           n, size, total, secs, (double)total / secs, mn, mx, c1 - c0);
    return 0;
}

static int bulk(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: mq_load bulk HOST PORT CONNS SECONDS\n");
        return 2;
    }
    long n = num(argv[4], "conns");
    double secs = (double)num(argv[5], "seconds");
    if (n < 1 || n > MAX_CONNS) {
        fprintf(stderr, "mq_load: conns 1..%d\n", MAX_CONNS);
        return 2;
    }
    int ep = epoll_create1(0);
    open_all(argv[2], argv[3], n, ep, EPOLLOUT | EPOLLIN | EPOLLRDHUP);
    memset(buf, 'x', sizeof buf);
    double t0 = now(), c0 = cpu(), stop = t0 + secs;
    uint64_t bytes = 0;
    long open = n;
    int sending = 1;
    struct epoll_event evs[256];
    char rbuf[4096];
    while (open > 0) {
        double t = now();
        if (sending && t >= stop) {
            sending = 0;
            for (long i = 0; i < n; i++) {
                shutdown(conns[i].fd, SHUT_WR);
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev);
            }
        }
        if (!sending && t >= stop + 30) {
            fprintf(stderr, "mq_load: the server did not close within 30 s\n");
            return 1;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int j = 0; j < k; j++) {
            struct conn *c = &conns[evs[j].data.u64];
            if (!c->open)
                continue;
            if (sending && (evs[j].events & EPOLLOUT)) {
                ssize_t w = write(c->fd, buf, CHUNK);
                if (w > 0)
                    bytes += (uint64_t)w;
                else if (w < 0 && errno != EAGAIN)
                    die("write");
            }
            if (!sending && (evs[j].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    c->open = 0;
                    open--;
                    close(c->fd);
                }
            }
        }
    }
    double t1 = now(), c1 = cpu();
    printf("{\"mode\":\"bulk\",\"conns\":%ld,\"bytes\":%llu,\"seconds\":%.3f,\"mbps\":%.1f,"
           "\"client_cpu\":%.3f}\n",
           n, (unsigned long long)bytes, t1 - t0, (double)bytes / (t1 - t0) / 1e6, c1 - c0);
    return 0;
}

static int listen_on(const char *host, long port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "mq_load: bad address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(fd, 1024) < 0)
        die("listen");
    return fd;
}

/* data.u64: fd in the low 32 bits, bit 32 = discard, bit 33 = listener */
static int serve(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: mq_load serve HOST ECHO_PORT SINK_PORT SECONDS\n");
        return 2;
    }
    double end = now() + (double)num(argv[5], "seconds");
    int ep = epoll_create1(0);
    int le = listen_on(argv[2], num(argv[3], "port")), ls = listen_on(argv[2], num(argv[4], "port"));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)le | (1ull << 33)};
    epoll_ctl(ep, EPOLL_CTL_ADD, le, &ev);
    ev.data.u64 = (uint64_t)ls | (1ull << 33) | (1ull << 32);
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[256];
    while (now() < end) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int j = 0; j < k; j++) {
            int fd = (int)(evs[j].data.u64 & 0xffffffffu);
            uint64_t sink = evs[j].data.u64 & (1ull << 32);
            if (evs[j].data.u64 & (1ull << 33)) {
                int c;
                while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.u64 = (uint64_t)c | sink};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                close(fd);
                continue;
            }
            if (r > 0 && !sink && write(fd, buf, (size_t)r) != r) {
                close(fd); /* a blocked echo: this client misbehaves */
            }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "rr") == 0)
        return rr(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "bulk") == 0)
        return bulk(argc, argv);
    fprintf(stderr, "usage: mq_load rr|bulk ...\n");
    return 2;
}
