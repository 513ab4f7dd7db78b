/* tcp_pattern -- patterned TCP echo client and server on plain BSD sockets.
 *
 *   tcp_pattern server HOST PORT IO CONNS      echo CONNS connections, then exit 0
 *   tcp_pattern client HOST PORT IO SIZE COUNT send COUNT messages of SIZE bytes, each
 *                                              echoed back and checked, then half-close
 *                                              and wait for the server's EOF
 *
 * IO is blocking | select | poll | epoll. In the non-blocking styles the client connects
 * the kernel way (EINPROGRESS, wait for writability, SO_ERROR) and the server accepts
 * (accept4 with SOCK_NONBLOCK under epoll, accept + fcntl otherwise) and serves every
 * connection at once from one loop. Both sides check every byte against the stream
 * pattern (anpc.h). The server prints "listening HOST:PORT" when ready; both print
 * "connected LOCAL -> PEER" per connection and "ok ..." at the end.
 */
#include "anpc.h"

#define MAXFD 1100
#define CHUNK 65536

/* A readiness set over one of select/poll/epoll. */
struct poller {
    enum io_style io;
    int ep, n;
    int fd[MAXFD];
    short want[MAXFD], got[MAXFD]; /* POLLIN | POLLOUT */
};

static void poller_init(struct poller *p, enum io_style io)
{
    memset(p, 0, sizeof *p);
    p->io = io;
    p->ep = -1;
    if (io == IO_EPOLL && (p->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die_errno("epoll_create1");
}

static int poller_find(struct poller *p, int fd)
{
    for (int i = 0; i < p->n; i++)
        if (p->fd[i] == fd)
            return i;
    return -1;
}

static void poller_set(struct poller *p, int fd, short want)
{
    int i = poller_find(p, fd);
    int op = EPOLL_CTL_MOD;
    if (i < 0) {
        if (p->n == MAXFD)
            die_msg("too many descriptors");
        i = p->n++;
        p->fd[i] = fd;
        op = EPOLL_CTL_ADD;
    } else if (p->want[i] == want) {
        return;
    }
    p->want[i] = want;
    if (p->io == IO_EPOLL) {
        struct epoll_event ev = {.data.fd = fd};
        ev.events = (want & POLLIN ? EPOLLIN : 0) | (want & POLLOUT ? EPOLLOUT : 0);
        if (epoll_ctl(p->ep, op, fd, &ev) < 0)
            die_errno("epoll_ctl");
    }
}

static void poller_del(struct poller *p, int fd)
{
    int i = poller_find(p, fd);
    if (i < 0)
        return;
    if (p->io == IO_EPOLL && epoll_ctl(p->ep, EPOLL_CTL_DEL, fd, NULL) < 0)
        die_errno("epoll_ctl DEL");
    p->n--;
    p->fd[i] = p->fd[p->n];
    p->want[i] = p->want[p->n];
}

/* Wait for readiness; fills got[] (errors and hang-ups count as both in and out, so the
 * next read/write reports them). Returns the number of ready descriptors. */
static int poller_wait(struct poller *p, int timeout_ms)
{
    for (int i = 0; i < p->n; i++)
        p->got[i] = 0;
    int ready = 0;
    if (p->io == IO_SELECT) {
        fd_set rs, ws;
        FD_ZERO(&rs);
        FD_ZERO(&ws);
        int maxfd = -1;
        for (int i = 0; i < p->n; i++) {
            if (p->fd[i] >= FD_SETSIZE)
                die_msg("fd %d too large for select", p->fd[i]);
            if (p->want[i] & POLLIN)
                FD_SET(p->fd[i], &rs);
            if (p->want[i] & POLLOUT)
                FD_SET(p->fd[i], &ws);
            if (p->fd[i] > maxfd)
                maxfd = p->fd[i];
        }
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        if (select(maxfd + 1, &rs, &ws, NULL, &tv) < 0)
            die_errno("select");
        for (int i = 0; i < p->n; i++) {
            p->got[i] = (short)((FD_ISSET(p->fd[i], &rs) ? POLLIN : 0) |
                                (FD_ISSET(p->fd[i], &ws) ? POLLOUT : 0));
            ready += p->got[i] != 0;
        }
    } else if (p->io == IO_POLL) {
        static struct pollfd pf[MAXFD];
        for (int i = 0; i < p->n; i++)
            pf[i] = (struct pollfd){.fd = p->fd[i], .events = p->want[i]};
        if (poll(pf, (nfds_t)p->n, timeout_ms) < 0)
            die_errno("poll");
        for (int i = 0; i < p->n; i++) {
            short r = pf[i].revents;
            if (r & (POLLERR | POLLHUP))
                r |= POLLIN | POLLOUT;
            if (r & POLLNVAL)
                die_msg("poll: POLLNVAL on fd %d", p->fd[i]);
            p->got[i] = r & p->want[i];
            ready += p->got[i] != 0;
        }
    } else {
        static struct epoll_event evs[MAXFD];
        int n = epoll_wait(p->ep, evs, MAXFD, timeout_ms);
        if (n < 0)
            die_errno("epoll_wait");
        for (int k = 0; k < n; k++) {
            int i = poller_find(p, evs[k].data.fd);
            if (i < 0)
                continue;
            uint32_t e = evs[k].events;
            short r = (short)((e & EPOLLIN ? POLLIN : 0) | (e & EPOLLOUT ? POLLOUT : 0));
            if (e & (EPOLLERR | EPOLLHUP))
                r |= POLLIN | POLLOUT;
            p->got[i] = r & p->want[i];
            ready += p->got[i] != 0;
        }
    }
    return ready;
}

/* ------------------------------------------------------------------ server */

struct conn {
    int fd;
    uint64_t rx_off; /* bytes received (and checked) so far */
    size_t start, end;
    uint8_t buf[CHUNK];
};

static uint64_t total_bytes;

static void check_rx(struct conn *c, size_t n)
{
    long bad = pattern_check(c->buf, n, c->rx_off);
    if (bad >= 0)
        die_msg("server: pattern mismatch at stream offset %llu",
                (unsigned long long)(c->rx_off + (uint64_t)bad));
    c->rx_off += n;
    total_bytes += n;
}

static void serve_blocking(int lfd, long conns)
{
    static struct conn c;
    for (long k = 0; k < conns; k++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            die_errno("accept");
        print_names("connected", fd);
        c.rx_off = 0;
        for (;;) {
            ssize_t r = read(fd, c.buf, sizeof c.buf);
            if (r < 0)
                die_errno("read");
            if (r == 0)
                break;
            check_rx(&c, (size_t)r);
            write_full(fd, c.buf, (size_t)r);
        }
        if (close(fd) < 0)
            die_errno("close");
    }
}

static void serve_events(enum io_style io, int lfd, long conns)
{
    static struct poller p;
    static struct conn *by_fd[65536];
    poller_init(&p, io);
    set_nonblock(lfd);
    poller_set(&p, lfd, POLLIN);
    long accepted = 0, closed = 0;
    while (closed < conns) {
        if (!poller_wait(&p, 30000))
            die_err(ETIMEDOUT, "server: nothing happened for 30 s");
        for (int i = p.n - 1; i >= 0; i--) {
            if (i >= p.n || !p.got[i])
                continue;
            int fd = p.fd[i];
            short got = p.got[i];
            if (fd == lfd) {
                while (accepted < conns) {
                    int cfd = io == IO_EPOLL ? accept4(lfd, NULL, NULL, SOCK_NONBLOCK)
                                             : accept(lfd, NULL, NULL);
                    if (cfd < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                            break;
                        die_errno("accept");
                    }
                    if (cfd >= 65536)
                        die_msg("fd %d too large", cfd);
                    if (io != IO_EPOLL)
                        set_nonblock(cfd);
                    print_names("connected", cfd);
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c)
                        die_errno("calloc");
                    c->fd = cfd;
                    by_fd[cfd] = c;
                    poller_set(&p, cfd, POLLIN);
                    accepted++;
                }
                if (accepted == conns)
                    poller_del(&p, lfd);
                continue;
            }
            struct conn *c = by_fd[fd];
            if ((got & POLLOUT) && c->start < c->end) {
                ssize_t w = send(fd, c->buf + c->start, c->end - c->start, 0);
                if (w < 0 && errno != EAGAIN)
                    die_errno("send");
                if (w > 0)
                    c->start += (size_t)w;
            } else if ((got & POLLIN) && c->start == c->end) {
                ssize_t r = recv(fd, c->buf, sizeof c->buf, 0);
                if (r < 0 && errno != EAGAIN)
                    die_errno("recv");
                if (r == 0) {
                    poller_del(&p, fd);
                    if (close(fd) < 0)
                        die_errno("close");
                    by_fd[fd] = NULL;
                    free(c);
                    closed++;
                    continue;
                }
                if (r > 0) {
                    check_rx(c, (size_t)r);
                    c->start = 0;
                    c->end = (size_t)r;
                }
            }
            poller_set(&p, fd, c->start < c->end ? POLLOUT : POLLIN);
        }
    }
}

static int server(const char *host, const char *port, enum io_style io, long conns)
{
    struct sockaddr_in at = make_addr(host, port);
    int lfd = tcp_listener(&at, 1024, 0);
    struct sockaddr_in got;
    socklen_t len = sizeof got;
    char a[64];
    if (getsockname(lfd, (struct sockaddr *)&got, &len) < 0)
        die_errno("getsockname");
    printf("listening %s\n", fmt_addr(&got, a, sizeof a));
    if (io == IO_BLOCKING)
        serve_blocking(lfd, conns);
    else
        serve_events(io, lfd, conns);
    close(lfd);
    printf("ok served %ld connections, %llu bytes echoed\n", conns,
           (unsigned long long)total_bytes);
    return 0;
}

/* ------------------------------------------------------------------ client */

static void client_blocking(int fd, size_t size, long count, uint8_t *tx, uint8_t *rx)
{
    uint64_t off = 0;
    for (long m = 0; m < count; m++) {
        /* A message goes out in chunks, each read back before the next: never more in
         * flight than one chunk, so a big message cannot deadlock both windows. */
        for (size_t done = 0; done < size;) {
            size_t n = size - done < CHUNK ? size - done : CHUNK;
            pattern_fill(tx, n, off);
            write_full(fd, tx, n);
            if (read_full(fd, rx, n) != n)
                die_msg("client: EOF instead of echo of message %ld", m);
            long bad = pattern_check(rx, n, off);
            if (bad >= 0)
                die_msg("client: echo mismatch at stream offset %llu",
                        (unsigned long long)(off + (uint64_t)bad));
            off += n;
            done += n;
        }
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die_errno("shutdown");
    ssize_t r = read(fd, rx, 1);
    if (r != 0)
        die_msg("client: expected EOF after half-close, read returned %zd", r);
}

static void client_events(enum io_style io, int fd, size_t size, long count, uint8_t *tx,
                          uint8_t *rx)
{
    static struct poller p;
    poller_init(&p, io);
    uint64_t tx_off = 0, rx_off = 0;
    for (long m = 0; m < count; m++) {
        uint64_t end = (uint64_t)(m + 1) * size;
        while (rx_off < end) {
            poller_set(&p, fd, (short)(POLLIN | (tx_off < end ? POLLOUT : 0)));
            if (!poller_wait(&p, 20000))
                die_err(ETIMEDOUT, "client: no progress for 20 s in message %ld", m);
            short got = p.got[0];
            if ((got & POLLOUT) && tx_off < end) {
                size_t n = end - tx_off < CHUNK ? (size_t)(end - tx_off) : CHUNK;
                pattern_fill(tx, n, tx_off);
                ssize_t w = send(fd, tx, n, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN)
                    die_errno("send");
                if (w > 0)
                    tx_off += (uint64_t)w;
            }
            if (got & POLLIN) {
                size_t n = end - rx_off < CHUNK ? (size_t)(end - rx_off) : CHUNK;
                ssize_t r = recv(fd, rx, n, 0);
                if (r < 0 && errno != EAGAIN)
                    die_errno("recv");
                if (r == 0)
                    die_msg("client: EOF instead of echo of message %ld", m);
                if (r > 0) {
                    long bad = pattern_check(rx, (size_t)r, rx_off);
                    if (bad >= 0)
                        die_msg("client: echo mismatch at stream offset %llu",
                                (unsigned long long)(rx_off + (uint64_t)bad));
                    rx_off += (uint64_t)r;
                }
            }
        }
    }
    if (shutdown(fd, SHUT_WR) < 0)
        die_errno("shutdown");
    for (;;) {
        if (!wait_fd(io, fd, 0, 20000))
            die_err(ETIMEDOUT, "client: no EOF within 20 s of half-close");
        ssize_t r = recv(fd, rx, 1, 0);
        if (r == 0)
            break;
        if (r < 0 && errno == EAGAIN)
            continue;
        if (r < 0)
            die_errno("recv");
        die_msg("client: data after the last echo");
    }
}

static int client(const char *host, const char *port, enum io_style io, size_t size,
                  long count)
{
    struct sockaddr_in to = make_addr(host, port);
    int fd = socket(AF_INET, SOCK_STREAM | (io == IO_EPOLL ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        die_errno("socket");
    set_nodelay(fd);
    if (io == IO_BLOCKING) {
        if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
            die_errno("connect");
    } else {
        if (io != IO_EPOLL)
            set_nonblock(fd);
        connect_nb(io, fd, &to);
    }
    print_names("connected", fd);
    uint8_t *tx = malloc(CHUNK), *rx = malloc(CHUNK);
    if (!tx || !rx)
        die_errno("malloc");
    if (io == IO_BLOCKING)
        client_blocking(fd, size, count, tx, rx);
    else
        client_events(io, fd, size, count, tx, rx);
    if (close(fd) < 0)
        die_errno("close");
    printf("ok %ld messages of %zu bytes echoed and checked\n", count, size);
    return 0;
}

int main(int argc, char **argv)
{
    anpc_init("tcp_pattern");
    if (argc == 6 && !strcmp(argv[1], "server"))
        return server(argv[2], argv[3], parse_io(argv[4]), parse_num(argv[5], "conns"));
    if (argc == 7 && !strcmp(argv[1], "client"))
        return client(argv[2], argv[3], parse_io(argv[4]), (size_t)parse_num(argv[5], "size"),
                      parse_num(argv[6], "count"));
    fprintf(stderr, "usage: tcp_pattern server HOST PORT IO CONNS\n"
                    "       tcp_pattern client HOST PORT IO SIZE COUNT\n"
                    "IO: blocking | select | poll | epoll\n");
    return 2;
}
