/*
 * libanp_preload.so -- run an unmodified socket program on the anp-async stack.
 *
 * Loaded with LD_PRELOAD into a program (and its children), with ANP_SOCKET naming the
 * Unix socket of the anp process's socket-API server (anp_async/preload/server.py). Without
 * ANP_SOCKET every call goes straight to libc.
 *
 * How it works (the short version; docs in anp_async/preload/__init__.py):
 *
 * - socket(AF_INET or AF_INET6, SOCK_STREAM or SOCK_DGRAM) makes a Unix socketpair. The
 *   program keeps one end as its socket; the other end goes to the anp process (SCM_RIGHTS),
 *   which pumps bytes between it and the stack's connection. So read/write/send/recv,
 *   blocking, O_NONBLOCK, poll, select and epoll all work natively on a real descriptor.
 * - Only the calls that need the stack go over the control channel: socket, bind, listen,
 *   accept, connect, names, options. A TCP connection's lifetime follows its descriptor: when
 *   the program's last copy closes (close, exit, crash), the anp end sees the hang-up and the
 *   stack closes the connection. dup/fork share the descriptor, so they just work.
 * - A listening socket's descriptor carries one byte per connection waiting to be accepted:
 *   it polls readable exactly when accept() would succeed.
 * - A non-blocking connect must not poll writable before the handshake ends: before asking
 *   the stack to connect, the library shrinks the socket's send buffer and fills it, so the
 *   descriptor is not writable; when the handshake ends (or fails) the anp process drains the
 *   filler, the program sees POLLOUT, then SO_ERROR, and the library gives the buffer its
 *   size back at the program's next call on it. A listening socket is filled the same way
 *   for good: the kernel never reports a listener writable.
 * - UDP sockets are SOCK_SEQPACKET pairs; each datagram carries an 8-byte address header that
 *   the library adds on send and strips on receive.
 * - Loopback destinations (and binds) turn the socket back into a kernel socket; AF_UNIX and
 *   every other family are never touched. AF_INET6 sockets speak IPv6 to the stack, and
 *   IPv4 as v4-mapped addresses unless IPV6_V6ONLY is set, as on Linux.
 *
 * Wire format of the control channel (SOCK_SEQPACKET; one struct anp_msg per request and
 * per reply; must match anp_async/preload/protocol.py).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* ------------------------------------------------------------------ protocol */

#define ANP_MSG_DATA 256 /* room for getsockopt(TCP_INFO): 232 bytes */

struct anp_msg {
    int32_t op;
    int32_t sid;
    int32_t res; /* reply: >= 0, or -errno */
    int32_t a[4];
    uint32_t len;
    uint8_t data[ANP_MSG_DATA];
};

enum {
    OP_SOCKET = 1,   /* a0 type (| IPPROTO_ICMP[V6] << 16: a ping socket), a1/a2 inode of the
                        program's end, a3 family; fd -> sid, a0 the stack's IPv4
                        broadcast address (network order)                                 */
    OP_BIND = 2,     /* data: an address slot (sockaddr_in or sockaddr_in6, 28 bytes)     */
    OP_LISTEN = 3,   /* a0 backlog                                                        */
    OP_ACCEPT = 4,   /* -> sid of the new socket, data: peer slot + local slot; fd        */
    OP_CONNECT = 5,  /* data: an address slot, a0 filler bytes                           */
    OP_NAME = 6,     /* a0 0 = sockname, 1 = peername -> data: an address slot            */
    OP_SETOPT = 7,   /* a0 level, a1 name, data value (len)                              */
    OP_GETOPT = 8,   /* a0 level, a1 name -> data value (len)                            */
    OP_EOF = 9,      /* why did the stream end? -> res 0 or -errno (ECONNRESET ...)      */
    OP_IDENTIFY = 10, /* a0/a1 inode -> sid, a0 type, a1 state, a2 family                 */
    OP_IFADDRS = 12  /* -> data: IPv4 address (4), prefix (1), IPv6 address (16), prefix
                        (1; 0: none): the stack's interface, for getifaddrs()            */
};

/* An address on the control channel: a sockaddr_in or a sockaddr_in6 (the family says
 * which) in a slot of sizeof(struct sockaddr_in6) = 28 bytes. */
union anp_addr {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
};
#define ANP_ADDR_SLOT ((uint32_t)sizeof(struct sockaddr_in6))

/* Datagram header between the program's end and the anp end of a UDP socket. */
struct anp_udp_hdr {
    uint8_t addr[16]; /* IPv4: the first 4 bytes */
    uint16_t port;    /* network order */
    uint16_t err;     /* from anp: an errno to report instead of a datagram (ICMP) */
    uint16_t family;  /* AF_INET or AF_INET6 */
    uint8_t ttl;      /* from anp: the datagram's TTL / hop limit (0: not known) */
    uint8_t pad;
};

/* ------------------------------------------------------------------ state */

enum { ST_NEW = 0, ST_CONNECTING = 1, ST_CONNECTED = 2, ST_LISTENING = 3 };

#define ANP_MAX_FDS 65536
#define ANP_MAX_OPTS 16

struct anp_opt {
    int level, name, value;
};

struct anp_sock {
    int refs;     /* descriptors (dup) sharing this entry */
    int sid;      /* the anp process's id of the socket */
    int type;     /* SOCK_STREAM or SOCK_DGRAM */
    int family;   /* what the program asked for: AF_INET or AF_INET6 */
    int state;
    int v6only;
    int eof_asked;
    int sndbuf_restore; /* the send buffer size to give back after a connect's filler */
    int udp_connected;
    int icmp;     /* a ping socket: its protocol (IPPROTO_ICMP or IPPROTO_ICMPV6), else 0 */
    union anp_addr udp_peer;
    int nopts;
    struct anp_opt opts[ANP_MAX_OPTS]; /* replayed if the socket goes to the kernel */
};

static struct anp_sock *tab[ANP_MAX_FDS];
static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctl_fd = -1;
static pid_t ctl_pid;
static const char *ctl_path;
static int debug;
/* The stack's IPv4 subnet broadcast address (network order; 0: none), from the reply to
 * a SOCKET request: sending to it needs SO_BROADCAST, as sending to 255.255.255.255 does. */
static uint32_t stack_bcast;

/* ------------------------------------------------------------------ libc */

#define REAL(ret, name, args) static ret(*real_##name) args
REAL(int, socket, (int, int, int));
REAL(int, socketpair, (int, int, int, int *));
REAL(int, close, (int));
REAL(int, bind, (int, const struct sockaddr *, socklen_t));
REAL(int, listen, (int, int));
REAL(int, accept, (int, struct sockaddr *, socklen_t *));
REAL(int, accept4, (int, struct sockaddr *, socklen_t *, int));
REAL(int, connect, (int, const struct sockaddr *, socklen_t));
REAL(int, getsockname, (int, struct sockaddr *, socklen_t *));
REAL(int, getpeername, (int, struct sockaddr *, socklen_t *));
REAL(int, setsockopt, (int, int, int, const void *, socklen_t));
REAL(int, getsockopt, (int, int, int, void *, socklen_t *));
REAL(ssize_t, read, (int, void *, size_t));
REAL(ssize_t, write, (int, const void *, size_t));
REAL(ssize_t, readv, (int, const struct iovec *, int));
REAL(ssize_t, writev, (int, const struct iovec *, int));
REAL(ssize_t, recv, (int, void *, size_t, int));
REAL(ssize_t, send, (int, const void *, size_t, int));
REAL(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *));
REAL(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t));
REAL(ssize_t, recvmsg, (int, struct msghdr *, int));
REAL(ssize_t, sendmsg, (int, const struct msghdr *, int));
REAL(int, dup, (int));
REAL(int, dup2, (int, int));
REAL(int, dup3, (int, int, int));
REAL(int, fcntl, (int, int, ...));
REAL(int, fcntl64, (int, int, ...));
REAL(int, ioctl, (int, unsigned long, ...));
REAL(int, shutdown, (int, int));
REAL(int, getifaddrs, (struct ifaddrs **));
REAL(void, freeifaddrs, (struct ifaddrs *));

