/* sockprobe -- socket API corner cases, printed one per line, to compare kernel and stack.
 *
 *   sockprobe HOST PORT LOCAL     HOST:PORT is an echo server, HOST:13 answers a byte with
 *                                 a RST (rr_bench serve), HOST:9999 is closed (TCP and UDP);
 *                                 LOCAL is this side's address
 *
 * Each line is "what: result" where result is an errno name or a value normalised so that
 * the kernel's answer is stable (no ports, no buffer sizes). A test runs it once on kernel
 * sockets and once through the stack and expects the same lines. Exit 0 unless the probe
 * itself could not run (then one stderr line).
 */
#include "anpc.h"

#include <sys/uio.h>
#include <sys/wait.h>

static const char *ename(int rc)
{
    if (rc >= 0)
        return "ok";
    const char *n = strerrorname_np(errno);
    return n ? n : "E?";
}

static int opt_get(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len) < 0)
        return -1000 - errno;
    return v;
}

int main(int argc, char **argv)
{
    anpc_init("sockprobe");
    if (argc != 4) {
        fprintf(stderr, "usage: sockprobe HOST PORT LOCAL\n");
        return 2;
    }
    struct sockaddr_in to = make_addr(argv[1], argv[2]);
    struct sockaddr_in local = make_addr(argv[3], "0");
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    char buf[256];

    /* a fresh TCP socket */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die_errno("socket");
    sl = sizeof sa;
    int rc = getsockname(fd, (struct sockaddr *)&sa, &sl);
    printf("fresh getsockname: %s %s\n", ename(rc), rc == 0 ? fmt_addr(&sa, buf, sizeof buf) : "");
    sl = sizeof sa;
    printf("fresh getpeername: %s\n", ename(getpeername(fd, (struct sockaddr *)&sa, &sl)));
    printf("SO_TYPE: %d\n", opt_get(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    printf("SO_ERROR fresh: %d\n", opt_get(fd, SOL_SOCKET, SO_ERROR));
    printf("TCP_NODELAY default: %d\n", opt_get(fd, IPPROTO_TCP, TCP_NODELAY) != 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    printf("TCP_NODELAY set: %d\n", opt_get(fd, IPPROTO_TCP, TCP_NODELAY) != 0);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    printf("SO_KEEPALIVE set: %d\n", opt_get(fd, SOL_SOCKET, SO_KEEPALIVE) != 0);
    int sz = 65536;
    printf("SO_RCVBUF set: %s\n", ename(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz)));
    printf("SO_RCVBUF positive: %d\n", opt_get(fd, SOL_SOCKET, SO_RCVBUF) > 0);
    printf("SO_SNDBUF positive: %d\n", opt_get(fd, SOL_SOCKET, SO_SNDBUF) > 0);
    struct sockaddr_in nothere = make_addr("10.0.0.77", "0");
    printf("bind foreign address: %s\n",
           ename(bind(fd, (struct sockaddr *)&nothere, sizeof nothere)));
    printf("send unconnected: %s\n", ename((int)send(fd, "x", 1, MSG_NOSIGNAL)));
    printf("listen-less accept: %s\n", ename(accept(fd, NULL, NULL)));
    close(fd);

    /* a listener: non-blocking accept with nothing pending */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    printf("bind local port 0: %s\n", ename(bind(lfd, (struct sockaddr *)&local, sizeof local)));
    sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    printf("bound port chosen: %d\n", ntohs(sa.sin_port) != 0);
    printf("listen: %s\n", ename(listen(lfd, 4)));
    printf("accept nothing pending: %s\n", ename(accept(lfd, NULL, NULL)));
    struct pollfd lp = {.fd = lfd, .events = POLLIN | POLLOUT};
    rc = poll(&lp, 1, 0);
    printf("poll idle listener: %d revents 0x%x\n", rc, (unsigned)lp.revents);
    close(lfd);

    /* non-blocking connect */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    rc = connect(fd, (struct sockaddr *)&to, sizeof to);
    printf("connect nonblocking: %s\n", ename(rc));
    rc = connect(fd, (struct sockaddr *)&to, sizeof to);
    int e = errno;
    /* 0 (just connected), EALREADY (still connecting) or EISCONN are all the kernel's */
    printf("connect again: %s\n",
           rc == 0 || e == EALREADY || e == EISCONN ? "ok-EALREADY-or-EISCONN" : ename(rc));
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    printf("poll POLLOUT: %d\n", poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT));
    printf("SO_ERROR connected: %d\n", opt_get(fd, SOL_SOCKET, SO_ERROR));
    printf("connect once more: %s\n", ename(connect(fd, (struct sockaddr *)&to, sizeof to)));
    sl = sizeof sa;
    getpeername(fd, (struct sockaddr *)&sa, &sl);
    printf("getpeername: %s\n", fmt_addr(&sa, buf, sizeof buf));
    sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    printf("getsockname address: %d\n", sa.sin_addr.s_addr == local.sin_addr.s_addr);
    printf("recv nothing yet: %s\n", ename((int)recv(fd, buf, sizeof buf, 0)));

    /* data: MSG_PEEK leaves it, MSG_WAITALL waits for all of it */
    set_nonblock(fd);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    printf("O_NONBLOCK cleared: %d\n", (fcntl(fd, F_GETFL) & O_NONBLOCK) == 0);
    write_full(fd, "hello world!", 12);
    printf("recv MSG_PEEK|MSG_WAITALL: %zd\n", recv(fd, buf, 12, MSG_PEEK | MSG_WAITALL));
    printf("recv MSG_WAITALL: %zd %.12s\n", recv(fd, buf, 12, MSG_WAITALL), buf);
    struct iovec iov[2] = {{"abc", 3}, {"defgh", 5}};
    printf("writev: %zd\n", writev(fd, iov, 2));
    char a[3], b[5];
    struct iovec riov[2] = {{a, 3}, {b, 5}};
    struct msghdr mh = {.msg_iov = riov, .msg_iovlen = 2};
    printf("recvmsg MSG_WAITALL: %zd %.3s|%.5s\n", recvmsg(fd, &mh, MSG_WAITALL), a, b);
    int d = dup(fd);
    printf("dup then close original: %s\n", ename(close(fd)));
    write_full(d, "dup!", 4);
    printf("echo via dup: %zd\n", read(d, buf, 4));
    fd = d;

    /* half-close: writes fail with EPIPE (no SIGPIPE with MSG_NOSIGNAL); reads still work */
    printf("shutdown SHUT_WR: %s\n", ename(shutdown(fd, SHUT_WR)));
    printf("send after SHUT_WR: %s\n", ename((int)send(fd, "x", 1, MSG_NOSIGNAL)));
    printf("recv EOF: %zd\n", recv(fd, buf, sizeof buf, 0));
    struct pollfd ep = {.fd = fd, .events = POLLIN};
    rc = poll(&ep, 1, 1000);
    printf("poll after EOF: %d POLLIN=%d\n", rc, !!(ep.revents & POLLIN));
    close(fd);

    /* UDP: unconnected names, connect, getpeername */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    sl = sizeof sa;
    printf("udp fresh getsockname: %s\n",
           getsockname(u, (struct sockaddr *)&sa, &sl) == 0 ? fmt_addr(&sa, buf, sizeof buf) : "E");
    sl = sizeof sa;
    printf("udp getpeername unconnected: %s\n", ename(getpeername(u, (struct sockaddr *)&sa, &sl)));
    printf("udp connect: %s\n", ename(connect(u, (struct sockaddr *)&to, sizeof to)));
    sl = sizeof sa;
    getpeername(u, (struct sockaddr *)&sa, &sl);
    printf("udp getpeername: %s\n", fmt_addr(&sa, buf, sizeof buf));
    sl = sizeof sa;
    getsockname(u, (struct sockaddr *)&sa, &sl);
    printf("udp getsockname address: %d\n", sa.sin_addr.s_addr == local.sin_addr.s_addr);
    printf("udp recv nonblocking: %s\n", ename((int)recv(u, buf, sizeof buf, MSG_DONTWAIT)));
    /* a datagram longer than the buffer: truncated, the rest discarded (MSG_TRUNC) */
    uint8_t dgram[100];
    pattern_fill(dgram, sizeof dgram, 0);
    send(u, dgram, sizeof dgram, 0);
    struct pollfd dp = {.fd = u, .events = POLLIN};
    printf("udp echo arrives: %d\n", poll(&dp, 1, 2000));
    struct iovec div = {buf, 10};
    struct msghdr dm = {.msg_iov = &div, .msg_iovlen = 1};
    ssize_t dn = recvmsg(u, &dm, MSG_PEEK);
    printf("udp recvmsg MSG_PEEK short buffer: %zd MSG_TRUNC=%d\n", dn, !!(dm.msg_flags & MSG_TRUNC));
    printf("udp recv MSG_TRUNC short buffer: %zd\n", recv(u, buf, 10, MSG_TRUNC));
    printf("udp rest discarded: %s\n", ename((int)recv(u, buf, sizeof buf, MSG_DONTWAIT)));
    close(u);

    /* a connected UDP socket to a closed port: ICMP port unreachable -> ECONNREFUSED */
    u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in closed = to;
    closed.sin_port = htons(9999);
    connect(u, (struct sockaddr *)&closed, sizeof closed);
    printf("udp send to closed port: %s\n", ename((int)send(u, "x", 1, 0)));
    struct pollfd up = {.fd = u, .events = POLLIN};
    rc = poll(&up, 1, 2000);
    printf("udp poll after port unreachable: %d POLLERR=%d\n", rc, !!(up.revents & POLLERR));
    printf("udp recv after port unreachable: %s\n",
           ename((int)recv(u, buf, sizeof buf, MSG_DONTWAIT)));
    close(u);

    /* the peer resets: ECONNRESET once, then EOF; writes fail with EPIPE */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in rst = to;
    rst.sin_port = htons(13);
    if (connect(fd, (struct sockaddr *)&rst, sizeof rst) < 0)
        die_errno("connect to the reset port");
    write_full(fd, "r", 1);
    struct pollfd rp = {.fd = fd, .events = POLLIN};
    rc = poll(&rp, 1, 5000);
    printf("poll after RST: %d POLLIN=%d POLLERR=%d POLLHUP=%d\n", rc, !!(rp.revents & POLLIN),
           !!(rp.revents & POLLERR), !!(rp.revents & POLLHUP));
    printf("recv after RST: %s\n", ename((int)recv(fd, buf, sizeof buf, 0)));
    printf("recv again: %s\n", ename((int)recv(fd, buf, sizeof buf, 0)));
    printf("send after RST: %s\n", ename((int)send(fd, "x", 1, MSG_NOSIGNAL)));
    printf("SO_ERROR after RST: %d\n", opt_get(fd, SOL_SOCKET, SO_ERROR));
    pid_t pid = fork(); /* without MSG_NOSIGNAL and with SIGPIPE's default: killed */
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        ssize_t w = write(fd, "x", 1);
        _exit(w < 0 ? 10 : 11);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("write after RST, SIGPIPE default: %s %d\n", WIFSIGNALED(st) ? "signal" : "exit",
           WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    close(fd);

    /* a closed TCP port: blocking connect is refused */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    printf("connect closed port: %s\n",
           ename(connect(fd, (struct sockaddr *)&closed, sizeof closed)));
    close(fd);
    return 0;
}
