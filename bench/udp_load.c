/* Closed-loop UDP echo load: WINDOW datagrams of SIZE bytes in flight on one connected
 * socket, each echo checked byte for byte and answered with the next datagram. Batches
 * with sendmmsg/recvmmsg so that the client costs far less per datagram than any server.
 * Prints "ECHOED LOST"; exits 1 on a mismatch. Usage: udp_load PORT SIZE WINDOW SECONDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SIZE 65507

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void send_n(int fd, struct mmsghdr *msgs, int n) {
    while (n > 0) {
        int sent = sendmmsg(fd, msgs, n > BATCH ? BATCH : n, 0);
        if (sent < 0) {
            if (errno == EINTR || errno == ECONNREFUSED) continue;
            perror("sendmmsg");
            exit(2);
        }
        n -= sent;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: udp_load PORT SIZE WINDOW SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), size = atoi(argv[2]), window = atoi(argv[3]);
    double duration_s = atof(argv[4]);
    static char payload[MAX_SIZE], in[BATCH][MAX_SIZE + 1];
    for (int i = 0; i < size; i++) payload[i] = (char)(i * 7 + 3);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("connect");
        return 2;
    }
    struct timeval timeout = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct iovec out_iov = {.iov_base = payload, .iov_len = (size_t)size};
    struct mmsghdr out[BATCH], msgs[BATCH];
    struct iovec iov[BATCH];
    memset(out, 0, sizeof out);
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        out[i].msg_hdr.msg_iov = &out_iov;
        out[i].msg_hdr.msg_iovlen = 1;
        iov[i].iov_base = in[i];
        iov[i].iov_len = MAX_SIZE + 1;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long echoed = 0, lost = 0;
    send_n(fd, out, window);
    double end = now_s() + duration_s;
    while (now_s() < end) {
        int got = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                lost += window; /* nothing came back for 200 ms: refill the window */
                send_n(fd, out, window);
                continue;
            }
            if (errno == EINTR || errno == ECONNREFUSED) continue;
            perror("recvmmsg");
            return 2;
        }
        for (int i = 0; i < got; i++) {
            if (msgs[i].msg_len != (unsigned)size || memcmp(in[i], payload, size) != 0) {
                fprintf(stderr, "echo mismatch\n");
                return 1;
            }
        }
        echoed += got;
        send_n(fd, out, got);
    }
    printf("%ld %ld\n", echoed, lost);
    return 0;
}