static void resolve_real(void)
{
#define R(name) real_##name = dlsym(RTLD_NEXT, #name)
    R(socket); R(socketpair); R(close); R(bind); R(listen); R(accept); R(accept4);
    R(connect); R(getsockname); R(getpeername); R(setsockopt); R(getsockopt);
    R(read); R(write); R(readv); R(writev); R(recv); R(send); R(recvfrom); R(sendto);
    R(recvmsg); R(sendmsg); R(dup); R(dup2); R(dup3); R(fcntl); R(fcntl64); R(ioctl);
    R(shutdown); R(getifaddrs); R(freeifaddrs);
#undef R
    if (!real_fcntl64)
        real_fcntl64 = real_fcntl;
}

static inline void ensure_real(void)
{
    if (__builtin_expect(real_close == NULL, 0))
        resolve_real();
}

#define LOG(...)                                                                         \
    do {                                                                                 \
        if (debug) {                                                                     \
            int e_ = errno;                                                              \
            fprintf(stderr, "anp-preload[%d]: ", (int)getpid());                         \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
            errno = e_;                                                                  \
        }                                                                                \
    } while (0)

static inline struct anp_sock *lookup(int fd)
{
    if (fd < 0 || fd >= ANP_MAX_FDS)
        return NULL;
    return __atomic_load_n(&tab[fd], __ATOMIC_ACQUIRE);
}

static void tab_set(int fd, struct anp_sock *s)
{
    struct anp_sock *old;
    if (fd < 0 || fd >= ANP_MAX_FDS)
        return;
    pthread_mutex_lock(&tab_lock);
    if (s)
        s->refs++;
    old = tab[fd];
    __atomic_store_n(&tab[fd], s, __ATOMIC_RELEASE);
    if (old && --old->refs == 0)
        free(old);
    pthread_mutex_unlock(&tab_lock);
}

static int fail(int err)
{
    errno = err;
    return -1;
}

/* ------------------------------------------------------------------ control channel */

static void after_fork_child(void)
{
    pthread_mutex_init(&ctl_lock, NULL);
    pthread_mutex_init(&tab_lock, NULL);
}

static void ctl_close_locked(void)
{
    if (ctl_fd >= 0)
        real_close(ctl_fd);
    ctl_fd = -1;
}

static int ctl_open_locked(void)
{
    struct sockaddr_un sa;
    int fd;
    if (ctl_fd >= 0 && ctl_pid == getpid())
        return 0;
    if (ctl_fd >= 0) /* inherited over fork(): the parent's conversation, not ours */
        ctl_close_locked();
    if (!ctl_path || strlen(ctl_path) >= sizeof(sa.sun_path))
        return -ENETDOWN;
    fd = real_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, ctl_path);
    while (real_connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno == EINTR)
            continue;
        LOG("cannot reach the stack at %s: %s", ctl_path, strerror(errno));
        real_close(fd);
        return -ENETDOWN; /* the stack is gone */
    }
    ctl_fd = fd;
    ctl_pid = getpid();
    return 0;
}

