/* rr_bench -- TCP request/response latency and bulk transfer, printing JSON.
 *
 *   rr_bench serve HOST                  echo on port 7, sink on 9, source on 19, and on 13
 *                                        a server that answers one byte with a RST, UDP echo
 *                                        on 7 (threads)
 *   rr_bench rr HOST PORT SIZE COUNT WARMUP
 *   rr_bench bulk-send HOST PORT BYTES   to a sink: pattern out, half-close, "ok N" back
 *   rr_bench bulk-recv HOST PORT BYTES   from a source: "N\n" out, N pattern bytes back
 *
 * The bulk stream is the pattern repeated with a prime period (precomputed, checked with
 * memcmp).
 *
 * rr: one blocking connection with TCP_NODELAY; each request is SIZE bytes (a slice of the
 * pattern that moves with the request number), its echo is read in full and compared.
 * After WARMUP requests it prints "WARM" (so a harness can sample CPU clocks around the
 * measured part), then one JSON line: count, mean/p50/p90/p99/p99.9/min/max in us, rate,
 * the client's wall and CPU time and the raw samples in ns. bulk-*: one JSON line with
 * bytes, seconds, MB/s and the client's CPU. Every byte is checked; any mismatch or
 * error exits 1 with one stderr line.
 */
#include "anpc.h"

#include <pthread.h>

#define BULK_CHUNK (256 * 1024)
/* The bulk stream repeats the pattern with a prime period, so both ends precompute it
 * once and check with memcmp: the C code costs the transfer next to nothing. */
#define BULK_PERIOD 1048573u

static uint8_t *bulk_pattern; /* BULK_PERIOD + BULK_CHUNK bytes */

static void bulk_init(void)
{
    if (bulk_pattern)
        return;
    bulk_pattern = malloc(BULK_PERIOD + BULK_CHUNK);
    if (!bulk_pattern)
        die_errno("malloc");
    for (size_t i = 0; i < BULK_PERIOD + BULK_CHUNK; i++)
        bulk_pattern[i] = pattern_byte(i % BULK_PERIOD);
}

/* The bulk stream's bytes from offset off on (at most BULK_CHUNK of them). */
static inline const uint8_t *bulk_at(uint64_t off)
{
    return bulk_pattern + off % BULK_PERIOD;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted samples (as bench/common.py computes it) */
static double pct(const uint64_t *s, long n, double p)
{
    long rank = (long)(p / 100.0 * (double)n + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)s[rank - 1] / 1e3;
}

static int tcp_connect(const char *host, const char *port)
{
    struct sockaddr_in to = make_addr(host, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die_errno("socket");
    set_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
        die_errno("connect");
    return fd;
}

static int rr(const char *host, const char *port, size_t size, long count, long warmup)
{
    int fd = tcp_connect(host, port);
    uint8_t *src = malloc(2 * size + 1), *rx = malloc(size);
    uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)(count ? count : 1));
    if (!src || !rx || !samples)
        die_errno("malloc");
    pattern_fill(src, 2 * size + 1, 0);
    uint64_t t0 = 0, c0 = 0;
    for (long i = 0; i < warmup + count; i++) {
        if (i == warmup) {
            printf("WARM\n");
            t0 = now_ns();
            c0 = cpu_ns();
        }
        const uint8_t *msg = src + (size_t)(i * 7919) % (size + 1);
        uint64_t a = now_ns();
        write_full(fd, msg, size);
        if (read_full(fd, rx, size) != size)
            die_msg("EOF instead of echo %ld", i);
        uint64_t b = now_ns();
        if (memcmp(msg, rx, size))
            die_msg("echo mismatch at request %ld", i);
        if (i >= warmup)
            samples[i - warmup] = b - a;
    }
    uint64_t wall = now_ns() - t0, cpu = cpu_ns() - c0;
    close(fd);
    double sum = 0;
    for (long i = 0; i < count; i++)
        sum += (double)samples[i];
    printf("{\"event\":\"result\",\"size\":%zu,\"count\":%ld,\"wall_ns\":%llu,\"cpu_ns\":%llu,"
           "\"rate_rps\":%.1f,\"mean_us\":%.3f,",
           size, count, (unsigned long long)wall, (unsigned long long)cpu,
           wall ? (double)count * 1e9 / (double)wall : 0.0, count ? sum / count / 1e3 : 0.0);
    printf("\"samples_ns\":[");
    for (long i = 0; i < count; i++)
        printf(i ? ",%llu" : "%llu", (unsigned long long)samples[i]);
    printf("],");
    qsort(samples, (size_t)count, sizeof *samples, cmp_u64);
    if (count)
        printf("\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"p99.9_us\":%.3f,"
               "\"min_us\":%.3f,\"max_us\":%.3f}\n",
               pct(samples, count, 50), pct(samples, count, 90), pct(samples, count, 99),
               pct(samples, count, 99.9), (double)samples[0] / 1e3,
               (double)samples[count - 1] / 1e3);
    else
        printf("\"p50_us\":null}\n");
    return 0;
}

