/* Open-loop UDP flood: COUNT datagrams of SIZE bytes to HOST:PORT as fast as sendmmsg goes,
 * for at most SECONDS, from one socket; never reads. Prints "SENT SECONDS".
 * Usage: udp_flood HOST PORT SIZE COUNT SECONDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: udp_flood HOST PORT SIZE COUNT SECONDS\n");
        return 2;
    }
    int size = atoi(argv[3]);
    long count = atol(argv[4]);
    double duration_s = atof(argv[5]);
    static char payload[1500];
    if (size < 0 || size > (int)sizeof payload) return 2;
    memset(payload, 'f', sizeof payload);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("connect");
        return 2;
    }
    struct iovec iov = {.iov_base = payload, .iov_len = size};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long sent = 0;
    double start = now_s(), elapsed = 0;
    while (sent < count && elapsed < duration_s) {
        int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
        int done = sendmmsg(fd, msgs, n, 0);
        if (done < 0 && errno != EINTR && errno != ECONNREFUSED && errno != ENOBUFS) {
            perror("sendmmsg");
            return 2;
        }
        if (done > 0) sent += done;
        elapsed = now_s() - start;
    }
    printf("%ld %.3f\n", sent, elapsed);
    return 0;
}