static ssize_t send_with_fd(int fd, const void *buf, size_t len, int pass_fd)
{
    struct iovec iov = {(void *)buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m;
    ssize_t r;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (pass_fd >= 0) {
        struct cmsghdr *c;
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = sizeof u.buf;
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    do
        r = real_sendmsg(fd, &m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t recv_with_fd(int fd, void *buf, size_t len, int *got_fd)
{
    struct iovec iov = {buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t r;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof u.buf;
    *got_fd = -1;
    do
        r = real_recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return r;
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(got_fd, CMSG_DATA(c), sizeof(int));
    return r;
}

/* One request, one reply. Returns rep->res (>= 0, or -errno); -ENETDOWN when the stack is
 * unreachable. A descriptor in the reply lands in *got_fd (if not NULL; else closed). */
static int ctl_call(struct anp_msg *req, int pass_fd, struct anp_msg *rep, int *got_fd)
{
    int rc, fd = -1;
    ssize_t n;
    pthread_mutex_lock(&ctl_lock);
    rc = ctl_open_locked();
    if (rc < 0)
        goto out;
    if (send_with_fd(ctl_fd, req, sizeof *req, pass_fd) != (ssize_t)sizeof *req) {
        ctl_close_locked();
        rc = -ENETDOWN;
        goto out;
    }
    n = recv_with_fd(ctl_fd, rep, sizeof *rep, &fd);
    if (n != (ssize_t)sizeof *rep) {
        ctl_close_locked();
        if (fd >= 0)
            real_close(fd);
        fd = -1;
        rc = -ENETDOWN;
        goto out;
    }
    rc = rep->res;
out:
    pthread_mutex_unlock(&ctl_lock);
    if (got_fd)
        *got_fd = fd;
    else if (fd >= 0)
        real_close(fd);
    return rc;
}

static void msg_init(struct anp_msg *m, int op, int sid)
{
    memset(m, 0, sizeof *m);
    m->op = op;
    m->sid = sid;
}

/* ------------------------------------------------------------------ addresses */

/* The program's address as the stack takes it: IPv4 (an AF_INET address, or an AF_INET6
 * socket's v4-mapped one unless IPV6_V6ONLY) or IPv6. Returns 0 or an errno; *loopback is
 * set for 127/8 and ::1, which stay with the kernel. */
static int to_stack(const struct anp_sock *s, const struct sockaddr *sa, socklen_t len,
                    int binding, union anp_addr *out, int *loopback)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    *loopback = 0;
    memset(out, 0, sizeof *out);
    if (!sa)
        return EFAULT;
    if (sa->sa_family == AF_INET) {
        if (len < (socklen_t)sizeof(struct sockaddr_in))
            return EINVAL;
        if (s->family == AF_INET6)
            return EAFNOSUPPORT;
        memcpy(&out->v4, sa, sizeof out->v4);
        memset(out->v4.sin_zero, 0, sizeof out->v4.sin_zero);
        *loopback = (ntohl(out->v4.sin_addr.s_addr) >> 24) == 127;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (len < (socklen_t)sizeof(struct sockaddr_in6))
            return EINVAL;
        if (s->family != AF_INET6)
            return EAFNOSUPPORT;
        if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) {
            *loopback = 1;
            return 0;
        }
        if (memcmp(&s6->sin6_addr, mapped, 12) == 0) {
            if (s->v6only) /* RFC 4038 / Linux: a v6-only socket has no IPv4 */
                return binding ? EADDRNOTAVAIL : ENETUNREACH;
            out->v4.sin_family = AF_INET;
            out->v4.sin_port = s6->sin6_port;
            memcpy(&out->v4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            *loopback = (ntohl(out->v4.sin_addr.s_addr) >> 24) == 127;
            return 0;
        }
        out->v6 = *s6;
        return 0;
    }
    return EAFNOSUPPORT;
}

/* An address from the stack, as the program's socket family wants it (IPv4 to an AF_INET6
 * socket becomes v4-mapped, 0.0.0.0 becomes ::). */
static void from_stack(const struct anp_sock *s, const union anp_addr *in,
                       struct sockaddr *sa, socklen_t *len)
{
    union anp_addr u;
    socklen_t n;
    if (!sa || !len)
        return;
    memset(&u, 0, sizeof u);
    if (in->sa.sa_family == AF_INET6) {
        u.v6 = in->v6;
        n = sizeof u.v6;
    } else if (s->family == AF_INET6) {
        u.v6.sin6_family = AF_INET6;
        u.v6.sin6_port = in->v4.sin_port;
        if (in->v4.sin_addr.s_addr) {
            u.v6.sin6_addr.s6_addr[10] = 0xff;
            u.v6.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&u.v6.sin6_addr.s6_addr[12], &in->v4.sin_addr, 4);
        }
        n = sizeof u.v6;
    } else {
        u.v4 = in->v4;
        u.v4.sin_family = AF_INET;
        n = sizeof u.v4;
    }
    memcpy(sa, &u, *len < n ? *len : n);
    *len = n;
}

/* "address:port" for the debug log. */
static const char *addr_str(const union anp_addr *a, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &a->v6.sin6_addr, ip, sizeof ip);
        snprintf(buf, n, "[%s]:%d", ip, ntohs(a->v6.sin6_port));
    } else {
        inet_ntop(AF_INET, &a->v4.sin_addr, ip, sizeof ip);
        snprintf(buf, n, "%s:%d", ip, ntohs(a->v4.sin_port));
    }
    return buf;
}

/* ------------------------------------------------------------------ socket() */

static int fd_nonblocking(int fd)
{
    int fl = real_fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

static struct anp_sock *new_entry(int sid, int type, int family, int state)
{
    struct anp_sock *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->sid = sid;
    s->type = type;
    s->family = family;
    s->state = state;
    return s;
}

int socket(int domain, int type, int protocol)
{
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    /* Linux's ping sockets (what iputils ping opens first): echo requests out, replies in */
    int icmp = base == SOCK_DGRAM && ((domain == AF_INET && protocol == IPPROTO_ICMP) ||
                                      (domain == AF_INET6 && protocol == IPPROTO_ICMPV6))
                   ? protocol
                   : 0;
    int pair[2], sid, rc;
    struct anp_msg req, rep;
    struct stat st;
    struct anp_sock *s;
    ensure_real();
    if (!ctl_path || (domain != AF_INET && domain != AF_INET6) ||
        (base != SOCK_STREAM && base != SOCK_DGRAM) ||
        (protocol != 0 && protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && !icmp) ||
        (base == SOCK_STREAM && protocol == IPPROTO_UDP) ||
        (base == SOCK_DGRAM && protocol == IPPROTO_TCP))
        return real_socket(domain, type, protocol);
    if (real_socketpair(AF_UNIX, (base == SOCK_STREAM ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC,
                        0, pair) < 0)
        return -1;
    if (type & SOCK_NONBLOCK)
        real_fcntl(pair[0], F_SETFL, real_fcntl(pair[0], F_GETFL) | O_NONBLOCK);
    if (!(type & SOCK_CLOEXEC))
        real_fcntl(pair[0], F_SETFD, 0);
    fstat(pair[0], &st);
    msg_init(&req, OP_SOCKET, -1);
    req.a[0] = base | (icmp << 16);
    req.a[1] = (int32_t)(uint32_t)(st.st_ino & 0xffffffffu);
    req.a[2] = (int32_t)(uint32_t)((uint64_t)st.st_ino >> 32);
    req.a[3] = domain;
    rc = ctl_call(&req, pair[1], &rep, NULL);
    real_close(pair[1]);
    if (rc < 0) {
        real_close(pair[0]);
        LOG("socket(%d, %d) failed: %s", domain, base, strerror(-rc));
        return fail(-rc);
    }
    sid = rc;
    if (rep.a[0])
        memcpy(&stack_bcast, &rep.a[0], sizeof stack_bcast);
    s = new_entry(sid, base, domain, ST_NEW);
    if (!s) {
        real_close(pair[0]);
        return fail(ENOMEM);
    }
    s->icmp = icmp;
    tab_set(pair[0], s);
    LOG("socket(%s, %s) = %d (sid %d)", domain == AF_INET ? "inet" : "inet6",
        base == SOCK_STREAM ? "stream" : "dgram", pair[0], sid);
    return pair[0];
}

/* The socket is for the kernel after all (loopback): put a kernel socket on the same
 * descriptor number, with the same flags and the options set so far. */
static int to_kernel(int fd, struct anp_sock *s)
{
    int k, fl, fdfl, i;
    fl = real_fcntl(fd, F_GETFL);
    fdfl = real_fcntl(fd, F_GETFD);
    k = real_socket(s->family, s->type, s->icmp);
    if (k < 0)
        return -1;
    if (fl >= 0)
        real_fcntl(k, F_SETFL, fl);
    if (s->family == AF_INET6)
        real_setsockopt(k, IPPROTO_IPV6, IPV6_V6ONLY, &s->v6only, sizeof(int));
    for (i = 0; i < s->nopts; i++)
        real_setsockopt(k, s->opts[i].level, s->opts[i].name, &s->opts[i].value, sizeof(int));
    if (real_dup3(k, fd, (fdfl >= 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0) < 0) {
        int e = errno;
        real_close(k);
        return fail(e);
    }
    real_close(k);
    tab_set(fd, NULL);
    LOG("fd %d goes to the kernel (loopback)", fd);
    return 0;
}

static int fill_send_buffer(int fd, int *sndbuf);

/* Put the program's address into a BIND or CONNECT request (msg_init first). Returns 0;
 * 1 when the address is loopback and the socket became the kernel's (the caller makes the
 * real call then); -1 with errno. */
static int address_request(int fd, struct anp_sock *s, const struct sockaddr *addr,
                           socklen_t len, int binding, struct anp_msg *req, union anp_addr *a)
{
    int lo, e = to_stack(s, addr, len, binding, a, &lo);
    if (e)
        return fail(e);
    if (lo) {
        if (s->state != ST_NEW)
            return fail(binding ? EINVAL : EISCONN);
        return to_kernel(fd, s) < 0 ? -1 : 1;
    }
    memcpy(req->data, a, ANP_ADDR_SLOT);
    req->len = ANP_ADDR_SLOT;
    return 0;
}

/* ------------------------------------------------------------------ bind, listen, accept */

/* Is the (int-valued) option set to non-zero? The library remembers what the program set. */
static int opt_set(const struct anp_sock *s, int level, int name)
{
    int i;
    for (i = 0; i < s->nopts; i++)
        if (s->opts[i].level == level && s->opts[i].name == name)
            return s->opts[i].value != 0;
    return 0;
}

/* Linux: a datagram to a broadcast address, or connect() to one, needs SO_BROADCAST
 * (EACCES without it). The anp process would drop it, after the call had succeeded. */
static int broadcast_refused(const struct anp_sock *s, const union anp_addr *a)
{
    uint32_t ip;
    if (a->sa.sa_family != AF_INET)
        return 0;
    ip = a->v4.sin_addr.s_addr;
    if (ip != htonl(INADDR_BROADCAST) && (!stack_bcast || ip != stack_bcast))
        return 0;
    return !opt_set(s, SOL_SOCKET, SO_BROADCAST);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct anp_sock *s;
    union anp_addr a;
    struct anp_msg req, rep;
    char buf[80];
    int rc;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_bind(fd, addr, len);
    msg_init(&req, OP_BIND, s->sid);
    rc = address_request(fd, s, addr, len, 1, &req, &a);
    if (rc != 0)
        return rc < 0 ? -1 : real_bind(fd, addr, len);
    rc = ctl_call(&req, -1, &rep, NULL);
    LOG("bind(%d, %s) = %d", fd, addr_str(&a, buf, sizeof buf), rc);
    return rc < 0 ? fail(-rc) : 0;
}

int listen(int fd, int backlog)
{
    struct anp_sock *s;
    struct anp_msg req, rep;
    int rc;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_listen(fd, backlog);
    if (s->type != SOCK_STREAM)
        return fail(EOPNOTSUPP);
    msg_init(&req, OP_LISTEN, s->sid);
    req.a[0] = backlog;
    rc = ctl_call(&req, -1, &rep, NULL);
    LOG("listen(%d, %d) = %d", fd, backlog, rc);
    if (rc < 0)
        return fail(-rc);
    if (s->state != ST_LISTENING) {
        int unused;
        fill_send_buffer(fd, &unused); /* never POLLOUT, like a kernel listener */
    }
    s->state = ST_LISTENING;
    return 0;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    struct anp_sock *s, *ns;
    struct anp_msg req, rep;
    union anp_addr peer;
    char buf[80];
    int rc, nfd;
    char token;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_accept4(fd, addr, alen, flags);
    if (s->type != SOCK_STREAM)
        return fail(EOPNOTSUPP);
    if (s->state != ST_LISTENING)
        return fail(EINVAL);
    for (;;) {
        /* One byte waits on the descriptor per connection in the accept queue: reading it
         * blocks, or fails with EAGAIN, exactly as accept() on the kernel would. */
        ssize_t n = real_recv(fd, &token, 1, 0);
        if (n < 0)
            return -1;
        if (n == 0)
            return fail(EINVAL); /* the listener is gone (stack down) */
        msg_init(&req, OP_ACCEPT, s->sid);
        rc = ctl_call(&req, -1, &rep, &nfd);
        if (rc == -EAGAIN)
            continue; /* that connection was reset while it waited */
        if (rc < 0)
            return fail(-rc);
        if (nfd < 0)
            return fail(ECONNABORTED);
        break;
    }
    if (flags & SOCK_NONBLOCK)
        real_fcntl(nfd, F_SETFL, real_fcntl(nfd, F_GETFL) | O_NONBLOCK);
    if (!(flags & SOCK_CLOEXEC))
        real_fcntl(nfd, F_SETFD, 0);
    ns = new_entry(rep.sid, SOCK_STREAM, s->family, ST_CONNECTED);
    if (!ns) {
        real_close(nfd);
        return fail(ENOMEM);
    }
    tab_set(nfd, ns);
    memcpy(&peer, rep.data, ANP_ADDR_SLOT);
    from_stack(ns, &peer, addr, alen);
    LOG("accept(%d) = %d from %s", fd, nfd, addr_str(&peer, buf, sizeof buf));
    return nfd;
}

int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    return accept4(fd, addr, alen, 0);
}

/* ------------------------------------------------------------------ connect */

static int so_error(struct anp_sock *s)
{
    struct anp_msg req, rep;
    int rc, v = 0;
    msg_init(&req, OP_GETOPT, s->sid);
    req.a[0] = SOL_SOCKET;
    req.a[1] = SO_ERROR;
    rc = ctl_call(&req, -1, &rep, NULL);
    if (rc < 0)
        return -rc;
    memcpy(&v, rep.data, sizeof v);
    return v;
}

/* Keep the descriptor from polling writable until the stack says the handshake ended:
 * shrink the send buffer and fill it. Returns the filler size; *sndbuf gets the size to
 * restore. */
static int fill_send_buffer(int fd, int *sndbuf)
{
    static const char zeros[4096];
    socklen_t l = sizeof(int);
    int one = 1, total = 0;
    *sndbuf = 0;
    real_getsockopt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf, &l);
    real_setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    for (int i = 0; i < 64; i++) {
        ssize_t n = real_send(fd, zeros, sizeof zeros, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break;
        total += (int)n;
    }
    return total;
}

/* The connect's filler is gone (the handshake ended): the send buffer gets its size back. */
static inline void restore_send_buffer(int fd, struct anp_sock *s)
{
    if (__builtin_expect(s->sndbuf_restore > 0, 0)) {
        int v = s->sndbuf_restore / 2; /* setsockopt doubles it (socket(7)) */
        s->sndbuf_restore = 0;
        real_setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    }
}

static int wait_writable(int fd)
{
    struct pollfd p = {fd, POLLOUT, 0};
    struct timeval tv;
    socklen_t l = sizeof tv;
    int timeout = -1, r;
    if (real_getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l) == 0 && (tv.tv_sec || tv.tv_usec))
        timeout = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
    r = poll(&p, 1, timeout);
    if (r < 0)
        return -1;           /* EINTR: the connection goes on, as with the kernel */
    if (r == 0)
        return fail(EINPROGRESS); /* SO_SNDTIMEO ran out (Linux says EINPROGRESS) */
    return 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct anp_sock *s;
    union anp_addr a;
    struct anp_msg req, rep;
    char buf[80];
    int rc, sndbuf = 0, filler = 0, err;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_connect(fd, addr, len);
    if (s->type == SOCK_DGRAM && addr && addr->sa_family == AF_UNSPEC) {
        s->udp_connected = 0; /* UDP "disconnect" */
        msg_init(&req, OP_CONNECT, s->sid);
        ctl_call(&req, -1, &rep, NULL);
        return 0;
    }
    msg_init(&req, OP_CONNECT, s->sid);
    rc = address_request(fd, s, addr, len, 0, &req, &a);
    if (rc != 0)
        return rc < 0 ? -1 : real_connect(fd, addr, len);
    if (s->type == SOCK_DGRAM) {
        if (broadcast_refused(s, &a))
            return fail(EACCES);
        rc = ctl_call(&req, -1, &rep, NULL);
        if (rc < 0)
            return fail(-rc);
        s->udp_connected = 1;
        s->udp_peer = a;
        return 0;
    }
    if (s->state == ST_LISTENING)
        return fail(EISCONN);
    if (s->state == ST_NEW) {
        filler = fill_send_buffer(fd, &sndbuf);
        req.a[0] = filler;
    }
    rc = ctl_call(&req, -1, &rep, NULL);
    LOG("connect(%d, %s) = %d", fd, addr_str(&a, buf, sizeof buf), rc);
    if (s->state == ST_NEW)
        s->sndbuf_restore = sndbuf; /* the anp process drained the filler or will */
    if (rc < 0) {
        if (rc == -EISCONN)
            s->state = ST_CONNECTED;
        else if (s->state == ST_NEW)
            restore_send_buffer(fd, s); /* refused at once: the filler is drained */
        return fail(-rc);
    }
    s->state = ST_CONNECTING;
    if (fd_nonblocking(fd))
        return fail(EINPROGRESS);
    if (wait_writable(fd) < 0)
        return -1;
    err = so_error(s);
    restore_send_buffer(fd, s);
    if (err)
        return fail(err);
    s->state = ST_CONNECTED;
    return 0;
}

/* ------------------------------------------------------------------ names and options */

static int get_name(int fd, struct sockaddr *addr, socklen_t *alen, int peer)
{
    struct anp_sock *s = lookup(fd);
    struct anp_msg req, rep;
    union anp_addr a;
    int rc;
    if (!s)
        return peer ? real_getpeername(fd, addr, alen) : real_getsockname(fd, addr, alen);
    if (!addr || !alen)
        return fail(EFAULT);
    if (peer && s->type == SOCK_DGRAM && s->udp_connected) {
        from_stack(s, &s->udp_peer, addr, alen);
        return 0;
    }
    msg_init(&req, OP_NAME, s->sid);
    req.a[0] = peer;
    rc = ctl_call(&req, -1, &rep, NULL);
    if (rc < 0)
        return fail(-rc);
    memcpy(&a, rep.data, ANP_ADDR_SLOT);
    from_stack(s, &a, addr, alen);
    return 0;
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *alen)
{
    ensure_real();
    return get_name(fd, addr, alen, 0);
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *alen)
{
    ensure_real();
    return get_name(fd, addr, alen, 1);
}

/* Options that belong to the descriptor itself (timeouts, buffers of the pair). */
static int native_opt(int level, int name)
{
    return level == SOL_SOCKET &&
           (name == SO_RCVTIMEO || name == SO_SNDTIMEO || name == SO_RCVLOWAT ||
            name == SO_SNDLOWAT || name == SO_RCVBUF || name == SO_SNDBUF ||
            name == SO_RCVBUFFORCE || name == SO_SNDBUFFORCE);
}

static void remember_opt(struct anp_sock *s, int level, int name, int value)
{
    int i;
    for (i = 0; i < s->nopts; i++)
        if (s->opts[i].level == level && s->opts[i].name == name) {
            s->opts[i].value = value;
            return;
        }
    if (s->nopts < ANP_MAX_OPTS)
        s->opts[s->nopts++] = (struct anp_opt){level, name, value};
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    struct anp_sock *s;
    struct anp_msg req, rep;
    int rc, ival = 0;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_setsockopt(fd, level, name, val, len);
    if (!val && len)
        return fail(EFAULT);
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY) {
        if (s->family != AF_INET6)
            return fail(ENOPROTOOPT);
        if (len < sizeof(int))
            return fail(EINVAL);
        memcpy(&s->v6only, val, sizeof(int));
        s->v6only = s->v6only != 0; /* and the stack learns it below (listener families) */
    }
    if (native_opt(level, name)) {
        /* the pair's own buffers and timeouts: set them on the descriptor */
        if (real_setsockopt(fd, level, name, val, len) < 0)
            return -1;
        if (name == SO_RCVTIMEO || name == SO_SNDTIMEO)
            return 0;
    }
    if (len > ANP_MSG_DATA)
        return fail(EINVAL);
    if (len >= sizeof(int)) {
        memcpy(&ival, val, sizeof(int));
        if (!native_opt(level, name))
            remember_opt(s, level, name, ival);
    }
    msg_init(&req, OP_SETOPT, s->sid);
    req.a[0] = level;
    req.a[1] = name;
    req.len = len;
    if (len)
        memcpy(req.data, val, len);
    rc = ctl_call(&req, -1, &rep, NULL);
    return rc < 0 ? fail(-rc) : 0;
}

static int put_int(void *val, socklen_t *len, int v)
{
    if (!val || !len)
        return fail(EFAULT);
    if (*len >= sizeof(int)) {
        memcpy(val, &v, sizeof(int));
        *len = sizeof(int);
    } else if (*len > 0) {
        memcpy(val, &v, *len);
    }
    return 0;
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    struct anp_sock *s;
    struct anp_msg req, rep;
    int rc;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_getsockopt(fd, level, name, val, len);
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_TYPE:
            return put_int(val, len, s->type);
        case SO_DOMAIN:
            return put_int(val, len, s->family);
        case SO_PROTOCOL:
            return put_int(val, len, s->type == SOCK_STREAM ? IPPROTO_TCP
                                     : s->icmp                ? s->icmp
                                                              : IPPROTO_UDP);
        case SO_ACCEPTCONN:
            return put_int(val, len, s->state == ST_LISTENING);
        default:
            if (native_opt(level, name))
                return real_getsockopt(fd, level, name, val, len);
        }
    }
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && s->family == AF_INET6)
        return put_int(val, len, s->v6only);
    if (!val || !len)
        return fail(EFAULT);
    msg_init(&req, OP_GETOPT, s->sid);
    req.a[0] = level;
    req.a[1] = name;
    req.a[2] = (int32_t)*len;
    rc = ctl_call(&req, -1, &rep, NULL);
    if (rc < 0)
        return fail(-rc);
    if (level == SOL_SOCKET && name == SO_ERROR && s->state == ST_CONNECTING) {
        int v;
        memcpy(&v, rep.data, sizeof v);
        if (v == 0)
            s->state = ST_CONNECTED;
        restore_send_buffer(fd, s);
    }
    if (rep.len < *len)
        *len = rep.len;
    memcpy(val, rep.data, *len);
    return 0;
}