static void print_bulk(const char *dir, uint64_t bytes, uint64_t wall, uint64_t cpu)
{
    double secs = (double)wall / 1e9;
    printf("{\"event\":\"result\",\"direction\":\"%s\",\"bytes\":%llu,\"wall_ns\":%llu,"
           "\"cpu_ns\":%llu,\"mbps\":%.2f}\n",
           dir, (unsigned long long)bytes, (unsigned long long)wall, (unsigned long long)cpu,
           secs > 0 ? (double)bytes / 1e6 / secs : 0.0);
}

static int bulk_send(const char *host, const char *port, uint64_t bytes)
{
    bulk_init();
    uint64_t t0 = now_ns(), c0 = cpu_ns();
    int fd = tcp_connect(host, port);
    for (uint64_t off = 0; off < bytes;) {
        size_t n = bytes - off < BULK_CHUNK ? (size_t)(bytes - off) : BULK_CHUNK;
        write_full(fd, bulk_at(off), n);
        off += n;
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die_errno("shutdown");
    char line[64] = {0};
    ssize_t r = read(fd, line, sizeof line - 1);
    if (r < 0)
        die_errno("read");
    char want[64];
    snprintf(want, sizeof want, "ok %llu\n", (unsigned long long)bytes);
    if (strcmp(line, want))
        die_msg("sink answered %.40s", r > 0 ? line : "nothing");
    uint64_t wall = now_ns() - t0, cpu = cpu_ns() - c0;
    close(fd);
    print_bulk("send", bytes, wall, cpu);
    return 0;
}

static int bulk_recv(const char *host, const char *port, uint64_t bytes)
{
    static uint8_t buf[BULK_CHUNK];
    bulk_init();
    uint64_t t0 = now_ns(), c0 = cpu_ns();
    int fd = tcp_connect(host, port);
    char req[32];
    int len = snprintf(req, sizeof req, "%llu\n", (unsigned long long)bytes);
    write_full(fd, req, (size_t)len);
    uint64_t off = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0)
            die_errno("read");
        if (r == 0)
            break;
        if (off + (uint64_t)r > bytes || memcmp(buf, bulk_at(off), (size_t)r))
            die_msg("source data mismatch near offset %llu", (unsigned long long)off);
        off += (uint64_t)r;
    }
    if (off != bytes)
        die_msg("source sent %llu of %llu bytes", (unsigned long long)off,
                (unsigned long long)bytes);
    uint64_t wall = now_ns() - t0, cpu = cpu_ns() - c0;
    close(fd);
    print_bulk("receive", bytes, wall, cpu);
    return 0;
}

/* ------------------------------------------------------------------ servers */

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static __thread uint8_t buf[65536];
    set_nodelay(fd);
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        write_full(fd, buf, (size_t)r);
    close(fd);
    return NULL;
}

