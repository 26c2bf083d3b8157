/*
 * Listening sockets for every listener (native UDP and TCP, HTTP, and the
 * inputs to come), one way: the host is an IPv4 or IPv6 address (brackets
 * allowed) or a name getaddrinfo resolves ("localhost"); the socket is
 * non-blocking and close-on-exec; every port is exclusive (no SO_REUSEPORT,
 * and SO_REUSEADDR only on TCP, where Linux still refuses a second
 * listener: on UDP it would let a second daemon share the port and take
 * half the datagrams). Errors name the listener and the address:
 * "tcp 127.0.0.1:7400: Address already in use".
 */
#ifndef SL_NET_SOCK_H
#define SL_NET_SOCK_H

#include <stdint.h>

#define SL_SOCK_BACKLOG 1024

/*
 * Bind (and, for SOCK_STREAM, listen on) host:port. `what` names the
 * listener in messages ("udp", "tcp", "http"). Returns the descriptor, or
 * -1 with the reason in err. Start-up, main thread.
 */
int sl_sock_listen(const char *what, const char *host, uint16_t port, int type, char *err,
                   uint32_t err_bytes);

/* The local port a socket is bound to (useful after port 0), or 0. */
uint16_t sl_sock_port(int fd);

/* "[::1]:80" for an IPv6 host, "127.0.0.1:80" otherwise, for messages. */
void sl_sock_endpoint(char *out, uint32_t out_bytes, const char *host, uint16_t port);

#endif