/* ------------------------------------------------------------------ TCP data */

/* A stream read returned 0: an orderly end, or the connection reset / timed out? The
 * kernel reports ECONNRESET (ETIMEDOUT ...) once, then 0. */
static ssize_t stream_end(struct anp_sock *s)
{
    struct anp_msg req, rep;
    int rc;
    if (s->eof_asked)
        return 0;
    s->eof_asked = 1;
    msg_init(&req, OP_EOF, s->sid);
    rc = ctl_call(&req, -1, &rep, NULL);
    if (rc == -ENETDOWN)
        return fail(ECONNRESET); /* the stack went away */
    return rc < 0 ? fail(-rc) : 0;
}

/* Data calls on a TCP socket that is not connected: the kernel's answers (a listener or a
 * socket never connected has no stream; its pair must not carry bytes either). */
static int stream_unconnected(struct anp_sock *s)
{
    return s->state == ST_NEW || s->state == ST_LISTENING;
}

static ssize_t send_unconnected(int flags)
{
    if (!(flags & MSG_NOSIGNAL))
        raise(SIGPIPE);
    return fail(EPIPE);
}

/* shutdown() of a socket with no peer is ENOTCONN, as Linux answers (a TCP socket never
 * connected, an unconnected UDP socket). It must not reach the pair: the stack would take
 * the pair's hang-up for the program's close and forget the socket (a listen() after it
 * failed with EBADF). A connected socket's shutdown goes to its pair, whose end the stack
 * reads (SHUT_WR: its FIN). */
