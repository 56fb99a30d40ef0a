/*
 * bench/loadgen.c - load generator and floor server for bench/main.ts.
 * Compiled at bench time into a temporary directory (never committed):
 *   gcc -O2 -o loadgen bench/loadgen.c
 *
 *   loadgen load SOCK CONNS WARMUP_MS DURATION_MS [MAX_REQUESTS [REPORT_EVERY]]
 *     CONNS connections, each driven in lock-step (one PR IN READ KEYS with an
 *     fd of /dev/null, wait for the whole reply, send the next) from one
 *     thread with epoll. Prints progress lines "progress N" every REPORT_EVERY
 *     replies (if given), then one JSON line:
 *       {"requests":N,"seconds":S,"rps":R,"p50_us":A,"p99_us":B,"errors":E,"status":{...}}
 *     Latency is sendmsg() start to last reply byte, per request.
 *     LOADGEN_REQUEST=prout-ro sends PR OUT REGISTER (24-byte parameter list)
 *     with a read-only fd of /dev/null instead: every helper refuses that
 *     without an ioctl (qemu-pr-helper after F_GETFL, prhelperd after its
 *     device check), so both daemons do the same kind of work.
 *     With MAX_REQUESTS > 0 it stops after that many replies, or when
 *     WARMUP_MS + DURATION_MS have passed (a safety limit), and counts every reply.
 *
 *   loadgen serve SOCK
 *     The floor: a minimal single-threaded epoll server speaking the wire
 *     protocol (greeting, 16-byte CDB + one fd, 104-byte CHECK CONDITION
 *     reply), doing no work at all. Runs until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CDB_LEN 16
#define HDR_LEN 104
#define MAX_DATA 8192

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int unix_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    die(path);
  }
  strcpy(sa.sun_path, path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die(path);
  return fd;
}

static void read_full(int fd, void *buf, size_t n) {
  size_t have = 0;
  while (have < n) {
    ssize_t r = read(fd, (char *)buf + have, n - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = ECONNRESET;
      die("greeting read");
    }
    have += (size_t)r;
  }
}

static void write_full(int fd, const void *buf, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t r = send(fd, (const char *)buf + off, n - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("write");
    off += (size_t)r;
  }
}

#define PROUT_LEN 24

/* one request: the CDB and, for PR OUT, its parameter list (len bytes in all) */
static int send_cdb(int sock, const uint8_t *cdb, size_t len, int devfd) {
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)cdb, .iov_len = len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                     .msg_controllen = sizeof control};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &devfd, sizeof(int));
  for (;;) {
    ssize_t r = sendmsg(sock, &m, MSG_NOSIGNAL);
    if (r == (ssize_t)len) return 0;
    if (r < 0 && errno == EINTR) continue;
    return -1; /* a 16- or 40-byte write on a fresh reply cycle is never partial */
  }
}

