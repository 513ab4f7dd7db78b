/* anpc.h -- helpers shared by the test programs: errors with errno names, the byte
 * pattern, addresses, clocks, readiness waits (select/poll/epoll) and a watchdog.
 *
 * Every program is plain BSD sockets; nothing here knows about anp. On any error a
 * program prints ONE line on stderr, "PROG: WHAT: ENAME (text)", and exits 1, so a test
 * can check the errno name (ECONNREFUSED, ENETUNREACH, EADDRINUSE ...).
 */
#ifndef ANPC_H
#define ANPC_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Helpers may go unused in a given program. */
#define ANPC_FN static __attribute__((unused))
#define ANPC_NORETURN __attribute__((noreturn))

static const char *anpc_prog = "anpc";

/* Print "PROG: WHAT: ENAME (text)" for errno value err and exit 1. */
ANPC_FN ANPC_NORETURN void die_err(int err, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *name = strerrorname_np(err);
    fprintf(stderr, "%s: %s: %s (%s)\n", anpc_prog, what, name ? name : "E?", strerror(err));
    exit(1);
}

#define die_errno(...) die_err(errno, __VA_ARGS__)

/* A mismatch or protocol error without an errno: one line, exit 1. */
ANPC_FN ANPC_NORETURN void die_msg(const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", anpc_prog, what);
    exit(1);
}

ANPC_FN void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = ": watchdog: ETIME (program ran out of time)\n";
    ssize_t r = write(2, anpc_prog, strlen(anpc_prog));
    r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

/* Set the program name, start the watchdog (ANPC_TIMEOUT seconds, default 60), ignore
 * SIGPIPE (EPIPE is reported as an error instead) and make stdout line-buffered. */
ANPC_FN void anpc_init(const char *prog)
{
    anpc_prog = prog;
    const char *t = getenv("ANPC_TIMEOUT");
    unsigned secs = t ? (unsigned)atoi(t) : 60;
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    alarm(secs ? secs : 60);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

ANPC_FN long parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0)
        die_msg("bad %s %s", what, s);
    return v;
}

/* The byte at offset o of every test stream: not periodic at any small power of two. */
ANPC_FN inline uint8_t pattern_byte(uint64_t o)
{
    return (uint8_t)(o * 7u + (o >> 8) * 13u + (o >> 16));
}

ANPC_FN void pattern_fill(uint8_t *buf, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern_byte(off + i);
}

/* Index of the first byte that differs from the pattern, or -1. */
ANPC_FN long pattern_check(const uint8_t *buf, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        if (buf[i] != pattern_byte(off + i))
            return (long)i;
    return -1;
}

ANPC_FN struct sockaddr_in make_addr(const char *host, const char *port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)parse_num(port, "port"));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die_msg("bad IPv4 address %s", host);
    return a;
}

ANPC_FN const char *fmt_addr(const struct sockaddr_in *a, char *buf, size_t n)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(buf, n, "%s:%u", ip, ntohs(a->sin_port));
    return buf;
}

/* "LOCAL -> PEER" of a connected socket (getsockname / getpeername). */
ANPC_FN void print_names(const char *what, int fd)
{
    struct sockaddr_in l, p;
    socklen_t ll = sizeof l, pl = sizeof p;
    char a[64], b[64];
    if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0)
        die_errno("getsockname");
    if (getpeername(fd, (struct sockaddr *)&p, &pl) < 0)
        die_errno("getpeername");
    printf("%s %s -> %s\n", what, fmt_addr(&l, a, sizeof a), fmt_addr(&p, b, sizeof b));
}

ANPC_FN uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

ANPC_FN uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

ANPC_FN void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die_errno("fcntl O_NONBLOCK");
}

/* I/O styles a program can be asked for. */
enum io_style { IO_BLOCKING, IO_SELECT, IO_POLL, IO_EPOLL };

ANPC_FN enum io_style parse_io(const char *s)
{
    if (!strcmp(s, "blocking"))
        return IO_BLOCKING;
    if (!strcmp(s, "select"))
        return IO_SELECT;
    if (!strcmp(s, "poll"))
        return IO_POLL;
    if (!strcmp(s, "epoll"))
        return IO_EPOLL;
    die_msg("bad io style %s (blocking|select|poll|epoll)", s);
    return IO_BLOCKING;
}

/* Wait until fd is readable (want_write=0) or writable (1) with the given mechanism;
 * timeout_ms < 0 waits forever. Returns 1 when ready, 0 on timeout. */
ANPC_FN int wait_fd(enum io_style io, int fd, int want_write, int timeout_ms)
{
    if (io == IO_SELECT) {
        if (fd >= FD_SETSIZE)
            die_msg("fd %d too large for select", fd);
        fd_set rs, ws;
        FD_ZERO(&rs);
        FD_ZERO(&ws);
        FD_SET(fd, want_write ? &ws : &rs);
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        int n = select(fd + 1, &rs, &ws, NULL, timeout_ms < 0 ? NULL : &tv);
        if (n < 0)
            die_errno("select");
        return n > 0;
    }
    if (io == IO_EPOLL) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
            die_errno("epoll_create1");
        struct epoll_event ev = {.events = want_write ? EPOLLOUT : EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die_errno("epoll_ctl");
        int n = epoll_wait(ep, &ev, 1, timeout_ms);
        if (n < 0)
            die_errno("epoll_wait");
        close(ep);
        return n > 0;
    }
    struct pollfd p = {.fd = fd, .events = want_write ? POLLOUT : POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n < 0)
        die_errno("poll");
    return n > 0;
}

/* connect() the kernel way for a non-blocking socket: EINPROGRESS, wait for writability
 * with the chosen mechanism, then SO_ERROR. Dies with the errno name on failure. */
ANPC_FN void connect_nb(enum io_style io, int fd, const struct sockaddr_in *to)
{
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) == 0)
        return;
    if (errno != EINPROGRESS)
        die_errno("connect");
    if (!wait_fd(io, fd, 1, 20000))
        die_err(ETIMEDOUT, "connect: no POLLOUT within 20 s");
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        die_errno("getsockopt SO_ERROR");
    if (err)
        die_err(err, "connect");
}

/* Blocking helpers: the whole buffer or die. read_full returns 0 at a clean EOF before
 * any byte, else the length; EOF in the middle dies. */
ANPC_FN void write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die_errno("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

ANPC_FN size_t read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die_errno("read");
        }
        if (r == 0) {
            if (got == 0)
                return 0;
            die_msg("read: EOF after %zu of %zu bytes", got, n);
        }
        got += (size_t)r;
    }
    return got;
}

ANPC_FN int tcp_listener(const struct sockaddr_in *at, int backlog, int flags)
{
    int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (fd < 0)
        die_errno("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die_errno("setsockopt SO_REUSEADDR");
    if (bind(fd, (const struct sockaddr *)at, sizeof *at) < 0)
        die_errno("bind");
    if (listen(fd, backlog) < 0)
        die_errno("listen");
    return fd;
}

ANPC_FN void set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die_errno("setsockopt TCP_NODELAY");
}

#endif