int shutdown(int fd, int how)
{
    struct anp_sock *s;
    ensure_real();
    s = lookup(fd);
    if (s && how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return fail(EINVAL);
    if (s && (s->type == SOCK_DGRAM ? !s->udp_connected : s->state == ST_NEW))
        return fail(ENOTCONN);
    return real_shutdown(fd, how);
}

/* The first data call after a connect ends gives the send buffer its size back. */
static inline ssize_t stream_send_ready(int fd, struct anp_sock *s, int flags)
{
    if (stream_unconnected(s))
        return send_unconnected(flags);
    restore_send_buffer(fd, s);
    return 0;
}

/* ------------------------------------------------------------------ UDP data */

static ssize_t udp_send(int fd, struct anp_sock *s, const struct msghdr *msg, int flags)
{
    struct anp_udp_hdr h;
    union anp_addr dst;
    struct iovec iov[IOV_MAX];
    struct msghdr m;
    size_t total = 0, i;
    ssize_t r;
    int lo, e;
    if (msg->msg_iovlen >= IOV_MAX)
        return fail(EMSGSIZE);
    if (msg->msg_name && msg->msg_namelen) {
        e = to_stack(s, msg->msg_name, msg->msg_namelen, 0, &dst, &lo);
        if (e)
            return fail(e);
        if (lo) {
            if (s->state != ST_NEW || s->udp_connected)
                return fail(EINVAL);
            if (to_kernel(fd, s) < 0)
                return -1;
            return real_sendmsg(fd, msg, flags);
        }
    } else if (s->udp_connected) {
        dst = s->udp_peer;
    } else {
        return fail(EDESTADDRREQ);
    }
    if (broadcast_refused(s, &dst))
        return fail(EACCES);
    /* Linux's udp_sendmsg: no datagram to port 0 (a ping socket has no ports) */
    if (!s->icmp && (dst.sa.sa_family == AF_INET6 ? dst.v6.sin6_port : dst.v4.sin_port) == 0)
        return fail(EINVAL);
    for (i = 0; i < msg->msg_iovlen; i++)
        total += msg->msg_iov[i].iov_len;
    if (total > 65507)
        return fail(EMSGSIZE);
    memset(&h, 0, sizeof h);
    h.family = dst.sa.sa_family;
    if (dst.sa.sa_family == AF_INET6) {
        memcpy(h.addr, &dst.v6.sin6_addr, 16);
        h.port = dst.v6.sin6_port;
    } else {
        memcpy(h.addr, &dst.v4.sin_addr, 4);
        h.port = dst.v4.sin_port;
    }
    iov[0].iov_base = &h;
    iov[0].iov_len = sizeof h;
    memcpy(&iov[1], msg->msg_iov, msg->msg_iovlen * sizeof(struct iovec));
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = msg->msg_iovlen + 1;
    r = real_sendmsg(fd, &m, (flags & (MSG_DONTWAIT)) | MSG_NOSIGNAL);
    if (r < 0) {
        if (errno == EPIPE)
            errno = ECONNREFUSED;
        return -1;
    }
    return r < (ssize_t)sizeof h ? 0 : r - (ssize_t)sizeof h;
}

/* IP_RECVTTL / IPV6_RECVHOPLIMIT: the datagram's TTL (hop limit) as ancillary data, as
 * Linux gives it (iputils ping prints it); no other ancillary data is delivered. */
static void put_ttl(const struct anp_sock *s, struct msghdr *msg, int family, int ttl)
{
    int v6 = family == AF_INET6;
    size_t room = msg->msg_control ? msg->msg_controllen : 0;
    struct cmsghdr *c;
    msg->msg_controllen = 0;
    if (!ttl || !opt_set(s, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_RECVHOPLIMIT : IP_RECVTTL))
        return;
    if (room < CMSG_SPACE(sizeof(int))) {
        msg->msg_flags |= MSG_CTRUNC;
        return;
    }
    memset(msg->msg_control, 0, CMSG_SPACE(sizeof(int)));
    c = (struct cmsghdr *)msg->msg_control;
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    c->cmsg_type = v6 ? IPV6_HOPLIMIT : IP_TTL;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &ttl, sizeof ttl);
    msg->msg_controllen = CMSG_SPACE(sizeof(int));
}