static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = malloc(BULK_CHUNK);
    uint64_t off = 0;
    long bad = -1;
    ssize_t r;
    while ((r = read(fd, buf, BULK_CHUNK)) > 0) {
        if (bad < 0 && memcmp(buf, bulk_at(off), (size_t)r))
            bad = (long)off;
        off += (uint64_t)r;
    }
    char line[64];
    int len = bad < 0 ? snprintf(line, sizeof line, "ok %llu\n", (unsigned long long)off)
                      : snprintf(line, sizeof line, "bad %ld\n", bad);
    write_full(fd, line, (size_t)len);
    close(fd);
    free(buf);
    return NULL;
}

static void *source_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[32] = {0};
    size_t got = 0;
    while (got < sizeof req - 1 && !strchr(req, '\n')) {
        ssize_t r = read(fd, req + got, sizeof req - 1 - got);
        if (r <= 0) {
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    uint64_t bytes = strtoull(req, NULL, 10);
    for (uint64_t off = 0; off < bytes;) {
        size_t n = bytes - off < BULK_CHUNK ? (size_t)(bytes - off) : BULK_CHUNK;
        write_full(fd, bulk_at(off), n);
        off += n;
    }
    close(fd);
    return NULL;
}

/* port 13: read one byte, then close with SO_LINGER {1, 0}: the peer gets a RST */
static void *reset_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char b;
    if (read(fd, &b, 1) == 1) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
    return NULL;
}

/* UDP echo on port 7 (for sockprobe's datagram checks) */
static void *udp_echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static uint8_t buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            die_errno("recvfrom");
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

struct listener {
    int fd;
    void *(*handler)(void *);
};

static void *accept_loop(void *arg)
{
    struct listener *l = arg;
    for (;;) {
        int fd = accept(l->fd, NULL, NULL);
        if (fd < 0)
            die_errno("accept");
        pthread_t t;
        if (pthread_create(&t, NULL, l->handler, (void *)(intptr_t)fd))
            die_msg("pthread_create failed");
        pthread_detach(t);
    }
    return NULL;
}

static int serve(const char *host)
{
    static struct listener ls[4] = {
        {0, echo_conn}, {0, sink_conn}, {0, source_conn}, {0, reset_conn}};
    const char *ports[4] = {"7", "9", "19", "13"};
    pthread_t t[4];
    alarm(0); /* a server runs until it is killed */
    bulk_init();
    for (int i = 0; i < 4; i++) {
        struct sockaddr_in at = make_addr(host, ports[i]);
        ls[i].fd = tcp_listener(&at, 128, 0);
    }
    for (int i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, accept_loop, &ls[i]))
            die_msg("pthread_create failed");
    struct sockaddr_in uat = make_addr(host, "7");
    int ufd = socket(AF_INET, SOCK_DGRAM, 0);
    if (ufd < 0 || bind(ufd, (struct sockaddr *)&uat, sizeof uat) < 0)
        die_errno("udp bind");
    pthread_t ut;
    if (pthread_create(&ut, NULL, udp_echo, (void *)(intptr_t)ufd))
        die_msg("pthread_create failed");
    printf("{\"event\":\"ready\",\"pid\":%d}\n", (int)getpid());
    pthread_join(t[0], NULL);
    return 0;
}

int main(int argc, char **argv)
{
    anpc_init("rr_bench");
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return serve(argv[2]);
    if (argc == 7 && !strcmp(argv[1], "rr"))
        return rr(argv[2], argv[3], (size_t)parse_num(argv[4], "size"),
                  parse_num(argv[5], "count"), parse_num(argv[6], "warmup"));
    if (argc == 5 && !strcmp(argv[1], "bulk-send"))
        return bulk_send(argv[2], argv[3], (uint64_t)parse_num(argv[4], "bytes"));
    if (argc == 5 && !strcmp(argv[1], "bulk-recv"))
        return bulk_recv(argv[2], argv[3], (uint64_t)parse_num(argv[4], "bytes"));
    fprintf(stderr, "usage: rr_bench serve HOST | rr HOST PORT SIZE COUNT WARMUP |\n"
                    "       bulk-send HOST PORT BYTES | bulk-recv HOST PORT BYTES\n");
    return 2;
}
