/* udp_rr -- UDP request/response on plain BSD sockets.
 *
 *   udp_rr server HOST PORT COUNT              answer COUNT datagrams, then exit 0
 *   udp_rr client HOST PORT SIZE COUNT [connect]
 *
 * The server (recvfrom/sendto) checks each request against the pattern at offset
 * SEQ*SIZE (SEQ = the first 4 bytes, big-endian) and sends it back. The client sends
 * COUNT requests one at a time and checks each reply: same length, same bytes, and (with
 * recvfrom) from the server's address. "connect" uses connect + send/recv instead, so the
 * reply's source is filtered by the socket. A reply missing for 2 s is ETIMEDOUT.
 */
#include "anpc.h"

#define MAXDGRAM 65507

static void fill_request(uint8_t *buf, size_t size, uint32_t seq)
{
    pattern_fill(buf, size, (uint64_t)seq * size);
    if (size >= 4) {
        uint32_t be = htonl(seq);
        memcpy(buf, &be, 4);
    }
}

static int server(const char *host, const char *port, long count)
{
    struct sockaddr_in at = make_addr(host, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die_errno("socket");
    if (bind(fd, (struct sockaddr *)&at, sizeof at) < 0)
        die_errno("bind");
    char a[64];
    printf("listening %s\n", fmt_addr(&at, a, sizeof a));
    static uint8_t buf[MAXDGRAM + 1], want[MAXDGRAM];
    for (long i = 0; i < count; i++) {
        struct sockaddr_in from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0)
            die_errno("recvfrom");
        if (n >= 4) {
            uint32_t be;
            memcpy(&be, buf, 4);
            fill_request(want, (size_t)n, ntohl(be));
            if (memcmp(want, buf, (size_t)n))
                die_msg("server: request %ld (%zd bytes) does not match the pattern", i, n);
        }
        if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen) != n)
            die_errno("sendto");
        if (i == 0)
            printf("first request from %s\n", fmt_addr(&from, a, sizeof a));
    }
    close(fd);
    printf("ok answered %ld datagrams\n", count);
    return 0;
}

static int client(const char *host, const char *port, size_t size, long count, int use_connect)
{
    if (size < 4 || size > MAXDGRAM)
        die_msg("size must be 4..%d", MAXDGRAM);
    struct sockaddr_in to = make_addr(host, port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die_errno("socket");
    if (use_connect && connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
        die_errno("connect");
    static uint8_t req[MAXDGRAM], rep[MAXDGRAM + 1];
    char a[64], b[64];
    for (long i = 0; i < count; i++) {
        fill_request(req, size, (uint32_t)i);
        ssize_t w = use_connect ? send(fd, req, size, 0)
                                : sendto(fd, req, size, 0, (struct sockaddr *)&to, sizeof to);
        if (w < 0)
            die_errno(use_connect ? "send" : "sendto");
        if (!wait_fd(IO_POLL, fd, 0, 2000))
            die_err(ETIMEDOUT, "reply %ld", i);
        struct sockaddr_in from;
        socklen_t flen = sizeof from;
        ssize_t n = use_connect ? recv(fd, rep, sizeof rep, 0)
                                : recvfrom(fd, rep, sizeof rep, 0, (struct sockaddr *)&from, &flen);
        if (n < 0)
            die_errno(use_connect ? "recv" : "recvfrom");
        if (!use_connect && (from.sin_addr.s_addr != to.sin_addr.s_addr ||
                             from.sin_port != to.sin_port))
            die_msg("reply %ld from %s, expected %s", i, fmt_addr(&from, a, sizeof a),
                    fmt_addr(&to, b, sizeof b));
        if ((size_t)n != size || memcmp(req, rep, size))
            die_msg("reply %ld: %zd bytes, does not match the request", i, n);
        if (i == 0) {
            struct sockaddr_in me;
            socklen_t ml = sizeof me;
            if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0)
                die_errno("getsockname");
            printf("bound %s\n", fmt_addr(&me, a, sizeof a));
        }
    }
    close(fd);
    printf("ok %ld datagrams of %zu bytes answered and checked\n", count, size);
    return 0;
}

int main(int argc, char **argv)
{
    anpc_init("udp_rr");
    if (argc == 5 && !strcmp(argv[1], "server"))
        return server(argv[2], argv[3], parse_num(argv[4], "count"));
    if ((argc == 6 || (argc == 7 && !strcmp(argv[6], "connect"))) && !strcmp(argv[1], "client"))
        return client(argv[2], argv[3], (size_t)parse_num(argv[4], "size"),
                      parse_num(argv[5], "count"), argc == 7);
    fprintf(stderr, "usage: udp_rr server HOST PORT COUNT\n"
                    "       udp_rr client HOST PORT SIZE COUNT [connect]\n");
    return 2;
}
