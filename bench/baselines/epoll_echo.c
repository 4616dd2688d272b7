/* Echo server on bare epoll: the floor every Python server is measured against.
 *
 * One thread, level-triggered epoll, non-blocking sockets. Each read is written straight
 * back; what the kernel doesn't take waits in a per-connection buffer while reading stops
 * (backpressure). On the client's EOF the rest is flushed, then the socket is closed.
 *
 *     cc -O2 -o epoll_echo epoll_echo.c && ./epoll_echo --port 7007
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536

struct conn {
    char *pending; /* unsent bytes of the last read, or NULL */
    size_t offset, length;
    int eof;
};

static struct conn *conns;
static int epfd;

static void watch(int fd, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(epfd, op, fd, &ev);
}

static void drop(int fd) {
    free(conns[fd].pending);
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd); /* also removes it from the epoll set */
}

/* Send what is pending; 1 if all of it went, 0 if the kernel is full, -1 on error. */
static int flush(int fd) {
    struct conn *c = &conns[fd];
    while (c->offset < c->length) {
        ssize_t n = send(fd, c->pending + c->offset, c->length - c->offset, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->offset += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->offset = c->length = 0;
    return 1;
}

static void on_readable(int fd, char *buf) {
    struct conn *c = &conns[fd];
    ssize_t n = recv(fd, buf, CHUNK, 0);
    if (n == 0) {
        c->eof = 1;
        if (c->pending == NULL)
            drop(fd);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN)
            drop(fd);
        return;
    }
    ssize_t sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL);
    if (sent < 0 && errno != EAGAIN) {
        drop(fd);
        return;
    }
    if (sent < 0)
        sent = 0;
    if (sent < n) {
        c->length = (size_t)(n - sent);
        c->pending = malloc(c->length);
        memcpy(c->pending, buf + sent, c->length);
        c->offset = 0;
        watch(fd, EPOLL_CTL_MOD, EPOLLOUT);
    }
}

static void on_writable(int fd) {
    int done = flush(fd);
    if (done < 0 || (done > 0 && conns[fd].eof))
        drop(fd);
    else if (done > 0)
        watch(fd, EPOLL_CTL_MOD, EPOLLIN);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--host") == 0)
            host = argv[i + 1];
    }
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    conns = calloc(limit.rlim_cur, sizeof *conns);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1024) < 0) {
        perror("epoll_echo: bind");
        return 1;
    }
    socklen_t addrlen = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &addrlen);
    printf("listening on port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epfd = epoll_create1(0);
    watch(listener, EPOLL_CTL_ADD, EPOLLIN);
    static char buf[CHUNK];
    struct epoll_event events[256];
    for (;;) {
        int ready = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(client, EPOLL_CTL_ADD, EPOLLIN);
                }
            } else if (events[i].events & EPOLLOUT) {
                on_writable(fd);
            } else {
                on_readable(fd, buf);
            }
        }
    }
}