static ssize_t udp_recv(int fd, struct anp_sock *s, struct msghdr *msg, int flags)
{
    struct anp_udp_hdr h;
    struct iovec iov[IOV_MAX];
    struct msghdr m;
    union anp_addr src;
    ssize_t r;
    if (msg->msg_iovlen >= IOV_MAX)
        return fail(EMSGSIZE);
    for (;;) {
        iov[0].iov_base = &h;
        iov[0].iov_len = sizeof h;
        memcpy(&iov[1], msg->msg_iov, msg->msg_iovlen * sizeof(struct iovec));
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = msg->msg_iovlen + 1;
        r = real_recvmsg(fd, &m, flags & (MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_WAITALL));
        if (r < 0)
            return -1;
        if (r == 0)
            return fail(ENOTCONN); /* the stack closed the socket (it went away) */
        if (r < (ssize_t)sizeof h)
            continue;
        if (h.err) {
            if (flags & MSG_PEEK) /* consume the error report */
                real_recv(fd, &h, sizeof h, MSG_DONTWAIT);
            return fail(h.err);
        }
        break;
    }
    memset(&src, 0, sizeof src);
    if (h.family == AF_INET6) {
        src.v6.sin6_family = AF_INET6;
        memcpy(&src.v6.sin6_addr, h.addr, 16);
        src.v6.sin6_port = h.port;
    } else {
        src.v4.sin_family = AF_INET;
        memcpy(&src.v4.sin_addr, h.addr, 4);
        src.v4.sin_port = h.port;
    }
    if (msg->msg_name) {
        socklen_t l = msg->msg_namelen;
        from_stack(s, &src, msg->msg_name, &l);
        msg->msg_namelen = l;
    } else {
        msg->msg_namelen = 0;
    }
    msg->msg_flags = m.msg_flags;
    put_ttl(s, msg, h.family, h.ttl);
    return r - (ssize_t)sizeof h;
}

static ssize_t udp_send1(int fd, struct anp_sock *s, const void *buf, size_t n, int flags,
                         const struct sockaddr *to, socklen_t tolen)
{
    struct iovec v = {(void *)buf, n};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    m.msg_name = (void *)to;
    m.msg_namelen = to ? tolen : 0;
    return udp_send(fd, s, &m, flags);
}

static ssize_t udp_recv1(int fd, struct anp_sock *s, void *buf, size_t n, int flags,
                         struct sockaddr *from, socklen_t *fromlen)
{
    struct iovec v = {buf, n};
    struct msghdr m;
    ssize_t r;
    memset(&m, 0, sizeof m);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    m.msg_name = from;
    m.msg_namelen = (from && fromlen) ? *fromlen : 0;
    r = udp_recv(fd, s, &m, flags);
    if (r >= 0 && from && fromlen)
        *fromlen = m.msg_namelen;
    return r;
}

/* ------------------------------------------------------------------ data calls */

