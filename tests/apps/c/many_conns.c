/* many_conns -- one program holding hundreds of TCP connections at once (epoll).
 *
 *   many_conns HOST PORT CONNS SIZE
 *
 * Opens CONNS non-blocking connections (SOCK_NONBLOCK, EINPROGRESS, EPOLLOUT, SO_ERROR)
 * and waits until every one is established; only then does each send SIZE patterned
 * bytes and read the echo back (checked), all driven by one epoll set while every
 * connection stays open. Then all are half-closed and each must see the server's EOF.
 * Prints "established N" and "ok N connections ...". Pair it with
 * `tcp_pattern server HOST PORT epoll CONNS`.
 */
#include "anpc.h"

#include <sys/resource.h>

struct c {
    int fd;
    int state; /* 0 connecting, 1 echoing, 2 waiting for EOF, 3 done */
    size_t tx, rx;
};

int main(int argc, char **argv)
{
    anpc_init("many_conns");
    if (argc != 5) {
        fprintf(stderr, "usage: many_conns HOST PORT CONNS SIZE\n");
        return 2;
    }
    struct sockaddr_in to = make_addr(argv[1], argv[2]);
    long n = parse_num(argv[3], "conns");
    size_t size = (size_t)parse_num(argv[4], "size");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct c *cs = calloc((size_t)n, sizeof *cs);
    uint8_t *tx = malloc(size + 1), *rx = malloc(size + 1);
    if (!cs || !tx || !rx)
        die_errno("malloc");
    pattern_fill(tx, size, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die_errno("epoll_create1");
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0)
            die_errno("socket %ld", i);
        cs[i].fd = fd;
        if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
            die_errno("connect %ld", i);
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die_errno("epoll_ctl");
    }
    long established = 0, done = 0;
    struct epoll_event evs[256];
    while (done < n) {
        int k = epoll_wait(ep, evs, 256, 20000);
        if (k < 0)
            die_errno("epoll_wait");
        if (k == 0)
            die_err(ETIMEDOUT, "no progress for 20 s (%ld established, %ld done)", established,
                    done);
        for (int j = 0; j < k; j++) {
            struct c *c = &cs[evs[j].data.u64];
            if (c->state == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                    die_errno("getsockopt SO_ERROR");
                if (err)
                    die_err(err, "connect %ld", (long)evs[j].data.u64);
                c->state = 1;
                struct epoll_event ev = {.events = 0, .data.u64 = evs[j].data.u64};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                    die_errno("epoll_ctl");
                if (++established == n) {
                    /* every connection is up at once: now start the echoes */
                    printf("established %ld\n", n);
                    for (long i = 0; i < n; i++) {
                        struct epoll_event e2 = {.events = EPOLLIN | EPOLLOUT,
                                                 .data.u64 = (uint64_t)i};
                        if (epoll_ctl(ep, EPOLL_CTL_MOD, cs[i].fd, &e2) < 0)
                            die_errno("epoll_ctl");
                    }
                }
                continue;
            }
            if ((evs[j].events & (EPOLLOUT | EPOLLERR)) && c->state == 1 && c->tx < size) {
                ssize_t w = send(c->fd, tx + c->tx, size - c->tx, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN)
                    die_errno("send");
                if (w > 0)
                    c->tx += (size_t)w;
            }
            if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = recv(c->fd, rx, size + 1, 0);
                if (r < 0 && errno != EAGAIN)
                    die_errno("recv");
                if (r == 0) {
                    if (c->state != 2)
                        die_msg("EOF before the echo on connection %ld",
                                (long)evs[j].data.u64);
                    c->state = 3;
                    if (epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL) < 0)
                        die_errno("epoll_ctl DEL");
                    done++;
                    continue;
                }
                if (r > 0) {
                    if (c->state != 1 || c->rx + (size_t)r > size ||
                        pattern_check(rx, (size_t)r, c->rx) >= 0)
                        die_msg("echo mismatch on connection %ld", (long)evs[j].data.u64);
                    c->rx += (size_t)r;
                }
            }
            if (c->state == 1 && c->rx == size) {
                if (shutdown(c->fd, SHUT_WR) < 0)
                    die_errno("shutdown");
                c->state = 2;
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                    die_errno("epoll_ctl");
            } else if (c->state == 1 && c->tx == size) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                    die_errno("epoll_ctl");
            }
        }
    }
    for (long i = 0; i < n; i++)
        if (close(cs[i].fd) < 0)
            die_errno("close");
    printf("ok %ld connections held at once, %zu bytes echoed on each\n", n, size);
    return 0;
}
