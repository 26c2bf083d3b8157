/* Listening sockets (see sock.h). */
#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void sl_sock_endpoint(char *out, uint32_t out_bytes, const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    snprintf(out, out_bytes, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
}

int sl_sock_listen(const char *what, const char *host, uint16_t port, int type, char *err,
                   uint32_t err_bytes)
{
    char where[300], name[256];
    sl_sock_endpoint(where, sizeof where, host, port);
    size_t len = strnlen(host, sizeof name);
    if (len == sizeof name || len == 0) {
        snprintf(err, err_bytes, "%s %s: bad host", what, where);
        return -1;
    }
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memcpy(name, host + 1, len - 2);
        name[len - 2] = '\0';
    } else {
        memcpy(name, host, len + 1);
    }
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = type,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(name, service, &hints, &res);
    if (gai != 0 || res == NULL) {
        snprintf(err, err_bytes, "%s %s: %s", what, where,
                 gai != 0 ? gai_strerror(gai) : "no address");
        return -1;
    }
    int fd = socket(res->ai_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : 0;
    if (rc == 0 && type == SOCK_STREAM) {
        int one = 1;
        rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (rc == 0) {
        rc = bind(fd, res->ai_addr, res->ai_addrlen);
    }
    if (rc == 0 && type == SOCK_STREAM) {
        rc = listen(fd, SL_SOCK_BACKLOG);
    }
    int e = errno;
    freeaddrinfo(res);
    if (rc != 0) {
        if (fd >= 0) {
            close(fd);
        }
        snprintf(err, err_bytes, "%s %s: %s", what, where, strerror(e));
        return -1;
    }
    return fd;
}

uint16_t sl_sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}
