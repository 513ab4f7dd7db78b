/* fork_test -- a fork()ed child uses a socket it inherited.
 *
 *   fork_test accept HOST PORT    the parent listens and accepts one connection, forks and
 *                                 closes its own copy at once; the child echoes the
 *                                 connection (checked) until EOF. Pair with
 *                                 `tcp_pattern client ... blocking SIZE COUNT`.
 *   fork_test connect HOST PORT SIZE
 *                                 the parent connects and forks; the child sends SIZE
 *                                 patterned bytes, reads the echo and exits (its exit must
 *                                 not close the parent's connection); then the parent sends
 *                                 the next SIZE bytes on the same socket, reads that echo,
 *                                 half-closes and waits for EOF. Pair with
 *                                 `tcp_pattern server ... blocking 1`.
 *
 *   fork_test prefork HOST PORT N the parent listens and forks N children; each child
 *                                 accepts one connection on the inherited listening socket
 *                                 and echoes it until EOF (the pre-forking server model).
 *                                 Pair with N concurrent `tcp_pattern client`s.
 *
 * Exit status 0 only if every process succeeded.
 */
#include "anpc.h"

#include <sys/wait.h>

static void echo_until_eof(int fd)
{
    static uint8_t buf[65536];
    uint64_t off = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0)
            die_errno("child: read");
        if (r == 0)
            return;
        long bad = pattern_check(buf, (size_t)r, off);
        if (bad >= 0)
            die_msg("child: mismatch at stream offset %llu",
                    (unsigned long long)(off + (uint64_t)bad));
        off += (uint64_t)r;
        write_full(fd, buf, (size_t)r);
    }
}

static void exchange(int fd, uint64_t off, size_t size, const char *who)
{
    uint8_t *tx = calloc(1, size + 1), *rx = calloc(1, size + 1);
    if (!tx || !rx)
        die_errno("malloc");
    pattern_fill(tx, size, off);
    write_full(fd, tx, size);
    if (read_full(fd, rx, size) != size || memcmp(tx, rx, size))
        die_msg("%s: echo mismatch", who);
    free(tx);
    free(rx);
}

static int wait_child(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) < 0)
        die_errno("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die_msg("child failed (status 0x%x)", st);
    return 0;
}

static int do_accept(const char *host, const char *port)
{
    struct sockaddr_in at = make_addr(host, port);
    int lfd = tcp_listener(&at, 16, 0);
    printf("listening %s:%s\n", host, port);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        die_errno("accept");
    print_names("connected", fd);
    pid_t pid = fork();
    if (pid < 0)
        die_errno("fork");
    if (pid == 0) {
        anpc_prog = "fork_test child";
        close(lfd);
        echo_until_eof(fd);
        if (close(fd) < 0)
            die_errno("child: close");
        printf("child served the connection\n");
        _exit(0);
    }
    if (close(fd) < 0) /* the child's copy keeps the connection open */
        die_errno("parent: close");
    wait_child(pid);
    close(lfd);
    printf("ok child served the inherited connection\n");
    return 0;
}

static int do_connect(const char *host, const char *port, size_t size)
{
    struct sockaddr_in to = make_addr(host, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die_errno("socket");
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0)
        die_errno("connect");
    print_names("connected", fd);
    pid_t pid = fork();
    if (pid < 0)
        die_errno("fork");
    if (pid == 0) {
        anpc_prog = "fork_test child";
        exchange(fd, 0, size, "child");
        printf("child echoed %zu bytes\n", size);
        _exit(0); /* exit without close: the descriptor goes away with the process */
    }
    wait_child(pid);
    exchange(fd, size, size, "parent");
    if (shutdown(fd, SHUT_WR) < 0)
        die_errno("shutdown");
    uint8_t b;
    ssize_t r = read(fd, &b, 1);
    if (r != 0)
        die_msg("parent: expected EOF, read returned %zd", r);
    close(fd);
    printf("ok parent and child used one connection\n");
    return 0;
}

static int do_prefork(const char *host, const char *port, long n)
{
    struct sockaddr_in at = make_addr(host, port);
    int lfd = tcp_listener(&at, 64, 0);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids)
        die_errno("calloc");
    for (long i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            die_errno("fork");
        if (pids[i] == 0) {
            anpc_prog = "fork_test child";
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                die_errno("child: accept");
            close(lfd);
            echo_until_eof(fd);
            if (close(fd) < 0)
                die_errno("child: close");
            _exit(0);
        }
    }
    printf("listening %s:%s with %ld children\n", host, port, n);
    for (long i = 0; i < n; i++)
        wait_child(pids[i]);
    close(lfd);
    printf("ok %ld children each served one connection\n", n);
    return 0;
}

int main(int argc, char **argv)
{
    anpc_init("fork_test");
    if (argc == 4 && !strcmp(argv[1], "accept"))
        return do_accept(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "prefork"))
        return do_prefork(argv[2], argv[3], parse_num(argv[4], "children"));
    if (argc == 5 && !strcmp(argv[1], "connect"))
        return do_connect(argv[2], argv[3], (size_t)parse_num(argv[4], "size"));
    fprintf(stderr, "usage: fork_test accept HOST PORT | fork_test connect HOST PORT SIZE |\n"
                    "       fork_test prefork HOST PORT N\n");
    return 2;
}