struct conn {
  int fd;
  uint64_t sent_at;
  uint32_t have;
  uint32_t need;
  uint8_t buf[HDR_LEN + MAX_DATA];
};

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int do_load(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: loadgen load SOCK CONNS WARMUP_MS DURATION_MS [MAX [EVERY]]\n");
    return 2;
  }
  const char *path = argv[2];
  int nconn = atoi(argv[3]);
  uint64_t warm_ns = (uint64_t)atoll(argv[4]) * 1000000ull;
  uint64_t dur_ns = (uint64_t)atoll(argv[5]) * 1000000ull;
  uint64_t max_req = argc > 6 ? (uint64_t)atoll(argv[6]) : 0;
  uint64_t every = argc > 7 ? (uint64_t)atoll(argv[7]) : 0;
  if (nconn < 1) {
    fprintf(stderr, "loadgen: CONNS \"%s\" must be at least 1\n", argv[3]);
    return 2;
  }
  const char *kind = getenv("LOADGEN_REQUEST");
  int prout = kind != NULL && strcmp(kind, "prout-ro") == 0;
  if (kind != NULL && !prout && strcmp(kind, "prin") != 0) {
    fprintf(stderr, "loadgen: LOADGEN_REQUEST \"%s\" must be prin or prout-ro\n", kind);
    return 2;
  }
  int devfd = open("/dev/null", (prout ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (devfd < 0) die("/dev/null");
  uint8_t cdb[CDB_LEN + PROUT_LEN] = {0};
  size_t cdb_len = CDB_LEN;
  if (prout) {
    /* PERSISTENT RESERVE OUT, REGISTER, key 0 -> 0x1234, parameter list 24 bytes */
    cdb[0] = 0x5f;
    cdb[8] = PROUT_LEN;
    cdb[CDB_LEN + 15] = 0x34;
    cdb[CDB_LEN + 14] = 0x12;
    cdb_len += PROUT_LEN;
  } else {
    /* PERSISTENT RESERVE IN, READ KEYS, allocation length 8192 (as QEMU pads it) */
    cdb[0] = 0x5e;
    cdb[7] = MAX_DATA >> 8;
    cdb[8] = MAX_DATA & 0xff;
  }

  struct conn *cs = calloc((size_t)nconn, sizeof *cs);
  if (!cs) die("calloc");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < nconn; i++) {
    cs[i].fd = unix_connect(path);
    uint8_t feat[4], zero[4] = {0};
    read_full(cs[i].fd, feat, 4);
    write_full(cs[i].fd, zero, 4);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
  }

  size_t cap = max_req ? (size_t)max_req + (size_t)nconn : (size_t)1 << 20;
  if (cap > ((size_t)1 << 24)) cap = (size_t)1 << 24; /* samples beyond this are not kept */
  uint32_t *lat = malloc(cap * sizeof *lat);
  if (!lat) die("malloc");
  size_t nlat = 0;
  uint64_t done = 0, errors = 0, measured = 0;
  uint64_t status_count[256] = {0};
  uint64_t t_start = now_ns();
  uint64_t t_measure = t_start + warm_ns, t_end = t_measure + dur_ns;
  if (max_req) t_measure = t_start; /* a count run measures everything */
  int live = nconn;
  for (int i = 0; i < nconn; i++) {
    cs[i].sent_at = now_ns();
    cs[i].have = 0;
    cs[i].need = HDR_LEN;
    if (send_cdb(cs[i].fd, cdb, cdb_len, devfd) < 0) die("sendmsg");
  }
  struct epoll_event evs[256];
  int stopping = 0;
  uint64_t t_last = t_start;
  while (live > 0) {
    int n = epoll_wait(ep, evs, 256, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
      struct conn *c = &cs[evs[k].data.u32];
      ssize_t r = recv(c->fd, c->buf + c->have, c->need - c->have, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        live--;
        continue;
      }
      c->have += (uint32_t)r;
      if (c->have == HDR_LEN && c->need == HDR_LEN) {
        uint32_t sz = (uint32_t)c->buf[4] << 24 | (uint32_t)c->buf[5] << 16 |
                      (uint32_t)c->buf[6] << 8 | c->buf[7];
        if (sz > MAX_DATA) {
          fprintf(stderr, "loadgen: reply sz %u exceeds %u\n", sz, MAX_DATA);
          return 3;
        }
        c->need = HDR_LEN + sz;
      }
      if (c->have < c->need) continue;
      uint64_t t = now_ns();
      t_last = t;
      done++;
      status_count[c->buf[3]]++;
      if (c->sent_at >= t_measure && (max_req || t <= t_end)) {
        measured++;
        if (nlat < cap) lat[nlat++] = (uint32_t)((t - c->sent_at) > 0xffffffffull
                                                     ? 0xffffffffull : (t - c->sent_at));
      }
      if (every && done % every == 0) {
        printf("progress %llu\n", (unsigned long long)done);
        fflush(stdout);
      }
      if ((max_req && done >= max_req) || t > t_end) {
        stopping = 1;
      }
      if (stopping) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        live--;
        continue;
      }
      c->have = 0;
      c->need = HDR_LEN;
      c->sent_at = now_ns();
      if (send_cdb(c->fd, cdb, cdb_len, devfd) < 0) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        live--;
      }
    }
  }
  double secs = max_req ? (double)(t_last - t_start) / 1e9 : (double)dur_ns / 1e9;
  qsort(lat, nlat, sizeof *lat, cmp_u32);
  double p50 = nlat ? lat[(size_t)((double)(nlat - 1) * 0.50)] / 1000.0 : 0;
  double p99 = nlat ? lat[(size_t)((double)(nlat - 1) * 0.99)] / 1000.0 : 0;
  printf("{\"requests\":%llu,\"seconds\":%.6f,\"rps\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
         "\"errors\":%llu,\"status\":{",
         (unsigned long long)measured, secs, secs > 0 ? (double)measured / secs : 0, p50, p99,
         (unsigned long long)errors);
  int first = 1;
  for (int s = 0; s < 256; s++) {
    if (!status_count[s]) continue;
    printf("%s\"%d\":%llu", first ? "" : ",", s, (unsigned long long)status_count[s]);
    first = 0;
  }
  printf("}}\n");
  return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ floor server */

struct sconn {
  int fd;
  uint32_t have;
  uint8_t cdb[CDB_LEN];
};

static void sdrop(int ep, struct sconn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

static int do_serve(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: loadgen serve SOCK\n");
    return 2;
  }
  const char *path = argv[2];
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (ls < 0) die("socket");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  unlink(path);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die(path);
  if (listen(ls, 1024) < 0) die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  /* CHECK CONDITION, sz 0, fixed sense ILLEGAL REQUEST / 20 00 */
  uint8_t reply[HDR_LEN] = {0, 0, 0, 2};
  reply[8] = 0x70;
  reply[10] = 0x05;
  reply[15] = 10;
  reply[20] = 0x20;
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int k = 0; k < n; k++) {
      struct sconn *c = evs[k].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
          uint8_t zero[4] = {0};
          if (send(fd, zero, 4, MSG_NOSIGNAL) != 4) {
            close(fd);
            continue;
          }
          c = calloc(1, sizeof *c);
          c->fd = fd;
          c->have = 0;
          struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
          /* the client's feature word is read as the first 4 "CDB" bytes below */
          c->have = (uint32_t)-4;
        }
        continue;
      }
      uint8_t tmp[CDB_LEN];
      char control[CMSG_SPACE(4 * sizeof(int))];
      int want = (int32_t)c->have < 0 ? -(int32_t)c->have : CDB_LEN - (int)c->have;
      struct iovec iov = {.iov_base = tmp, .iov_len = (size_t)want};
      struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
      ssize_t r = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        sdrop(ep, c);
        continue;
      }
      for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
          int nf = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
          for (int i = 0; i < nf; i++) {
            int f;
            memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof f);
            close(f);
          }
        }
      }
      c->have += (uint32_t)r;
      if (c->have != CDB_LEN) continue;
      c->have = 0;
      if (send(c->fd, reply, HDR_LEN, MSG_NOSIGNAL) != HDR_LEN) sdrop(ep, c);
    }
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "load") == 0) return do_load(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "serve") == 0) return do_serve(argc, argv);
  fprintf(stderr, "usage: loadgen load|serve ...\n");
  return 2;
}