ssize_t read(int fd, void *buf, size_t n)
{
    struct anp_sock *s;
    ssize_t r;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_read(fd, buf, n);
    if (s->type == SOCK_DGRAM)
        return udp_recv1(fd, s, buf, n, 0, NULL, NULL);
    if (stream_unconnected(s))
        return fail(ENOTCONN);
    r = real_read(fd, buf, n);
    return (r == 0 && n > 0) ? stream_end(s) : r;
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        abort();
    return read(fd, buf, n);
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    struct anp_sock *s;
    ssize_t r;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_recv(fd, buf, n, flags);
    if (s->type == SOCK_DGRAM)
        return udp_recv1(fd, s, buf, n, flags, NULL, NULL);
    if (stream_unconnected(s))
        return fail(ENOTCONN);
    r = real_recv(fd, buf, n, flags);
    return (r == 0 && n > 0 && !(flags & MSG_PEEK)) ? stream_end(s) : r;
}

ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (n > buflen)
        abort();
    return recv(fd, buf, n, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from, socklen_t *fl)
{
    struct anp_sock *s;
    ssize_t r;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_recvfrom(fd, buf, n, flags, from, fl);
    if (s->type == SOCK_DGRAM)
        return udp_recv1(fd, s, buf, n, flags, from, fl);
    if (stream_unconnected(s))
        return fail(ENOTCONN);
    r = real_recv(fd, buf, n, flags);
    if (fl)
        *fl = 0; /* a connected TCP socket gives no address */
    return (r == 0 && n > 0 && !(flags & MSG_PEEK)) ? stream_end(s) : r;
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *from, socklen_t *fl)
{
    if (n > buflen)
        abort();
    return recvfrom(fd, buf, n, flags, from, fl);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct anp_sock *s;
    ssize_t r;
    size_t want = 0, i;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_recvmsg(fd, msg, flags);
    if (s->type == SOCK_DGRAM)
        return udp_recv(fd, s, msg, flags);
    if (stream_unconnected(s))
        return fail(ENOTCONN);
    {
        struct msghdr m = *msg;
        m.msg_name = NULL;
        m.msg_namelen = 0;
        m.msg_control = NULL; /* nothing ancillary comes from the stack */
        m.msg_controllen = 0;
        r = real_recvmsg(fd, &m, flags);
        msg->msg_namelen = 0;
        msg->msg_controllen = 0;
        msg->msg_flags = m.msg_flags;
    }
    for (i = 0; i < msg->msg_iovlen; i++)
        want += msg->msg_iov[i].iov_len;
    return (r == 0 && want > 0 && !(flags & MSG_PEEK)) ? stream_end(s) : r;
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    struct anp_sock *s;
    ssize_t r;
    size_t want = 0;
    int i;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_readv(fd, iov, cnt);
    if (s->type == SOCK_DGRAM) {
        struct msghdr m;
        if (cnt < 0)
            return fail(EINVAL);
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)iov;
        m.msg_iovlen = (size_t)cnt;
        return udp_recv(fd, s, &m, 0);
    }
    if (stream_unconnected(s))
        return fail(ENOTCONN);
    r = real_readv(fd, iov, cnt);
    for (i = 0; i < cnt; i++)
        want += iov[i].iov_len;
    return (r == 0 && want > 0) ? stream_end(s) : r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    struct anp_sock *s;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_write(fd, buf, n);
    if (s->type == SOCK_DGRAM)
        return udp_send1(fd, s, buf, n, 0, NULL, 0);
    if (stream_send_ready(fd, s, 0) < 0)
        return -1;
    return real_write(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    struct anp_sock *s;
    struct msghdr m;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_writev(fd, iov, cnt);
    if (s->type == SOCK_STREAM) {
        if (stream_send_ready(fd, s, 0) < 0)
            return -1;
        return real_writev(fd, iov, cnt);
    }
    if (cnt < 0)
        return fail(EINVAL);
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    return udp_send(fd, s, &m, 0);
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    struct anp_sock *s;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_send(fd, buf, n, flags);
    if (s->type == SOCK_DGRAM)
        return udp_send1(fd, s, buf, n, flags, NULL, 0);
    if (stream_send_ready(fd, s, flags) < 0)
        return -1;
    return real_send(fd, buf, n, flags);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
               socklen_t tolen)
{
    struct anp_sock *s;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_sendto(fd, buf, n, flags, to, tolen);
    if (s->type == SOCK_STREAM) {
        if (stream_send_ready(fd, s, flags) < 0)
            return -1;
        return real_send(fd, buf, n, flags); /* TCP ignores the address, as Linux does */
    }
    return udp_send1(fd, s, buf, n, flags, to, tolen);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct anp_sock *s;
    ensure_real();
    s = lookup(fd);
    if (!s)
        return real_sendmsg(fd, msg, flags);
    if (s->type == SOCK_STREAM) {
        struct msghdr m = *msg;
        if (stream_send_ready(fd, s, flags) < 0)
            return -1;
        m.msg_name = NULL;
        m.msg_namelen = 0;
        m.msg_control = NULL;
        m.msg_controllen = 0;
        return real_sendmsg(fd, &m, flags);
    }
    return udp_send(fd, s, msg, flags);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    static int (*real_sendmmsg)(int, struct mmsghdr *, unsigned int, int);
    struct anp_sock *s;
    unsigned int i;
    ensure_real();
    s = lookup(fd);
    if (!s) {
        if (!real_sendmmsg)
            real_sendmmsg = dlsym(RTLD_NEXT, "sendmmsg");
        return real_sendmmsg(fd, vec, vlen, flags);
    }
    for (i = 0; i < vlen; i++) {
        ssize_t r = sendmsg(fd, &vec[i].msg_hdr, flags);
        if (r < 0)
            return i ? (int)i : -1;
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *tmo)
{
    static int (*real_recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
    struct anp_sock *s;
    unsigned int i;
    ensure_real();
    s = lookup(fd);
    if (!s) {
        if (!real_recvmmsg)
            real_recvmmsg = dlsym(RTLD_NEXT, "recvmmsg");
        return real_recvmmsg(fd, vec, vlen, flags, tmo);
    }
    for (i = 0; i < vlen; i++) {
        ssize_t r = recvmsg(fd, &vec[i].msg_hdr, i ? (flags | MSG_DONTWAIT) : flags);
        if (r < 0)
            return i ? (int)i : -1;
        vec[i].msg_len = (unsigned int)r;
        if (flags & MSG_WAITFORONE)
            flags |= MSG_DONTWAIT;
    }
    return (int)i;
}

/* ------------------------------------------------------------------ descriptors */

int close(int fd)
{
    ensure_real();
    if (fd >= 0 && fd == ctl_fd) /* a program closing every descriptor: reconnect later */
        ctl_fd = -1;
    if (lookup(fd))
        tab_set(fd, NULL); /* the stack notices when the last copy of the descriptor goes */
    return real_close(fd);
}

static int dup_entry(int oldfd, int newfd)
{
    struct anp_sock *s = lookup(oldfd);
    if (newfd >= 0 && s)
        tab_set(newfd, s);
    return newfd;
}

int dup(int fd)
{
    ensure_real();
    return dup_entry(fd, real_dup(fd));
}

int dup2(int oldfd, int newfd)
{
    int r;
    ensure_real();
    if (oldfd == newfd)
        return real_dup2(oldfd, newfd);
    r = real_dup2(oldfd, newfd);
    if (r >= 0) {
        tab_set(newfd, NULL);
        dup_entry(oldfd, r);
    }
    return r;
}

int dup3(int oldfd, int newfd, int flags)
{
    int r;
    ensure_real();
    r = real_dup3(oldfd, newfd, flags);
    if (r >= 0) {
        tab_set(newfd, NULL);
        dup_entry(oldfd, r);
    }
    return r;
}

static int fcntl_common(int (*realf)(int, int, ...), int fd, int cmd, va_list ap)
{
    void *arg = va_arg(ap, void *);
    int r = realf(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        dup_entry(fd, r);
    return r;
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    int r;
    ensure_real();
    va_start(ap, cmd);
    r = fcntl_common(real_fcntl, fd, cmd, ap);
    va_end(ap);
    return r;
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    int r;
    ensure_real();
    va_start(ap, cmd);
    r = fcntl_common(real_fcntl64, fd, cmd, ap);
    va_end(ap);
    return r;
}

/* FIONREAD (= SIOCINQ) on a UDP socket: Linux answers the payload size of the next
 * datagram (0 if none waits). The program's end is a SOCK_SEQPACKET socket, which would
 * answer the size of all its packets together, headers included: peek at the next one. */
static int udp_inq(int fd, int *out)
{
    struct anp_udp_hdr h;
    ssize_t r = real_recv(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC);
    if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        r = 0;
    }
    /* an error report (ICMP) carries no datagram */
    *out = (r >= (ssize_t)sizeof h && !h.err) ? (int)(r - (ssize_t)sizeof h) : 0;
    return 0;
}

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;
    struct anp_sock *s;
    ensure_real();
    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    s = lookup(fd);
    if (s && s->type == SOCK_DGRAM && req == FIONREAD) {
        if (!arg)
            return fail(EFAULT);
        return udp_inq(fd, (int *)arg);
    }
    return real_ioctl(fd, req, arg);
}

/* ------------------------------------------------------------------ start-up */

/* Sockets inherited across exec(): the new image's table is empty, so ask the stack which
 * inherited Unix sockets are its sockets' program ends (by inode). */
static void adopt_inherited(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int dfd;
    if (!d)
        return;
    dfd = dirfd(d);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        struct anp_msg req, rep;
        int fd, dom = 0, rc;
        socklen_t l = sizeof dom;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        fd = atoi(e->d_name);
        if (fd == dfd || fd >= ANP_MAX_FDS || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
            continue;
        if (real_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0 || dom != AF_UNIX)
            continue;
        msg_init(&req, OP_IDENTIFY, -1);
        req.a[0] = (int32_t)(uint32_t)(st.st_ino & 0xffffffffu);
        req.a[1] = (int32_t)(uint32_t)((uint64_t)st.st_ino >> 32);
        rc = ctl_call(&req, -1, &rep, NULL);
        if (rc == -ENETDOWN)
            break;
        if (rc >= 0) {
            struct anp_sock *s = new_entry(rc, rep.a[0], rep.a[2], rep.a[1]);
            if (s) {
                tab_set(fd, s);
                LOG("inherited fd %d is stack socket %d", fd, rc);
            }
        }
    }
    closedir(d);
}

__attribute__((constructor)) static void anp_preload_init(void)
{
    const char *dbg = getenv("ANP_PRELOAD_DEBUG");
    ensure_real();
    debug = dbg && *dbg && strcmp(dbg, "0") != 0;
    ctl_path = getenv("ANP_SOCKET");
    if (ctl_path && !*ctl_path)
        ctl_path = NULL;
    if (!ctl_path)
        return;
    ctl_path = strdup(ctl_path);
    pthread_atfork(NULL, NULL, after_fork_child);
    adopt_inherited();
}

/* ------------------------------------------------------------------ interfaces */

/* getifaddrs() shows the program the stack's interface, "anp0" with the stack's
 * addresses: the program's own namespace has only lo (--isolate), or the kernel's end of
 * the TAP, so a program that finds its addresses by enumerating interfaces (and binds
 * each, as DNS and NTP servers do) would not find the stack's. The entries are appended
 * to the kernel's list in one block of ours, which freeifaddrs() cuts off and frees. */

#define ANP_IF_NAME "anp0"
#define ANP_IFA_BLOCKS 64

struct anp_ifa {
    struct ifaddrs ifa;
    union anp_addr addr, mask, bcast;
};

struct anp_ifa_block {
    struct anp_ifa node[2];
    char name[IF_NAMESIZE];
};

static struct anp_ifa_block *ifa_blocks[ANP_IFA_BLOCKS];

static void prefix_mask(union anp_addr *m, int family, int plen)
{
    uint8_t *b;
    int i, n;
    memset(m, 0, sizeof *m);
    m->sa.sa_family = (sa_family_t)family;
    b = family == AF_INET6 ? m->v6.sin6_addr.s6_addr : (uint8_t *)&m->v4.sin_addr.s_addr;
    n = family == AF_INET6 ? 16 : 4;
    for (i = 0; i < n; i++, plen -= 8)
        b[i] = plen >= 8 ? 0xff : plen > 0 ? (uint8_t)(0xff << (8 - plen)) : 0;
}

static int fill_ifa(struct anp_ifa_block *blk, const struct anp_msg *rep)
{
    int n = 0;
    const uint8_t *d = rep->data;
    unsigned flags = IFF_UP | IFF_RUNNING | IFF_BROADCAST | IFF_MULTICAST;
    strcpy(blk->name, ANP_IF_NAME);
    if (d[4] && d[4] <= 32) {
        struct anp_ifa *e = &blk->node[n++];
        e->addr.v4.sin_family = AF_INET;
        memcpy(&e->addr.v4.sin_addr, d, 4);
        prefix_mask(&e->mask, AF_INET, d[4]);
        e->bcast.v4.sin_family = AF_INET;
        e->bcast.v4.sin_addr.s_addr =
            e->addr.v4.sin_addr.s_addr | ~e->mask.v4.sin_addr.s_addr;
        e->ifa.ifa_broadaddr = &e->bcast.sa;
    }
    if (d[21] && d[21] <= 128) {
        struct anp_ifa *e = &blk->node[n++];
        e->addr.v6.sin6_family = AF_INET6;
        memcpy(&e->addr.v6.sin6_addr, d + 5, 16);
        prefix_mask(&e->mask, AF_INET6, d[21]);
    }
    for (int i = 0; i < n; i++) {
        struct anp_ifa *e = &blk->node[i];
        e->ifa.ifa_name = blk->name;
        e->ifa.ifa_flags = flags;
        e->ifa.ifa_addr = &e->addr.sa;
        e->ifa.ifa_netmask = &e->mask.sa;
        e->ifa.ifa_next = i + 1 < n ? &blk->node[i + 1].ifa : NULL;
    }
    return n;
}

int getifaddrs(struct ifaddrs **ifap)
{
    struct anp_msg req, rep;
    struct anp_ifa_block *blk;
    struct ifaddrs **tail;
    int rc, slot;
    ensure_real();
    rc = real_getifaddrs(ifap);
    if (rc != 0 || !ctl_path)
        return rc;
    msg_init(&req, OP_IFADDRS, -1);
    if (ctl_call(&req, -1, &rep, NULL) < 0 || rep.len < 22)
        return 0; /* (an older anp, or none: the kernel's list alone) */
    blk = calloc(1, sizeof *blk);
    if (!blk)
        return 0;
    pthread_mutex_lock(&tab_lock);
    for (slot = 0; slot < ANP_IFA_BLOCKS && ifa_blocks[slot]; slot++)
        ;
    if (slot == ANP_IFA_BLOCKS || !fill_ifa(blk, &rep)) {
        pthread_mutex_unlock(&tab_lock);
        free(blk);
        return 0;
    }
    ifa_blocks[slot] = blk;
    pthread_mutex_unlock(&tab_lock);
    for (tail = ifap; *tail; tail = &(*tail)->ifa_next)
        ;
    *tail = &blk->node[0].ifa;
    return 0;
}

void freeifaddrs(struct ifaddrs *ifa)
{
    struct ifaddrs **link;
    int i;
    ensure_real();
    pthread_mutex_lock(&tab_lock);
    for (link = &ifa; *link; link = &(*link)->ifa_next)
        for (i = 0; i < ANP_IFA_BLOCKS; i++)
            if (ifa_blocks[i] && *link == &ifa_blocks[i]->node[0].ifa) {
                free(ifa_blocks[i]); /* ours are the list's tail: cut them off */
                ifa_blocks[i] = NULL;
                *link = NULL;
                goto done;
            }
done:
    pthread_mutex_unlock(&tab_lock);
    if (ifa && real_freeifaddrs)
        real_freeifaddrs(ifa);
}
