/* ifaddrs_bind -- find this host's addresses the way DNS and NTP servers do, and bind.
 *
 *   ifaddrs_bind
 *
 * Lists getifaddrs() (name, address, netmask, IPv4 broadcast, IFF_UP) for IPv4 and IPv6
 * entries, then binds a UDP socket to port 5353 of each address that is neither loopback
 * nor link-local and prints "bind ADDR ok" (or the errno name). getifaddrs runs twice, its
 * list freed each time, so a library that adds entries must free them cleanly.
 */
#include "anpc.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>

static void text(const struct sockaddr *sa, char *out, size_t n)
{
    socklen_t len = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6);
    if (getnameinfo(sa, len, out, n, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(out, n, "?");
}

static int skip(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr)[0] == 127;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_LINKLOCAL(a);
}

int main(void)
{
    struct ifaddrs *list, *i;
    char addr[NI_MAXHOST], mask[NI_MAXHOST], bcast[NI_MAXHOST];
    if (getifaddrs(&list) != 0)
        die_errno("getifaddrs");
    freeifaddrs(list);
    if (getifaddrs(&list) != 0)
        die_errno("getifaddrs");
    for (i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
                             i->ifa_addr->sa_family != AF_INET6))
            continue;
        text(i->ifa_addr, addr, sizeof addr);
        snprintf(mask, sizeof mask, "-");
        snprintf(bcast, sizeof bcast, "-");
        if (i->ifa_netmask)
            text(i->ifa_netmask, mask, sizeof mask);
        if (i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_BROADCAST) &&
            i->ifa_broadaddr)
            text(i->ifa_broadaddr, bcast, sizeof bcast);
        printf("if %s %s mask %s bcast %s up %d\n", i->ifa_name, addr, mask, bcast,
               !!(i->ifa_flags & IFF_UP));
    }
    for (i = list; i; i = i->ifa_next) {
        struct sockaddr_storage sa;
        int fd;
        if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
                             i->ifa_addr->sa_family != AF_INET6) || skip(i->ifa_addr))
            continue;
        memset(&sa, 0, sizeof sa);
        memcpy(&sa, i->ifa_addr, i->ifa_addr->sa_family == AF_INET
                                     ? sizeof(struct sockaddr_in)
                                     : sizeof(struct sockaddr_in6));
        ((struct sockaddr_in *)&sa)->sin_port = htons(5353); /* (same offset in both) */
        text(i->ifa_addr, addr, sizeof addr);
        fd = socket(sa.ss_family, SOCK_DGRAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            printf("bind %s %s\n", addr, strerrorname_np(errno));
        else
            printf("bind %s ok\n", addr);
        if (fd >= 0)
            close(fd);
    }
    freeifaddrs(list);
    return 0;
}
