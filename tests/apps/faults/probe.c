/* probe: the error paths of a TCP client, as a program on plain BSD sockets sees them.
 *
 *   probe reset   HOST PORT  send a byte; the peer answers with RST: read -> ECONNRESET
 *                            once, then 0; send(MSG_NOSIGNAL) -> EPIPE, no SIGPIPE
 *   probe hold    HOST PORT  connect, say "connected", then read until the stack goes away:
 *                            read -> ECONNRESET or 0, then send(MSG_NOSIGNAL) -> EPIPE
 *   probe nonblock HOST PORT non-blocking connect -> EINPROGRESS, recv before and after the
 *                            handshake -> EAGAIN, POLLOUT then SO_ERROR 0
 *   probe connect HOST PORT [USER_TIMEOUT_MS]  one blocking connect; prints its errno name
 *
 * Every result is one line "what: RESULT" on stdout; exit 0 unless the program misbehaved.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *name(int e)
{
    switch (e) {
    case 0: return "OK";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EPIPE: return "EPIPE";
    case EAGAIN: return "EAGAIN";
    case EINPROGRESS: return "EINPROGRESS";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ENOTCONN: return "ENOTCONN";
    default: return strerror(e);
    }
}

static void report(const char *what, ssize_t r)
{
    if (r < 0)
        printf("%s: %s\n", what, name(errno));
    else
        printf("%s: %zd\n", what, r);
    fflush(stdout);
}

static struct sockaddr_in addr_of(const char *host, const char *port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    return a;
}

static int connected(const char *host, const char *port)
{
    struct sockaddr_in a = addr_of(host, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        report("connect", -1);
        exit(1);
    }
    printf("connected\n");
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    char buf[4096];
    if (argc < 4) {
        fprintf(stderr, "usage: probe reset|hold|nonblock|connect HOST PORT [MS]\n");
        return 2;
    }
    if (!strcmp(argv[1], "reset")) {
        int fd = connected(argv[2], argv[3]);
        report("send", send(fd, "x", 1, 0));
        report("read1", read(fd, buf, sizeof buf));
        report("read2", read(fd, buf, sizeof buf));
        report("send-nosignal", send(fd, "y", 1, MSG_NOSIGNAL));
        printf("alive\n");
        return 0;
    }
    if (!strcmp(argv[1], "hold")) {
        int fd = connected(argv[2], argv[3]);
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0)
            ;
        report("read", r);
        for (int i = 0; i < 100; i++) { /* the FIN may let a first send through */
            r = send(fd, "y", 1, MSG_NOSIGNAL);
            if (r < 0)
                break;
            usleep(10000);
        }
        report("send-nosignal", r);
        printf("alive\n");
        return 0;
    }
    if (!strcmp(argv[1], "nonblock")) {
        struct sockaddr_in a = addr_of(argv[2], argv[3]);
        struct pollfd p;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), err = -1;
        socklen_t l = sizeof err;
        report("connect", connect(fd, (struct sockaddr *)&a, sizeof a));
        report("recv-connecting", recv(fd, buf, sizeof buf, 0));
        p.fd = fd;
        p.events = POLLOUT;
        report("poll", poll(&p, 1, 5000));
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        printf("so_error: %s\n", name(err));
        report("recv-idle", recv(fd, buf, sizeof buf, 0));
        report("send", send(fd, "hello", 5, 0));
        p.events = POLLIN;
        report("poll-in", poll(&p, 1, 5000));
        report("recv", recv(fd, buf, sizeof buf, 0));
        return 0;
    }
    if (!strcmp(argv[1], "connect")) {
        struct sockaddr_in a = addr_of(argv[2], argv[3]);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (argc > 4) {
            unsigned int ms = (unsigned int)atoi(argv[4]);
            setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
        }
        report("connect", connect(fd, (struct sockaddr *)&a, sizeof a));
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
